import VPipeCore

/// How a session trains: schedule, micro-batches, optimizer, and testing knobs.
public struct TrainingOptions: Sendable, Equatable {
    /// The optimizer as the host gave it; 0 for Adam's beta1, beta2 or epsilon means its
    /// default (0.9, 0.999, 1e-8). Ranges: `check()`.
    public enum OptimizerChoice: Sendable, Equatable {
        case sgd(learningRate: Float, momentum: Float)
        case adam(learningRate: Float, beta1: Float, beta2: Float, epsilon: Float)
    }

    /// An injected failure, for testing error propagation: `stage` fails in the forward of
    /// `microBatch` during iteration `iteration` (1-based).
    public struct Failure: Sendable, Equatable {
        public var iteration: Int, stage: Int, microBatch: Int
        public init(iteration: Int, stage: Int, microBatch: Int) {
            self.iteration = iteration
            self.stage = stage
            self.microBatch = microBatch
        }
    }

    /// How stages exchange activations and gradients: threads of one process, or one MPI
    /// rank per stage (`mpirun -np <stages>`; every rank opens the session with the same config).
    public enum TransportKind: Sendable, Equatable {
        case inProcess
        case mpi
    }

    public var schedule: Schedule
    public var microBatches: Int
    public var seed: UInt64
    public var optimizer: OptimizerChoice
    public var throttleCopies: Bool
    /// Steps profiled on one stage when the session has no plan; 0 means 2, at most 1000.
    public var profileIterations: Int
    public var failure: Failure?
    /// Online re-planning every this many iterations (0: off).
    public var replanEvery: Int = 0
    /// Migrate only when the new plan's predicted T_iter is lower by more than this fraction
    /// (0 means 0.05).
    public var replanThreshold: Double = 0.05
    /// An injected slowdown: `stage`'s device runs `factor` times slower from `fromIteration` on
    /// (factor in [0, 1000]; 1 or less: no slowdown).
    public var slowdown: Slowdown?

    public struct Slowdown: Sendable, Equatable {
        public var stage: Int, factor: Double, fromIteration: Int
        public init(stage: Int, factor: Double, fromIteration: Int) {
            self.stage = stage
            self.factor = factor
            self.fromIteration = fromIteration
        }
    }
    /// Every stage's compute calls take this many times their time on the core the stage's
    /// thread gets (≥ 1; 1: off): stands for devices slower than the machine's cores. Running
    /// p stage threads at full speed on c < p cores is a shared-core machine, which cost model
    /// v1 (independent devices of speed σ) cannot represent; stretched by p / c, the stages
    /// are p devices of speed c / p that do not compete for cores (bench-paper's 4 devices on
    /// 2 cores). Not on the wire: a Swift-side benchmarking knob.
    public var deviceSlowdown: Double = 1
    public var transport: TransportKind = .inProcess
    /// MPI transport: seconds a rank waits on a silent peer before pinging it; a peer that
    /// does not answer within a further max(0.5, T/4) s is reported lost. 0 means 30.
    public var failureTimeoutSeconds: Double = 30
    /// Test hook: the stage whose thread fails to start (as if pthread_create refused), so
    /// that the session's refusal to open, naming the stage, can be tested.
    public var threadStartFailure: Int?
    /// The device backend every stage runs on (`DeviceBackends.names`); by default
    /// `VPIPE_DEVICE` or `cpu`.
    public var deviceBackend: String = DeviceBackends.selected
    /// The schedule to run as schedule IR text (`PipelineSchedule(parsing:)`'s form), instead
    /// of generating it from `schedule`; nil: generate. See `ScheduleSource`.
    public var scheduleText: String?

    public init(schedule: Schedule = .oneFOneB, microBatches: Int, seed: UInt64 = 0,
                optimizer: OptimizerChoice = .sgd(learningRate: 0.01, momentum: 0), throttleCopies: Bool = false,
                profileIterations: Int = 2, failure: Failure? = nil) {
        self.schedule = schedule
        self.microBatches = microBatches
        self.seed = seed
        self.optimizer = optimizer
        self.throttleCopies = throttleCopies
        self.profileIterations = profileIterations
        self.failure = failure
    }

    /// The longest re-planning period accepted (`training.replan_every`).
    public static let maxReplanEvery = 1_000_000

    /// The ranges of the options, checked once at session open, naming the proto field
    /// (the wire layer only converts).
    func check() throws {
        try Validation.validate(microBatches: microBatches, field: "training.micro_batches")
        try checkOptimizer()
        let t = failureTimeoutSeconds
        guard t.isFinite && t >= 0 && t <= 86400 else {
            throw VPipeError.invalidField(field: "training.failure_timeout_seconds", message: "must be in [0, 86400] (0 means 30), got \(t)")
        }
        guard deviceSlowdown.isFinite && deviceSlowdown >= 1 && deviceSlowdown <= 1000 else {
            throw VPipeError.invalidField(field: "training.device_slowdown", message: "must be in [1, 1000], got \(deviceSlowdown)")
        }
        // The window keeps one iteration time per step until the next decision: a period
        // beyond a million steps would grow it without bound (and never re-plan in practice).
        guard replanEvery >= 0 && replanEvery <= Self.maxReplanEvery else {
            throw VPipeError.invalidField(field: "training.replan_every", message: "must be in [0, \(Self.maxReplanEvery)] (0: off), got \(replanEvery)")
        }
        guard replanThreshold.isFinite && replanThreshold >= 0 && replanThreshold < 1 else {
            throw VPipeError.invalidField(field: "training.replan_threshold", message: "must be in [0, 1) (0 means 0.05), got \(replanThreshold)")
        }
        if let factor = slowdown?.factor, !(factor.isFinite && factor >= 0 && factor <= 1000) {
            throw VPipeError.invalidField(field: "training.slowdown_factor", message: "must be between 0 and 1000, got \(factor)")
        }
    }

    private func checkOptimizer() throws {
        func rate(_ v: Float, _ field: String) throws {
            guard v.isFinite && v > 0 && v < 1e6 else { throw VPipeError.invalidField(field: field, message: "must be finite and > 0, got \(v)") }
        }
        func unit(_ v: Float, _ field: String) throws {
            guard v == 0 || (v.isFinite && v > 0 && v < 1) else {
                throw VPipeError.invalidField(field: field, message: "must be in (0, 1) (0 means the default), got \(v)")
            }
        }
        switch optimizer {
        case let .sgd(lr, momentum):
            try rate(lr, "training.sgd.lr")
            guard momentum.isFinite && momentum >= 0 && momentum < 1 else {
                throw VPipeError.invalidField(field: "training.sgd.momentum", message: "must be in [0, 1), got \(momentum)")
            }
        case let .adam(lr, beta1, beta2, eps):
            try rate(lr, "training.adam.lr")
            try unit(beta1, "training.adam.beta1")
            try unit(beta2, "training.adam.beta2")
            guard eps.isFinite && eps >= 0 else {
                throw VPipeError.invalidField(field: "training.adam.eps", message: "must be > 0 (0 means 1e-8), got \(eps)")
            }
        }
    }

    /// The failure timeout in seconds, its default applied.
    var effectiveFailureTimeout: Double { failureTimeoutSeconds == 0 ? 30 : failureTimeoutSeconds }

    /// The re-planning threshold, its default applied.
    var effectiveReplanThreshold: Double { replanThreshold == 0 ? 0.05 : replanThreshold }

    /// Profiling steps, default and cap applied.
    var effectiveProfileIterations: Int { profileIterations <= 0 ? 2 : min(profileIterations, 1000) }

    /// The slowdown, if it slows anything down.
    var effectiveSlowdown: Slowdown? { slowdown.flatMap { $0.factor > 1 ? $0 : nil } }

    func makeOptimizer() -> Optimizer {
        switch optimizer {
        case let .sgd(lr, momentum): return SGD(learningRate: lr, momentum: momentum)
        case let .adam(lr, b1, b2, eps):
            return Adam(learningRate: lr, beta1: b1 == 0 ? 0.9 : b1, beta2: b2 == 0 ? 0.999 : b2, epsilon: eps == 0 ? 1e-8 : eps)
        }
    }
}
