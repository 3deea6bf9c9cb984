import VPipeCore

/// Everything a training session is opened with.
public struct SessionConfig: Sendable {
    public var model: ModelSpec
    public var cluster: ClusterSpec
    /// The plan to run; nil: profile `training.profileIterations` steps on one stage, then plan.
    public var plan: PlanLayout?
    public var training: TrainingOptions
    /// Plans as bytes, for the MPI transport: rank 0 plans and broadcasts the plan (the
    /// wire layer supplies protobuf; the runtime knows no protobuf).
    public var planCodec: PlanCodec?

    public init(model: ModelSpec, cluster: ClusterSpec, plan: PlanLayout?, training: TrainingOptions, planCodec: PlanCodec? = nil) {
        self.model = model
        self.cluster = cluster
        self.plan = plan
        self.training = training
        self.planCodec = planCodec
    }
}

/// Encodes a plan to bytes and decodes the layout back (protobuf vpipe.Plan in practice).
public struct PlanCodec: Sendable {
    public var encode: @Sendable (Plan) -> [UInt8]
    public var decode: @Sendable ([UInt8]) throws -> PlanLayout
    public init(encode: @escaping @Sendable (Plan) -> [UInt8], decode: @escaping @Sendable ([UInt8]) throws -> PlanLayout) {
        self.encode = encode
        self.decode = decode
    }
}

/// Measured numbers of a session, for `vp_session_stats`.
public struct SessionStatistics: Sendable {
    public struct StageStatistics: Sendable {
        public var stage: Int
        public var layers: Range<Int>
        public var peakDeviceBytes: Int
        public var capacityBytes: Int
        public var predictedPeakBytes: Double
        public var computeSeconds: Double
        public var stageSecondsPerMicroBatch: Double
        public var swappedBytes: Int
        public var recomputedLayers: Int
    }

    public var iterations: Int
    public var lastIterationSeconds: Double
    public var meanIterationSeconds: Double
    public var lastLoss: Float
    public var stages: [StageStatistics]
    public var measuredProfiles: [LayerProfile]
    public var plan: Plan?
    public var decisions: [MigrationDecision]
}

/// A training session: a model placed on pipeline stages by a plan, trained step by step.
///
/// Opened without a plan, the first `profileIterations` steps run the whole model on one
/// uncapped stage while the online profiler measures every layer; then VPIPE plans with
/// the measured profiles and the layers (weights and optimizer state) move to their stages.
/// Those first steps are real training steps: the loss trajectory is the same either way.
///
/// Not thread-safe: one host thread drives a session (the stages run on their own threads).
public final class TrainingSession: @unchecked Sendable {
    public let config: SessionConfig
    private var pipeline: Pipeline
    private var profiling: Bool
    private var profileSums: [LayerProfile]
    private var profiledIterations = 0
    /// The largest transient workspace any layer call needed so far (bytes).
    /// Written under `stateLock` (`applyPlan` reads it from another thread).
    public private(set) var workspaceBytes = 0
    /// The same, per stage of the current placement.
    private var stageWorkspace: [Int] = []
    private var lastResult: Pipeline.StepResult?
    private var iterations = 0
    private var totalSeconds = 0.0
    private var lastLoss: Float = .nan
    public private(set) var plan: Plan?
    /// Guards what another thread may touch while a step runs: the pending migration, the
    /// decisions, and the measured numbers `applyPlan` checks a plan against (profiles,
    /// workspace, window, iterations, last result, running layout). The step thread writes
    /// them only under the lock; it may read them without.
    private let stateLock = Monitor()
    /// The next migration to start, and the ticket of its decision in `log`.
    private var pending: (layout: PlanLayout, decision: Int)?
    private var log = DecisionLog()
    /// Re-planning window: per-layer times normalised to speed 1.0, and iteration times.
    private var windowSums: [(fwd: Double, bwd: Double)] = []
    private var windowIterations = 0
    private var windowIterationSeconds: [Double] = []
    /// Speed of each stage's device relative to the fastest seen (1.0 = nominal).
    private var stageSpeed: [Double] = []
    private var calibrationBaseline = Double.infinity
    /// The running layout, as of the last step boundary (read by `applyPlan` from other threads).
    private var layoutSnapshot = PlanLayout(ranges: [], policies: [])
    /// Parameter bytes per layer (fixed at construction).
    private var parameterBytes: [Int] = []
    /// The optimizer's state bytes per parameter byte (κ), fixed by the options.
    private let stateBytesPerParamByte: Double

    public init(_ config: SessionConfig) throws {
        try Validation.validate(config.model)
        try Validation.validate(config.cluster)
        try Validation.validate(microBatches: config.training.microBatches, field: "training.micro_batches")
        for (l, layer) in config.model.layers.enumerated() where layer.kind == nil {
            throw VPipeError.invalidField(field: "model.layers[\(l)]", message: "has no kind (linear, activation, ...): a session can only train layers it can build")
        }
        if let kind = config.model.layers.last?.kind, kind != .softmaxCrossEntropy {
            throw VPipeError.invalidField(field: "model.layers[\(config.model.layers.count - 1)]", message: "the last layer must be softmax_cross_entropy (the loss)")
        }
        try Self.checkWidths(config.model)
        let stageCount = config.plan?.ranges.count ?? config.cluster.devices.count
        if let f = config.training.failure, f.stage >= stageCount || f.microBatch >= config.training.microBatches {
            throw VPipeError.invalidField(field: "training.fail_stage", message: "stage \(f.stage), micro-batch \(f.microBatch) does not exist (\(stageCount) stages, \(config.training.microBatches) micro-batches)")
        }
        if let s = config.training.slowdown, s.stage >= stageCount {
            throw VPipeError.invalidField(field: "training.slowdown_stage", message: "stage \(s.stage) does not exist (\(stageCount) stages)")
        }
        if config.training.scheduleText != nil && config.plan == nil {
            throw VPipeError.invalidField(field: "plan", message: "missing: training.schedule_text is written for a placement, so the session needs the plan it was written for")
        }
        self.config = config
        stateBytesPerParamByte = config.training.makeOptimizer().stateBytesPerParamByte
        profileSums = Array(repeating: LayerProfile(fwdSeconds: 0, bwdSeconds: 0, stashBytes: 0, outputBytes: 0, paramBytes: 0),
                            count: config.model.layers.count)
        if config.training.transport == .mpi {
            let (p, pipe) = try Self.openDistributed(config)
            plan = p
            pipeline = pipe
            profiling = false
        } else if let layout = config.plan {
            let cm = CostModel(model: config.model, cluster: config.cluster, schedule: config.training.schedule,
                               microBatches: config.training.microBatches)
            plan = try cm.evaluate(layout)
            pipeline = try Pipeline(model: config.model, cluster: config.cluster, options: config.training, layout: layout)
            profiling = false
        } else {
            // One uncapped stage on device 0's description: measuring, not enforcing.
            var cluster = config.cluster
            cluster.devices = [config.cluster.devices[0]]
            // The whole cluster's memory (the model will be spread over it), within the host's.
            cluster.devices[0].memoryBytes = min(config.cluster.devices.reduce(0) { $0 + $1.memoryBytes }, BufferPool.physicalBytes)
            cluster.links = []
            let L = config.model.layers.count
            pipeline = try Pipeline(model: config.model, cluster: cluster, options: config.training,
                                    layout: PlanLayout(ranges: [0..<L], policies: Array(repeating: .keep, count: L)))
            profiling = true
        }
        parameterBytes = pipeline.layers.enumerated().map { l, layer in
            layer?.parameters.reduce(0) { $0 + $1.bytes } ?? config.model.layers[l].profile.paramBytes
        }
        layoutSnapshot = pipeline.layout
        do {
            _ = try pipeline.schedule()  // the host's schedule text is checked at open
        } catch {
            pipeline.shutdown()
            throw error
        }
    }

    deinit { pipeline.shutdown() }

    /// Each layer's input width must be the previous layer's output width, and the loss comes
    /// last only: caught at open, naming the layer, rather than at the first step.
    static func checkWidths(_ model: ModelSpec) throws {
        var width: Int?
        for (l, layer) in model.layers.enumerated() {
            guard let kind = layer.kind else { continue }
            let (input, output): (Int?, Int?)
            switch kind {
            case let .linear(i, o): (input, output) = (i, o)
            case .activation: (input, output) = (width, width)
            case let .layerNorm(f): (input, output) = (f, f)
            case let .embedding(_, f, _): (input, output) = (l == 0 ? nil : 1, f)
            case let .transformerBlock(f, _, _, _): (input, output) = (f, f)
            case let .choiceBlock(f, _, _): (input, output) = (f, f)
            case let .external(_, i, o): (input, output) = (i, o)
            case .softmaxCrossEntropy:
                if l != model.layers.count - 1 {
                    throw VPipeError.invalidField(field: "model.layers[\(l)]", message: "softmax_cross_entropy must be the last layer (it is layer \(l) of \(model.layers.count))")
                }
                (input, output) = (width, nil)
            }
            if let input, let width, input != width {
                throw VPipeError.invalidField(field: "model.layers[\(l)]", message: "expects \(input) input features but the previous layer gives \(width)")
            }
            width = output
        }
    }

    /// This process's rank in a distributed (MPI) session; nil in-process.
    public var rank: Int? { (pipeline.transport as? DistributedTransport)?.rank }

    /// The MPI transport: one rank per stage. Rank 0 plans (unless the config carries a
    /// plan) and broadcasts the plan as bytes; every rank builds only its own stage.
    private static func openDistributed(_ config: SessionConfig) throws -> (Plan, Pipeline) {
        let t = config.training.failureTimeoutSeconds
        guard t.isFinite && t > 0 && t <= 86400 else {
            throw VPipeError.invalidField(field: "training.failure_timeout_seconds", message: "must be in (0, 86400], got \(t)")
        }
        let comm = try MPIRuntime.duplicateWorld()
        let transport = try MPITransport(comm: comm, timeout: t)
        let cm = CostModel(model: config.model, cluster: config.cluster, schedule: config.training.schedule,
                           microBatches: config.training.microBatches)
        var layout: PlanLayout
        if let given = config.plan {
            layout = given
        } else {
            // No profiling phase across processes: rank 0 plans with the model's profiles.
            guard let codec = config.planCodec else {
                throw VPipeError.invalidField(field: "plan", message: "missing: an MPI session without a plan needs a plan codec (open it through the wire layer)")
            }
            var bytes: [UInt8]?
            var error: String?
            if transport.rank == 0 {
                do {
                    if config.model.layers.allSatisfy({ $0.profile.fwdSeconds <= 0 && $0.profile.bwdSeconds <= 0 }) {
                        throw VPipeError.invalidField(field: "plan", message: "missing, and model.layers carry no profiles: with training.transport TRANSPORT_MPI give a plan or per-layer profiles (rank 0 plans with them); a distributed session does not profile")
                    }
                    let request = PlanRequest(model: config.model, cluster: config.cluster,
                                              options: PlanOptions(schedule: config.training.schedule, microBatches: config.training.microBatches, planner: .vpipe))
                    bytes = codec.encode(try Planning.plan(request))
                } catch let e {
                    error = "\(e)"
                }
            }
            let received = try MPIRuntime.broadcast(bytes, error: error, root: 0, comm: comm)
            layout = try codec.decode(received)
        }
        guard layout.ranges.count == transport.size else {
            throw VPipeError.invalidField(field: "training.transport", message: "TRANSPORT_MPI runs one rank per stage: the plan has \(layout.ranges.count) stages but the MPI world has \(transport.size) ranks; launch with mpirun -np \(layout.ranges.count)")
        }
        let plan = try cm.evaluate(layout)
        let pipeline = try Pipeline(model: config.model, cluster: config.cluster, options: config.training, layout: layout,
                                    transport: transport, localStages: [transport.rank])
        return (plan, pipeline)
    }

    /// Stops the stages' copy engines; the session cannot step afterwards.
    public func close() { pipeline.shutdown() }

    /// True when the model starts with an embedding: its inputs are token ids.
    public var takesTokens: Bool {
        if case .embedding = config.model.layers.first?.kind { return true }
        return false
    }

    /// Values per row of the first layer's input (token models: 1, a token id per row).
    public var inputFeatures: Int? {
        switch config.model.layers.first?.kind {
        case let .linear(inFeatures, _): return inFeatures
        case .embedding: return 1
        case let .layerNorm(features): return features
        case let .transformerBlock(features, _, _, _): return features
        case let .choiceBlock(features, _, _): return features
        case let .external(_, inFeatures, _): return inFeatures
        default: return nil
        }
    }

    /// One training iteration; returns the mean loss over the mini-batch.
    public func step(inputs: UnsafeBufferPointer<Float>, targets: UnsafeBufferPointer<Int32>) throws -> Float {
        guard let features = inputFeatures else {
            throw VPipeError.invalidField(field: "model.layers[0]", message: "the first layer must be linear, embedding, layer_norm or transformer_block so that the input width is known")
        }
        let migrate: (layout: PlanLayout, decision: Int)? = stateLock.locked {
            defer { pending = nil }
            return pending
        }
        // Online re-planning decides on this process's measurements; across MPI ranks those
        // differ (each rank measures its own stage), so it is off there: the host applies plans.
        let replanning = config.training.replanEvery > 0 && !profiling && config.training.transport != .mpi
        let result: Pipeline.StepResult
        do {
            result = try pipeline.step(inputs: inputs, features: features, targets: targets, migrateTo: migrate?.layout, calibrate: replanning)
        } catch {
            if let migrate { stateLock.locked { log.update(migrate.decision) { $0.note += "; not applied: the step failed" } } }
            throw error
        }
        if let migrate, let outcome = result.migration {
            stateLock.locked {
                log.update(migrate.decision) { d in
                    d.applied = outcome.failure == nil
                    d.layersMoved = outcome.layersMoved
                    d.bytesMoved = outcome.bytesMoved
                    d.stallSeconds = outcome.stallSeconds
                    if let f = outcome.failure { d.note += "; \(f)" }
                }
                if outcome.failure == nil {
                    let cm = CostModel(model: measuredModel, cluster: config.cluster, schedule: config.training.schedule, microBatches: config.training.microBatches)
                    if var p = try? cm.evaluate(pipeline.layout) { p.planner = plan?.planner; plan = p }
                    stageWorkspace = []
                }
            }
        }
        stateLock.locked {
            lastResult = result
            layoutSnapshot = pipeline.layout
            rowsPerMicroBatch = inputs.count / features / config.training.microBatches
            iterations += 1
            accumulateProfiles(result)
            workspaceBytes = max(workspaceBytes, result.measurements.map(\.workspaceBytes).max() ?? 0)
        }
        totalSeconds += result.seconds
        lastLoss = result.loss
        if stageWorkspace.count != result.measurements.count { stageWorkspace = Array(repeating: 0, count: result.measurements.count) }
        for (i, m) in result.measurements.enumerated() { stageWorkspace[i] = max(stageWorkspace[i], m.workspaceBytes) }
        if profiling && profiledIterations >= max(1, config.training.profileIterations) {
            try planFromProfiles()
        }
        if replanning { observeWindow(result) }
        if replanning && windowIterations >= config.training.replanEvery { replan() }
        return result.loss
    }

    /// The online profiler's numbers so far: per layer, per micro-batch.
    public var measuredProfiles: [LayerProfile] {
        guard profiledIterations > 0 else { return profileSums }
        let m = Double(config.training.microBatches * profiledIterations)
        return profileSums.enumerated().map { l, p in
            LayerProfile(fwdSeconds: p.fwdSeconds / m, bwdSeconds: p.bwdSeconds / m, stashBytes: p.stashBytes,
                         outputBytes: p.outputBytes, paramBytes: l < parameterBytes.count ? parameterBytes[l] : 0)
        }
    }

    /// The model with the measured profiles and the optimizer's κ: what the planner and the
    /// cost model see.
    public var measuredModel: ModelSpec {
        var model = config.model
        let profiles = measuredProfiles
        for l in model.layers.indices { model.layers[l].profile = profiles[l] }
        model.stateBytesPerParamByte = stateBytesPerParamByte
        if let features = inputFeatures, rowsPerMicroBatch > 0 {
            model.inputBytes = features * MemoryLayout<Float>.stride * rowsPerMicroBatch
        }
        return model
    }

    /// Rows of one micro-batch in the last step (x_0 = features × 4 × rows bytes).
    private var rowsPerMicroBatch = 0

    private func accumulateProfiles(_ r: Pipeline.StepResult) {
        // The first iteration warms caches and allocators; profile from the second when
        // there are several, so one cold step does not skew the plan.
        let skip = iterations == 1 && config.training.profileIterations > 1 && profiling
        for (i, range) in r.ranges.enumerated() {
            let meas = r.measurements[i]
            for (j, l) in range.enumerated() where j < meas.forwardSeconds.count {
                if !skip {
                    profileSums[l].fwdSeconds += meas.forwardSeconds[j]
                    profileSums[l].bwdSeconds += meas.backwardSeconds[j]
                }
                profileSums[l].stashBytes = meas.stashBytes[j]
                profileSums[l].outputBytes = meas.outputBytes[j]
            }
        }
        if !skip { profiledIterations += 1 }
    }

    /// Adds an iteration to the re-planning window: layer times normalised by the measured
    /// speed of the stage that ran them, and the stage speeds from the reference kernel.
    private func observeWindow(_ r: Pipeline.StepResult) {
        let L = config.model.layers.count
        if windowSums.count != L { windowSums = Array(repeating: (0, 0), count: L) }
        if stageSpeed.count != r.measurements.count { stageSpeed = Array(repeating: 1, count: r.measurements.count) }
        for m in r.measurements where m.calibrationSeconds > 0 { calibrationBaseline = min(calibrationBaseline, m.calibrationSeconds) }
        for (i, m) in r.measurements.enumerated() where m.calibrationSeconds > 0 {
            stageSpeed[i] = min(1, calibrationBaseline / m.calibrationSeconds)
        }
        for (i, range) in r.ranges.enumerated() {
            let speed = i < stageSpeed.count ? stageSpeed[i] : 1
            for (j, l) in range.enumerated() where j < r.measurements[i].forwardSeconds.count {
                windowSums[l].fwd += r.measurements[i].forwardSeconds[j] * speed
                windowSums[l].bwd += r.measurements[i].backwardSeconds[j] * speed
            }
        }
        windowIterations += 1
        stateLock.locked { windowIterationSeconds.append(r.seconds) }
    }

    /// The model with the window's normalised profiles, and the cluster with the measured
    /// device speeds and workspace: what a re-plan sees.
    private func windowModelAndCluster() -> (ModelSpec, ClusterSpec) {
        var model = measuredModel
        let m = Double(config.training.microBatches * max(1, windowIterations))
        for l in model.layers.indices where l < windowSums.count {
            model.layers[l].profile.fwdSeconds = windowSums[l].fwd / m
            model.layers[l].profile.bwdSeconds = windowSums[l].bwd / m
        }
        var cluster = clusterWithWorkspace
        for i in cluster.devices.indices where i < stageSpeed.count {
            cluster.devices[i].speed = cluster.devices[i].effectiveSpeed * stageSpeed[i]
        }
        return (model, cluster)
    }

    /// Online re-planning: plan on the window's numbers; migrate when the predicted gain
    /// exceeds the threshold. Every decision is recorded.
    private func replan() {
        let (model, cluster) = windowModelAndCluster()
        let before = windowIterationSeconds.reduce(0, +) / Double(max(1, windowIterationSeconds.count))
        // The previous decision's "after" is this window.
        stateLock.locked { log.recordAfterWindow(before) }
        defer {
            windowSums = []
            windowIterations = 0
            stateLock.locked { windowIterationSeconds = [] }
        }
        let options = PlanOptions(schedule: config.training.schedule, microBatches: config.training.microBatches, planner: .vpipe)
        let current = CostModel(model: model, cluster: cluster, schedule: options.schedule, microBatches: options.microBatches)
        let old = (try? current.evaluate(pipeline.layout).iterationSeconds) ?? .infinity
        var decision = MigrationDecision(source: "online", iteration: iterations, oldPredictedSeconds: old, newPredictedSeconds: old,
                                         applied: false, iterationSecondsBefore: before, note: "")
        do {
            let fresh = try Planning.plan(PlanRequest(model: model, cluster: cluster, options: options))
            decision.newPredictedSeconds = fresh.iterationSeconds
            let gain = (old - fresh.iterationSeconds) / old
            if fresh.layout == pipeline.layout {
                decision.note = "the running plan is still the best"
            } else if config.training.scheduleText != nil,
                      (try? ScheduleSource.schedule(for: config.training, stagePolicies: ScheduleSource.stagePolicies(fresh.layout))) == nil {
                decision.note = "the host's schedule (training.schedule_text) does not run on the new plan: staying"
            } else if gain > config.training.replanThreshold {
                decision.note = "predicted gain \(formatFixed(gain * 100, decimals: 1))% > threshold \(formatFixed(config.training.replanThreshold * 100, decimals: 1))%: migrating"
                stateLock.locked { pending = (fresh.layout, log.append(decision)) }
                return
            } else {
                decision.note = "predicted gain \(formatFixed(gain * 100, decimals: 1))% below the threshold"
            }
        } catch {
            decision.note = "re-planning failed: \(error)"
        }
        stateLock.locked { _ = log.append(decision) }
    }

    /// Asks for a live migration to `layout` (layers between stages, policies), applied at
    /// the next step: pre-copy during that iteration, gradients handed over at its flush.
    /// With TRANSPORT_MPI every rank's host must call this with the same plan between the
    /// same two steps (e.g. rank 0 decides and broadcasts it); a step whose ranks disagree
    /// fails on every rank. The layers then travel between ranks over MPI (docs/mpi.md).
    /// Checked now against the measured profiles; a plan that cannot be applied is rejected
    /// and the session continues on its plan, untouched. Safe to call from another thread
    /// while a step runs; a later request replaces one not yet started.
    public func applyPlan(_ layout: PlanLayout, schedule: Schedule? = nil, microBatches: Int? = nil) throws {
        if let schedule, schedule != config.training.schedule {
            throw VPipeError.invalidField(field: "plan.schedule", message: "the session trains with \(config.training.schedule.name), the plan is for \(schedule.name)")
        }
        if let microBatches, microBatches != config.training.microBatches {
            throw VPipeError.invalidField(field: "plan.micro_batches", message: "the session trains with \(config.training.microBatches) micro-batches, the plan has \(microBatches)")
        }
        if config.training.scheduleText != nil {
            // The host's schedule stays: the plan must be one it runs on.
            _ = try ScheduleSource.schedule(for: config.training, stagePolicies: ScheduleSource.stagePolicies(layout))
        }
        try stateLock.locked {
            if profiling {
                throw VPipeError.invalidField(field: "plan", message: "the session is still profiling (it plans itself after training.profile_iterations steps); apply a plan after that")
            }
            let stageCount = layoutSnapshot.ranges.count
            if layout.ranges.count != stageCount {
                throw VPipeError.invalidField(field: "plan.stages", message: "the session runs \(stageCount) stages, the plan has \(layout.ranges.count); changing the stage count needs a new session")
            }
            // Across MPI ranks each rank measured only its own stage: the check uses what every
            // rank has alike (the config's profiles and cluster), so every rank reaches the same
            // verdict on the same plan.
            let mpi = config.training.transport == .mpi
            let model = profiledIterations > 0 && !mpi ? measuredModel : config.model
            let cm = CostModel(model: model, cluster: mpi ? config.cluster : clusterWithWorkspace, schedule: config.training.schedule, microBatches: config.training.microBatches)
            let evaluated = try cm.evaluate(layout)
            let over = cm.violations(evaluated)
            if !over.isEmpty {
                throw VPipeError.infeasible("the plan does not fit with the measured profiles, so it was not applied and training continues on the current plan: " + over.joined(separator: "; "))
            }
            let old = (try? cm.evaluate(layoutSnapshot).iterationSeconds) ?? .nan
            let before = windowIterationSeconds.isEmpty ? (lastResult?.seconds ?? 0) : windowIterationSeconds.reduce(0, +) / Double(windowIterationSeconds.count)
            if let p = pending { log.update(p.decision) { $0.note += "; replaced by a later request before it started" } }
            let ticket = log.append(MigrationDecision(source: "host", iteration: iterations, oldPredictedSeconds: old, newPredictedSeconds: evaluated.iterationSeconds,
                                                      applied: false, iterationSecondsBefore: before, note: "requested by the host"))
            pending = (layout, ticket)
        }
    }

    /// Ends profiling: plan with VPIPE on the measured model and move the layers.
    private func planFromProfiles() throws {
        let model = measuredModel
        let request = PlanRequest(model: model, cluster: clusterWithWorkspace,
                                  options: PlanOptions(schedule: config.training.schedule, microBatches: config.training.microBatches, planner: .vpipe))
        let plan = try Planning.plan(request)
        let old = pipeline
        pipeline = try Pipeline(model: config.model, cluster: config.cluster, options: config.training, layout: plan.layout,
                                existing: (old.layers, old.optimizerState, old.optimizerSteps))
        old.shutdown()
        stageWorkspace = []
        self.plan = plan
        stateLock.locked {
            layoutSnapshot = pipeline.layout
            profiling = false
        }
    }

    public var isProfiling: Bool { profiling }

    /// Per stage, the compute and copy actions the last step executed, in the order they
    /// started (what the schedule IR made each stage do).
    public var lastExecutedActions: [[ScheduleAction]] {
        lastResult?.measurements.map { $0.events.sorted { $0.start < $1.start }.map(\.action) } ?? []
    }

    /// PIPEDREAM_ASYNC: per stage, the weight version each micro-batch of the last step used
    /// in its forward and in its backward (weight stashing makes them equal).
    public var lastWeightVersions: [[Int: (forward: Int, backward: Int)]] {
        lastResult?.measurements.map(\.weightVersions) ?? []
    }

    /// The cluster with every device's reserved_bytes raised to the measured workspace, so
    /// that a plan made from it leaves room for the runtime's temporaries.
    public var clusterWithWorkspace: ClusterSpec {
        var c = config.cluster
        for i in c.devices.indices { c.devices[i].reservedBytes = max(c.devices[i].reservedBytes, workspaceBytes) }
        return c
    }

    /// The running plan evaluated with cost model v1 on the measured profiles (once some
    /// exist; before, on the profiles the host gave).
    public var currentPlan: Plan? {
        let model = profiledIterations > 0 ? measuredModel : config.model
        let cm = CostModel(model: model, cluster: config.cluster, schedule: config.training.schedule, microBatches: config.training.microBatches)
        guard var p = try? cm.evaluate(pipeline.layout) else { return plan }
        p.planner = plan?.planner
        p.planningSeconds = plan?.planningSeconds ?? 0
        return p
    }

    public func statistics() -> SessionStatistics {
        let profiles = measuredProfiles
        var predicted: [Double] = Array(repeating: .nan, count: pipeline.stages.count)
        if !profiling, profiledIterations > 0 {
            let model = measuredModel
            let cm = CostModel(model: model, cluster: config.cluster, schedule: config.training.schedule, microBatches: config.training.microBatches)
            if let p = try? cm.evaluate(pipeline.layout) {
                // Mem_i without R_i, plus the workspace actually measured: what the arena holds.
                predicted = p.stages.map { $0.peakMemoryBytes - Double(config.cluster.devices[$0.device].reservedBytes) + Double($0.device < stageWorkspace.count ? stageWorkspace[$0.device] : workspaceBytes) }
            }
        }
        // The last step may have run on another placement (the profiling stage, or the plan
        // before a migration): its per-stage numbers count only where the stage still exists.
        let sameShape = lastResult?.measurements.count == pipeline.stages.count
        let stages = pipeline.stages.enumerated().map { i, s in
            let meas = sameShape ? (lastResult?.measurements[i] ?? StageMeasurement()) : StageMeasurement()
            let peak = sameShape ? (lastResult?.peaks[i] ?? s.arena.peakBytes) : s.arena.peakBytes
            return SessionStatistics.StageStatistics(
                stage: i, layers: s.layers, peakDeviceBytes: peak, capacityBytes: s.arena.capacity,
                predictedPeakBytes: i < predicted.count ? predicted[i] : .nan, computeSeconds: meas.computeSeconds,
                stageSecondsPerMicroBatch: meas.computeSeconds / Double(config.training.microBatches),
                swappedBytes: meas.swappedBytes, recomputedLayers: meas.recomputedLayers)
        }
        return SessionStatistics(
            iterations: iterations, lastIterationSeconds: lastResult?.seconds ?? 0,
            meanIterationSeconds: iterations > 0 ? totalSeconds / Double(iterations) : 0, lastLoss: lastLoss,
            stages: stages, measuredProfiles: profiles, plan: profiling ? nil : currentPlan,
            decisions: stateLock.locked { log.entries })
    }


    /// Parameter tensors of layer `layer`: shape and values (copies).
    public func parameters(layer: Int) throws -> [(shape: [Int], values: [Float])] {
        guard layer >= 0 && layer < pipeline.layers.count else {
            throw VPipeError.invalidField(field: "layer", message: "the model has layers 0..\(pipeline.layers.count - 1), got \(layer)")
        }
        return try placed(layer).parameters.map { ($0.shape, $0.toArray()) }
    }

    /// Replaces layer `layer`'s parameters; shapes must match exactly. Nothing changes on error.
    public func setParameters(layer: Int, _ arrays: [(shape: [Int], values: [Float])]) throws {
        guard layer >= 0 && layer < pipeline.layers.count else {
            throw VPipeError.invalidField(field: "layer", message: "the model has layers 0..\(pipeline.layers.count - 1), got \(layer)")
        }
        let params = try placed(layer).parameters
        guard arrays.count == params.count else {
            throw VPipeError.invalidField(field: "tensors", message: "layer \(layer) has \(params.count) parameter tensors, got \(arrays.count)")
        }
        for (k, (shape, values)) in arrays.enumerated() {
            guard shape == params[k].shape, values.count == params[k].count else {
                throw VPipeError.invalidField(field: "tensors[\(k)]", message: "layer \(layer) tensor \(k) has shape \(params[k].shape), got shape \(shape) with \(values.count) values")
            }
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw VPipeError.invalidField(field: "tensors[\(k)].values[\(bad)]", message: "layer \(layer) tensor \(k): weights must be finite, got \(values[bad])")
            }
        }
        for (k, (_, values)) in arrays.enumerated() { try params[k].fill(from: values) }
    }

    /// Layer `layer`, which must live in this process (a distributed session holds only its stage's).
    private func placed(_ layer: Int) throws -> Layer {
        guard let l = pipeline.layers[layer] else {
            let stage = pipeline.stages.firstIndex { $0.layers.contains(layer) } ?? -1
            throw VPipeError.invalidField(field: "layer", message: "layer \(layer) lives on stage \(stage), in MPI rank \(stage); ask that rank")
        }
        return l
    }

    /// The last step as a Chrome trace (JSON) and an SVG timeline.
    public func trace() -> (json: String, svg: String) {
        guard let r = lastResult else { return ("{\"traceEvents\":[]}", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>") }
        let events = r.measurements.flatMap(\.events).sorted { $0.start < $1.start }
        // One row per stage of the placement the step ran on (which may since have changed).
        let stages = r.measurements.indices.map { i in
            let busy = r.measurements[i].computeSeconds
            return SimulationReport.StageReport(
                busySeconds: busy, idleSeconds: r.seconds - busy, bubbleSeconds: r.seconds - busy, swapStallSeconds: 0,
                busyFraction: busy / r.seconds, idleFraction: 1 - busy / r.seconds, bubbleFraction: 1 - busy / r.seconds,
                peakMemoryBytes: Double(i < r.peaks.count ? r.peaks[i] : 0), staticBytes: 0,
                memoryBytes: i < pipeline.stages.count ? pipeline.stages[i].arena.capacity : 0, memory: [])
        }
        let schedule = (try? pipeline.schedule()) ?? PipelineSchedule(kind: config.training.schedule, microBatches: config.training.microBatches, stages: [])
        let report = SimulationReport(schedule: schedule, iterationSeconds: r.seconds,
                                      costModelIterationSeconds: currentPlan?.iterationSeconds ?? 0, stages: stages, events: events)
        return (TraceExport.chromeTrace(report), TraceExport.svg(report, title: "\(config.model.name): measured iteration \(iterations)"))
    }
}
