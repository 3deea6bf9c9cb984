import VPipeCore

/// The layers of a model placed on stages, and one training iteration over them.
///
/// An iteration: every stage runs its action list of the schedule IR on its own thread
/// (activations and gradients through the `Transport`, swaps on the stage's copy engine);
/// after all stages finish without error, each stage applies the optimizer to its layers.
/// If any stage fails, the transport is aborted so every other stage stops waiting, the
/// step reports the first error, and no weight changes: the optimizer runs only after a
/// clean flush.
///
/// A pipeline may run a subset of its stages (`localStages`): with the MPI transport each
/// process runs only its rank's stage and builds only that stage's layers; the transport
/// then agrees across processes that every stage finished before the optimizer runs, and
/// hands every rank the last stage's loss.
final class Pipeline: @unchecked Sendable {
    let model: ModelSpec
    let cluster: ClusterSpec
    let options: TrainingOptions
    /// The model's layers by index; nil for the layers of stages that run in another process.
    /// (A migration across ranks builds a layer on its new rank and drops it on the old one.)
    private(set) var layers: [Layer?]
    let optimizer: Optimizer
    var stages: [Stage]
    /// The stages this process runs (all of them in-process).
    let localStages: [Int]
    var optimizerState: [[[Tensor]]]
    let transport: Transport
    /// One thread per local stage, for the life of the pipeline.
    private var threads: StageThreads?
    private(set) var iteration = 0
    /// Successful optimizer steps (Adam's bias correction counts these, not attempts).
    private(set) var optimizerSteps = 0
    private var scheduleCache: PipelineSchedule?

    /// Places the model on stages per `layout`. `existing` layers and optimizer state (from a
    /// profiling run or a previous placement) are moved into the stages' arenas instead of
    /// being built anew, so training continues where it was.
    init(model: ModelSpec, cluster: ClusterSpec, options: TrainingOptions, layout: PlanLayout,
         existing: (layers: [Layer?], state: [[[Tensor]]], optimizerSteps: Int)? = nil,
         transport: Transport = InProcessTransport(), localStages: [Int]? = nil) throws {
        self.model = model
        self.cluster = cluster
        self.options = options
        self.transport = transport
        optimizer = options.makeOptimizer()
        var stages: [Stage] = []
        for (i, range) in layout.ranges.enumerated() {
            let d = cluster.devices[i]
            // The arena is the whole device: reserved_bytes (R_i) is the part the runtime's own
            // workspace (temporaries of a layer call) uses, which the planner sets aside.
            // Capped at the host's physical memory: these virtual devices live in it.
            let device: Device
            do {
                device = try DeviceBackends.make(options.deviceBackend, for: DeviceBackends.Request(
                    name: "stage \(i) (device \"\(d.name)\")", capacity: d.memoryBytes,
                    bandwidth: options.throttleCopies ? d.hostBandwidth : nil))
            } catch {
                for s in stages { s.device.shutdown() }
                throw error
            }
            stages.append(Stage(index: i, device: device, layers: range, policies: Array(layout.policies[range])))
        }
        self.stages = stages
        if stages.count > 1 { BLASThreads.set(1) }
        let local = localStages ?? Array(stages.indices)
        self.localStages = local
        var layers: [Layer?] = []
        var state: [[[Tensor]]] = []
        var started: StageThreads?
        do {
            started = try StageThreads(stages: local, failingStart: options.threadStartFailure)
            for (l, spec) in model.layers.enumerated() {
                guard let kind = spec.kind else {
                    throw VPipeError.invalidField(field: "model.layers[\(l)]", message: "has no kind (linear, activation, ...): a session can only train layers it can build")
                }
                guard let stage = stages.first(where: { $0.layers.contains(l) }) else {
                    throw VPipeError.invalidField(field: "plan.stages", message: "no stage owns layer \(l)")
                }
                guard local.contains(stage.index) else {
                    layers.append(nil)
                    state.append([])
                    continue
                }
                if let existing, l < existing.layers.count, let layer = existing.layers[l] {
                    try layer.place(in: stage.arena)
                    layers.append(layer)
                    state.append(try existing.state[l].map { try $0.map { try $0.copy(to: stage.arena, for: "stage \(stage.index) layer \(l) optimizer state") } })
                } else {
                    let layer = try makeLayer(kind: kind, name: spec.name, index: l, seed: options.seed, in: stage.arena)
                    layers.append(layer)
                    state.append(try optimizer.makeState(for: layer.parameters, in: stage.arena, label: "stage \(stage.index) layer \(l) optimizer state"))
                }
            }
        } catch {
            started?.shutdown()
            for s in stages { s.device.shutdown() }
            throw error
        }
        threads = started
        self.layers = layers
        optimizerState = state
        optimizerSteps = existing?.optimizerSteps ?? 0
    }

    deinit { threads?.shutdown() }

    func shutdown() {
        threads?.shutdown()
        for s in stages { s.device.shutdown() }
        (transport as? DistributedTransport)?.close()
    }

    var layout: PlanLayout { PlanLayout(ranges: stages.map(\.layers), policies: stages.flatMap(\.policies)) }

    func schedule() throws -> PipelineSchedule {
        if let scheduleCache { return scheduleCache }
        let s = try ScheduleSource.schedule(for: options, stagePolicies: stages.map(\.policies))
        scheduleCache = s
        return s
    }

    struct StepResult {
        var loss: Float
        var seconds: Double
        var measurements: [StageMeasurement]
        var peaks: [Int]
        var epoch: Double
        var migration: MigrationOutcome?
        /// The stages' layer ranges during the iteration (before any migration it ended with).
        var ranges: [Range<Int>]
    }

    /// What a live migration did (or why it did not happen).
    public struct MigrationOutcome: Sendable {
        public var layersMoved: [Int]
        public var bytesMoved: Int
        /// Seconds between the end of the iteration's compute and the new placement being in
        /// place, beyond the optimizer step itself: waiting for the pre-copy, handing over the
        /// gradients, switching ownership.
        public var stallSeconds: Double
        /// nil when applied; the reason when the old plan stayed.
        public var failure: String?
    }

    /// The weights and optimizer state of a moving layer, copied to its new stage during
    /// the iteration (they are read-only until the optimizer step).
    final class PreCopy: @unchecked Sendable {
        let monitor = Monitor()
        var values: [Tensor]?
        var state: [[Tensor]]?
        var failure: Error?
        var done = false

        func wait() throws -> (values: [Tensor], state: [[Tensor]]) {
            try monitor.locked {
                while !done { monitor.wait() }
                if let failure { throw failure }
                return (values ?? [], state ?? [])
            }
        }

        func finish(_ v: [Tensor]?, _ s: [[Tensor]]?, _ e: Error?) {
            monitor.locked {
                values = v
                state = s
                failure = e
                done = true
                monitor.broadcast()
            }
        }
    }

    /// One iteration on a mini-batch of `rows` rows: `inputs` holds rows × features values,
    /// `targets` one class per row.
    func step(inputs: UnsafeBufferPointer<Float>, features: Int, targets: UnsafeBufferPointer<Int32>,
              migrateTo target: PlanLayout? = nil, calibrate: Bool = false) throws -> StepResult {
        let m = options.microBatches
        guard features > 0, inputs.count % features == 0 else {
            throw VPipeError.invalidField(field: "inputs", message: "\(inputs.count) values is not a whole number of rows of \(features) features")
        }
        let rows = inputs.count / features
        guard rows > 0, rows % m == 0 else {
            throw VPipeError.invalidField(field: "inputs", message: "\(rows) rows do not split into \(m) equal micro-batches")
        }
        guard targets.count == rows else {
            throw VPipeError.invalidField(field: "targets", message: "expected one target per row (\(rows)), got \(targets.count)")
        }
        let per = rows / m
        var mbInputs: [[Float]] = []
        var mbTargets: [[Int32]] = []
        for k in 0..<m {
            mbInputs.append(Array(inputs[(k * per * features)..<((k + 1) * per * features)]))
            mbTargets.append(Array(targets[(k * per)..<((k + 1) * per)]))
        }
        let schedule = try schedule()
        iteration += 1
        let epoch = monotonicSeconds()
        let input = IterationInput(
            microBatches: m, inputs: mbInputs, inputShape: features == 1 ? [per, 1] : [per, features], targets: mbTargets,
            lossScale: 1 / Float(rows), iteration: iteration, failure: options.failure, epoch: epoch,
            slowdown: stages.indices.map { i in
                if let s = options.slowdown, s.stage == i, iteration >= s.fromIteration { return s.factor }
                return 1
            }, calibrate: calibrate)
        let distributed = transport as? DistributedTransport
        if let poisoned = distributed?.poisoned {
            throw RuntimeError.failed("the distributed session stopped at an earlier failure and cannot step again: \(poisoned)")
        }
        transport.reset()
        for s in stages { s.arena.resetPeak() }
        let ranges = stages.map(\.layers)
        // Live migration, phase 1: pre-copy the moving layers' weights and optimizer state
        // on the destination stages' copy engines while the iteration computes.
        var moves: [(layer: Int, from: Int, to: Int, copy: PreCopy)] = []
        let async = options.schedule == .pipedreamAsync
        func preCopy(_ target: PlanLayout) {
            for (to, range) in target.ranges.enumerated() {
                for l in range {
                    guard let from = stages.firstIndex(where: { $0.layers.contains(l) }), from != to, let layer = layers[l] else { continue }
                    let copy = PreCopy()
                    let state = optimizerState[l], dest = stages[to]
                    dest.device.onCopyQueue {
                        do {
                            let v = try layer.parameters.map { try $0.copy(to: dest.arena, for: "stage \(to) layer \(l) migrated weights") }
                            let s = try state.map { try $0.map { try $0.copy(to: dest.arena, for: "stage \(to) layer \(l) migrated optimizer state") } }
                            copy.finish(v, s, nil)
                        } catch { copy.finish(nil, nil, error) }
                    }
                    moves.append((l, from, to, copy))
                }
            }
        }
        // PIPEDREAM_ASYNC updates weights during the iteration, so a pre-copy taken then would
        // be stale: it drains first (the iteration ends with no micro-batch in flight and no
        // stashed version), and copies at the boundary. The flushing schedules pre-copy now.
        let distributed0 = transport as? DistributedTransport
        if let target, !async, distributed0 == nil { preCopy(target) }
        // Across ranks: the receivers build the moving layers and post their receives, the
        // senders post non-blocking sends of weights and optimizer state (the pre-copy).
        var remote: RemoteMigration?
        if let target, let distributed0 {
            do {
                remote = try beginRemoteMigration(target, distributed0, preCopy: !async)
            } catch {
                transport.abort(error)
            }
        }
        let p = stages.count
        let local = localStages
        final class Results: @unchecked Sendable {
            var measurements: [StageMeasurement?]
            init(_ p: Int) { measurements = Array(repeating: nil, count: p) }
        }
        let results = Results(p)
        let monitor = Monitor()
        threads?.run { [self] k in
            let i = local[k]
            var worker = StageWorker(stage: stages[i], stageCount: p, layers: layers, transport: transport, actions: schedule.stages[i])
            if options.schedule == .pipedreamAsync {
                worker.asyncUpdate = { [self] l, version in
                    guard let layer = layers[l] else { return }
                    optimizer.step(parameters: layer.parameters, gradients: layer.gradients, state: optimizerState[l], iteration: version)
                    for g in layer.gradients { g.zero() }
                }
            }
            do {
                try distributed?.prepare(stage: i, actions: schedule.stages[i], space: stages[i].arena)
                let r = try worker.run(input)
                monitor.locked { results.measurements[i] = r }
            } catch {
                transport.abort(error)
            }
        }
        let measurements = results.measurements.map { $0 ?? StageMeasurement() }
        var loss: Float = 0
        if let lastStage = measurements.last {
            for k in 0..<m { loss += lastStage.losses[k] ?? .nan }
        }
        if let distributed {
            // Every rank learns whether every stage finished, and the last stage's loss.
            do {
                loss = try distributed.agree(localError: transport.abortError, loss: local.contains(p - 1) ? loss : nil, lossRank: p - 1,
                                             migration: target.map(Self.fingerprint) ?? 0)
            } catch {
                for case let layer? in layers { for g in layer.gradients { g.zero() } }
                throw error
            }
        } else if let error = transport.abortError {
            for m in moves { _ = try? m.copy.wait() }  // let the pre-copies finish, then drop them
            for case let layer? in layers { for g in layer.gradients { g.zero() } }
            throw error
        }
        // Live migration, phase 2 (at the flush): the pre-copies must be complete; the
        // accumulated gradients are handed over instead of re-sending weights.
        let flush = monotonicSeconds()
        if let target, async, distributed == nil { preCopy(target) }
        var migration: MigrationOutcome?
        var arrived: [Int: (values: [Tensor], gradients: [Tensor], state: [[Tensor]])] = [:]
        var adopted: [Int: (layer: Layer, state: [[Tensor]])] = [:]
        var remoteApplied = false
        if let remote, let distributed {
            // Phase 2 across ranks: the senders hand over the accumulated gradients; every
            // transfer completes; then every rank agrees that every receiver could place its
            // layers (else all keep the old plan).
            do {
                if async { try remote.post(self, distributed, gradients: false) }
                MPITransport.testHookAtMigrationFlush?()
                try remote.post(self, distributed, gradients: true)
                let bytes = try distributed.completeMigration()
                let ok = try distributed.agreeMigration(ok: remote.failure == nil)
                if ok {
                    remoteApplied = true
                    adopted = remote.incoming
                    migration = MigrationOutcome(layersMoved: remote.moves.map(\.layer), bytesMoved: bytes,
                                                 stallSeconds: 0, failure: nil)
                } else {
                    migration = MigrationOutcome(layersMoved: [], bytesMoved: 0, stallSeconds: monotonicSeconds() - flush,
                                                 failure: "migration abandoned on every rank, training continues on the old plan: " +
                                                    (remote.failure ?? "a receiving rank could not place its layers"))
                }
            } catch {
                for case let layer? in layers { for g in layer.gradients { g.zero() } }
                throw error
            }
        } else if target != nil {
            var bytes = 0
            do {
                for m in moves {
                    let (values, state) = try m.copy.wait()
                    let grads = try (layers[m.layer]?.gradients ?? []).map {
                        try $0.copy(to: stages[m.to].arena, for: "stage \(m.to) layer \(m.layer) handed-over gradients")
                    }
                    bytes += values.reduce(0) { $0 + $1.bytes } + grads.reduce(0) { $0 + $1.bytes } + state.joined().reduce(0) { $0 + $1.bytes }
                    arrived[m.layer] = (values, grads, state)
                }
                migration = MigrationOutcome(layersMoved: moves.map(\.layer), bytesMoved: bytes, stallSeconds: 0, failure: nil)
            } catch {
                arrived = [:]  // the old placement stays; the copies are dropped
                migration = MigrationOutcome(layersMoved: [], bytesMoved: 0, stallSeconds: monotonicSeconds() - flush,
                                             failure: "migration abandoned, training continues on the old plan: \(error)")
            }
        }
        let handover = monotonicSeconds() - flush
        // A clean flush: every stage applies the optimizer to the layers it owns from now on,
        // in parallel; a moved layer's receiver steps its copy, which therefore equals what
        // the sender would have produced.
        if !async { optimizerSteps += 1 }
        let step = optimizerSteps
        let owners: [Range<Int>] = arrived.isEmpty && !remoteApplied ? stages.map(\.layers) : (target?.ranges ?? stages.map(\.layers))
        if !async { threads?.run { [self] k in
            for l in owners[local[k]] {
                if let a = adopted[l] {
                    optimizer.step(parameters: a.layer.parameters, gradients: a.layer.gradients, state: a.state, iteration: step)
                    for g in a.layer.gradients { g.zero() }
                } else if let a = arrived[l] {
                    optimizer.step(parameters: a.values, gradients: a.gradients, state: a.state, iteration: step)
                    for g in a.gradients { g.zero() }
                } else if let layer = layers[l] {
                    optimizer.step(parameters: layer.parameters, gradients: layer.gradients, state: optimizerState[l], iteration: step)
                    for g in layer.gradients { g.zero() }
                }
            }
        } }
        // Phase 3: switch ownership; the senders' copies are released with their last reference.
        if let target, migration?.failure == nil {
            let switchStart = monotonicSeconds()
            do {
                for (l, a) in arrived.sorted(by: { $0.key < $1.key }) {
                    try layers[l]?.adopt(values: a.values, gradients: a.gradients)
                    optimizerState[l] = a.state
                }
                if let remote, remoteApplied {
                    // The senders drop their copies (released with the last reference).
                    for m in remote.moves where m.from == remote.rank {
                        layers[m.layer] = nil
                        optimizerState[m.layer] = []
                    }
                    for (l, a) in adopted {
                        layers[l] = a.layer
                        optimizerState[l] = a.state
                    }
                }
                for (i, range) in target.ranges.enumerated() {
                    stages[i].layers = range
                    stages[i].policies = Array(target.policies[range])
                }
                scheduleCache = nil
                migration?.stallSeconds = handover + (monotonicSeconds() - switchStart)
            } catch {
                migration?.failure = "internal: switching ownership failed: \(error)"
            }
        }
        return StepResult(loss: loss, seconds: monotonicSeconds() - epoch, measurements: measurements,
                          peaks: stages.map { $0.arena.peakBytes }, epoch: epoch, migration: migration, ranges: ranges)
    }

    // MARK: Live migration across ranks

    /// The layers one rank sends or receives in a migration across ranks.
    final class RemoteMigration {
        let rank: Int
        /// Every moving layer (the same list on every rank), ascending.
        let moves: [(layer: Int, from: Int, to: Int)]
        /// The layers this rank receives: built in its stage's arena, weights and state
        /// overwritten by the transfers.
        var incoming: [Int: (layer: Layer, state: [[Tensor]])] = [:]
        /// Why this rank cannot take its layers (then every rank keeps the old plan).
        var failure: String?
        init(rank: Int, moves: [(layer: Int, from: Int, to: Int)]) { self.rank = rank; self.moves = moves }

        /// Posts this rank's sends and receives of weights + optimizer state, or of gradients,
        /// layer by layer in ascending order (both sides post in the same order).
        func post(_ pipeline: Pipeline, _ t: DistributedTransport, gradients: Bool) throws {
            for m in moves {
                if m.from == rank, let layer = pipeline.layers[m.layer] {
                    try t.migrationSend(gradients ? layer.gradients : layer.parameters + pipeline.optimizerState[m.layer].joined(),
                                        to: m.to, gradients: gradients)
                } else if m.to == rank, let a = incoming[m.layer] {
                    try t.migrationReceive(gradients ? a.layer.gradients : a.layer.parameters + a.state.joined(),
                                           from: m.from, gradients: gradients)
                }
            }
        }
    }

    /// Starts a migration to `target` across ranks: the layers whose stage changes move from
    /// the old stage's rank to the new one's. The receiver builds each with `makeLayer` in its
    /// stage's arena (or, when the arena is full, outside it so that the transfers still match,
    /// and reports the failure at the migration agreement). With `preCopy`, weights and
    /// optimizer state are posted now (they are read-only until the optimizer step).
    private func beginRemoteMigration(_ target: PlanLayout, _ t: DistributedTransport, preCopy: Bool) throws -> RemoteMigration {
        var moves: [(layer: Int, from: Int, to: Int)] = []
        for (to, range) in target.ranges.enumerated() {
            for l in range {
                guard let from = stages.firstIndex(where: { $0.layers.contains(l) }), from != to else { continue }
                moves.append((l, from, to))
            }
        }
        let r = RemoteMigration(rank: t.rank, moves: moves)
        for m in moves where m.to == t.rank {
            guard let kind = model.layers[m.layer].kind else { continue }
            let space = stages[m.to].arena
            do {
                let layer = try makeLayer(kind: kind, name: model.layers[m.layer].name, index: m.layer, seed: options.seed, in: space)
                let state = try optimizer.makeState(for: layer.parameters, in: space, label: "stage \(m.to) layer \(m.layer) migrated optimizer state")
                r.incoming[m.layer] = (layer, state)
            } catch {
                if r.failure == nil { r.failure = "rank \(t.rank) cannot take layer \(m.layer): \(error)" }
                let layer = try makeLayer(kind: kind, name: model.layers[m.layer].name, index: m.layer, seed: options.seed, in: nil)
                r.incoming[m.layer] = (layer, try optimizer.makeState(for: layer.parameters, in: nil, label: "discarded migration"))
            }
        }
        if preCopy { try r.post(self, t, gradients: false) }
        return r
    }

    /// A fingerprint of a migration target, the same in every process (never 0).
    static func fingerprint(_ target: PlanLayout) -> Int32 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ v: Int) { for b in withUnsafeBytes(of: Int64(v).littleEndian, Array.init) { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 } }
        for r in target.ranges { mix(r.lowerBound); mix(r.upperBound) }
        for p in target.policies { mix(p.rawValue) }
        return Int32(truncatingIfNeeded: h & 0x3fff_ffff) | 1
    }
}
