import VPipeCore

/// A training session: a model placed on pipeline stages by a plan, trained step by step.
///
/// Opened without a plan, the first `profileIterations` steps run the whole model on one
/// uncapped stage while the online profiler measures every layer; then VPIPE plans with
/// the measured profiles and the layers (weights and optimizer state) move to their stages.
/// Those first steps are real training steps: the loss trajectory is the same either way.
///
/// The rooms it uses: `Pipeline` (placement and one iteration), `OnlineProfiler`
/// (Profiler/), `ReplanningWindow`, `Replanner` and `DecisionLog` (Replanning/), live
/// migration (Migration/), and the `Transport` (Transport/), which decides where the
/// stages run and how processes agree on a plan.
///
/// One host thread drives a session (the stages run on their own threads); `applyPlan` may
/// come from another thread while a step runs.
public final class TrainingSession: @unchecked Sendable {
    public let config: SessionConfig
    private(set) var pipeline: Pipeline
    /// True when the stages live in several processes (fixed at open).
    private let spansProcesses: Bool
    /// This process's rank when the stages live in several processes; nil in-process.
    public let rank: Int?
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
    /// decisions, and the measured numbers `applyPlan` checks a plan against (profiler,
    /// workspace, window, iterations, last result, running layout). The step thread writes
    /// them only under the lock; it may read them without.
    private let stateLock = Monitor()
    private var profiling: Bool
    private var profiler: OnlineProfiler
    private var window = ReplanningWindow()
    /// Recent migrations, so that re-planning does not undo them on noise.
    private var hysteresis = MigrationHysteresis()
    /// The next migration to start, and the ticket of its decision in `log`.
    private var pending: (layout: PlanLayout, decision: Int)?
    private var log = DecisionLog()
    /// The running layout, as of the last step boundary (read by `applyPlan` from other threads).
    private var layoutSnapshot = PlanLayout(ranges: [], policies: [])
    /// Parameter bytes per layer (fixed at construction).
    private var parameterBytes: [Int] = []
    /// The optimizer's state bytes per parameter byte (κ), fixed by the options.
    private let stateBytesPerParamByte: Double
    /// Rows of one micro-batch in the last step (x_0 = features × 4 × rows bytes).
    private var rowsPerMicroBatch = 0

    public init(_ config: SessionConfig) throws {
        try config.check()
        self.config = config
        stateBytesPerParamByte = config.training.makeOptimizer().stateBytesPerParamByte
        profiler = OnlineProfiler(layers: config.model.layers.count)
        let transport = try Transports.open(config.training)
        spansProcesses = transport.spansProcesses
        rank = transport.spansProcesses ? transport.rank : nil
        do {
            if transport.spansProcesses || config.plan != nil {
                // Across processes there is no profiling phase: every process must build the
                // same placement from the start, so rank 0 plans with the model's profiles.
                let layout = try config.plan ?? PlanAgreement.agreedLayout(config, transport)
                plan = try CostModel(model: config.model, cluster: config.cluster, schedule: config.training.schedule,
                                     microBatches: config.training.microBatches).evaluate(layout)
                pipeline = try Pipeline(model: config.model, cluster: config.cluster, options: config.training, layout: layout, transport: transport)
                profiling = false
            } else {
                pipeline = try Self.profilingPipeline(config, transport)
                profiling = true
            }
        } catch {
            transport.close()
            throw error
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

    /// One uncapped stage on device 0's description, holding the whole model: measuring,
    /// not enforcing. Its memory is the whole cluster's (the model will be spread over it),
    /// within the host's.
    private static func profilingPipeline(_ config: SessionConfig, _ transport: Transport) throws -> Pipeline {
        var cluster = config.cluster
        cluster.devices = [config.cluster.devices[0]]
        cluster.devices[0].memoryBytes = min(config.cluster.devices.reduce(0) { $0 + $1.memoryBytes }, BufferPool.physicalBytes)
        cluster.links = []
        let L = config.model.layers.count
        return try Pipeline(model: config.model, cluster: cluster, options: config.training,
                            layout: PlanLayout(ranges: [0..<L], policies: Array(repeating: .keep, count: L)), transport: transport)
    }

    deinit { pipeline.shutdown() }

    /// Stops the stages' threads and devices; the session cannot step afterwards.
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

    public var isProfiling: Bool { profiling }

    // MARK: Steps

    /// One training iteration; returns the mean loss over the mini-batch.
    public func step(inputs: UnsafeBufferPointer<Float>, targets: UnsafeBufferPointer<Int32>) throws -> Float {
        guard let features = inputFeatures else {
            throw VPipeError.invalidField(field: "model.layers[0]", message: "the first layer must be linear, embedding, layer_norm or transformer_block so that the input width is known")
        }
        let migrate: (layout: PlanLayout, decision: Int)? = stateLock.locked {
            defer { pending = nil }
            return pending
        }
        // Online re-planning; across processes rank 0 decides for every process.
        let replanning = config.training.replanEvery > 0 && !profiling
        let result: Pipeline.StepResult
        do {
            result = try pipeline.step(inputs: inputs, features: features, targets: targets, migrateTo: migrate?.layout, calibrate: replanning)
        } catch {
            if let migrate { stateLock.locked { log.update(migrate.decision) { $0.note += "; not applied: the step failed" } } }
            throw error
        }
        if let migrate, let outcome = result.migration { record(outcome, of: migrate.decision) }
        stateLock.locked {
            lastResult = result
            layoutSnapshot = pipeline.layout
            rowsPerMicroBatch = inputs.count / features / config.training.microBatches
            iterations += 1
            // The first iteration warms caches and allocators; profile from the second when
            // there are several, so one cold step does not skew the plan.
            profiler.observe(result, skipTimes: iterations == 1 && config.training.effectiveProfileIterations > 1 && profiling)
            workspaceBytes = max(workspaceBytes, result.measurements.map(\.workspaceBytes).max() ?? 0)
            // A step that migrated ran its layers next to the migration's copies (and, for a
            // layer that just arrived, on cold memory): its times would make the layers it
            // moved look slow where they are now and invite moving them back.
            if replanning && result.migration == nil { window.observe(result, layers: config.model.layers.count) }
        }
        totalSeconds += result.seconds
        lastLoss = result.loss
        if stageWorkspace.count != result.measurements.count { stageWorkspace = Array(repeating: 0, count: result.measurements.count) }
        for (i, m) in result.measurements.enumerated() { stageWorkspace[i] = max(stageWorkspace[i], m.workspaceBytes) }
        if profiling && profiler.iterations >= config.training.effectiveProfileIterations {
            try planFromProfiles()
        }
        if replanning && window.iterations >= config.training.replanEvery { try replan() }
        return result.loss
    }

    /// Records what the migration of decision `ticket` did.
    private func record(_ outcome: MigrationOutcome, of ticket: Int) {
        stateLock.locked {
            log.update(ticket) { d in
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

    /// Ends profiling: plan with VPIPE on the measured model and move the layers.
    private func planFromProfiles() throws {
        let request = PlanRequest(model: measuredModel, cluster: clusterWithWorkspace,
                                  options: PlanOptions(schedule: config.training.schedule, microBatches: config.training.microBatches, planner: .vpipe))
        try place(on: try Planning.plan(request))
    }

    /// Ends profiling on `plan`: the layers (weights and optimizer state) move to its stages.
    private func place(on plan: Plan) throws {
        let old = pipeline
        pipeline = try Pipeline(model: config.model, cluster: config.cluster, options: config.training, layout: plan.layout,
                                existing: (old.layers, old.optimizerState, old.optimizerSteps), transport: old.transport)
        old.shutdownStages()
        stageWorkspace = []
        self.plan = plan
        stateLock.locked {
            layoutSnapshot = pipeline.layout
            profiling = false
        }
    }

    // MARK: Checkpoint hooks (the rest is in Checkpoint/SessionCheckpoint.swift)

    /// The profiler's and the re-planner's measurements and the session's step counters.
    func profilerRecord() -> CheckpointMetadata.Profiler {
        var p = CheckpointMetadata.Profiler()
        stateLock.locked {
            p.profiling = profiling
            (p.profileSums, p.profiledIterations) = profiler.checkpoint
            let w = window.checkpoint
            (p.windowForwardSeconds, p.windowBackwardSeconds) = (w.forward, w.backward)
            (p.windowIterations, p.windowIterationSeconds, p.stageSpeed) = (w.iterations, w.iterationSeconds, w.stageSpeed)
            p.calibrationBaseline = w.calibrationBaseline.isFinite ? w.calibrationBaseline : 0
            (p.hysteresisWindows, p.hysteresisMoves) = hysteresis.saved
        }
        p.workspaceBytes = workspaceBytes
        p.rowsPerMicroBatch = rowsPerMicroBatch
        p.iterations = iterations
        p.totalSeconds = totalSeconds
        p.lastLoss = lastLoss
        return p
    }

    /// The migration requested or decided and not started yet (a checkpoint keeps it).
    func pendingRecord() -> (layout: PlanLayout, source: String)? {
        stateLock.locked {
            guard let p = pending else { return nil }
            var source = "host"
            log.update(p.decision) { source = $0.source }
            return (p.layout, source)
        }
    }

    /// Makes a checkpoint's pending migration this session's, to start at the next step
    /// (it replaces one requested before the load), with a decision saying where it came from.
    func restorePending(_ layout: PlanLayout, source: String, savedAt iteration: Int) {
        stateLock.locked {
            if let p = pending { log.update(p.decision) { $0.note += "; replaced by the checkpoint's pending migration" } }
            let ticket = log.append(MigrationDecision(source: source.isEmpty ? "host" : source, iteration: iteration, oldPredictedSeconds: .nan, newPredictedSeconds: .nan,
                                                      applied: false, iterationSecondsBefore: 0, note: "pending when the checkpoint was saved; restored from it"))
            pending = (layout, ticket)
        }
    }

    /// Takes over a checkpoint's measurements and counters (after `restorePlacement`).
    /// `onSavedPlan`: the session runs the plan the checkpoint was saved on, so the
    /// re-planner's hold on recent moves (stage numbers of that plan) applies again; under
    /// another plan it starts afresh.
    func restoreProfiler(_ p: CheckpointMetadata.Profiler, onSavedPlan: Bool) {
        stateLock.locked {
            hysteresis = onSavedPlan ? MigrationHysteresis(windows: p.hysteresisWindows, moves: p.hysteresisMoves) : MigrationHysteresis()
            profiler.restore(sums: p.profileSums, iterations: p.profiledIterations)
            window.restore(forward: p.windowForwardSeconds, backward: p.windowBackwardSeconds, iterations: p.windowIterations,
                           iterationSeconds: p.windowIterationSeconds, stageSpeed: p.stageSpeed,
                           calibrationBaseline: p.calibrationBaseline > 0 ? p.calibrationBaseline : .infinity)
        }
        workspaceBytes = p.workspaceBytes
        rowsPerMicroBatch = p.rowsPerMicroBatch
        iterations = p.iterations
        totalSeconds = p.totalSeconds
        lastLoss = p.lastLoss
    }

    /// A session still profiling (opened without a plan) resumes a checkpoint taken after
    /// profiling on that checkpoint's plan, so the run goes on where it was, as it was.
    /// A session opened with a plan keeps its own (resuming under another plan).
    func restorePlacement(_ layout: PlanLayout, profilingInCheckpoint: Bool) throws {
        guard profiling, !profilingInCheckpoint, !spansProcesses else { return }
        guard layout.ranges.count <= config.cluster.devices.count else {
            throw VPipeError.invalidField(field: "checkpoint.plan", message: "the checkpoint's plan has \(layout.ranges.count) stages, the cluster \(config.cluster.devices.count) devices; open the session with a plan for this cluster")
        }
        let cm = CostModel(model: config.model, cluster: config.cluster, schedule: config.training.schedule, microBatches: config.training.microBatches)
        try place(on: try cm.evaluate(layout))
    }

    /// Online re-planning on the window's numbers; the decision is recorded and, when it
    /// migrates, becomes the pending migration of the next step. Across processes every
    /// process shares its window and rank 0 decides for all (`ReplanningAcrossProcesses`);
    /// the planner then sees the config's memory profiles (each process measured only its
    /// own layers' sizes) with the window's times.
    private func replan() throws {
        let local = stateLock.locked { window }
        var base = spansProcesses ? config.model : measuredModel
        base.stateBytesPerParamByte = stateBytesPerParamByte
        let cluster = spansProcesses ? config.cluster : clusterWithWorkspace
        let running = pipeline.layout, iteration = iterations, options = config.training
        let recent = stateLock.locked { hysteresis }
        let decide = { (w: ReplanningWindow) -> (decision: MigrationDecision, layout: PlanLayout?) in
            let (model, cl) = w.apply(to: base, cluster, microBatches: options.microBatches)
            return Replanner.decide(model: model, cluster: cl, running: running, options: options, hysteresis: recent,
                                    iteration: iteration, before: w.meanIterationSeconds ?? 0)
        }
        let (decision, layout) = spansProcesses ? try ReplanningAcrossProcesses.decide(window: local, transport: pipeline.transport, decide)
                                                : decide(local)
        stateLock.locked {
            // The previous decision's "after" is this window.
            log.recordAfterWindow(decision.iterationSecondsBefore)
            window.clear()
            hysteresis.record(running: running, migratingTo: layout)
            let ticket = log.append(decision)
            if let layout { pending = (layout, ticket) }
        }
    }

    // MARK: Plans from the host

    /// Asks for a live migration to `layout` (layers between stages, policies), applied at
    /// the next step: pre-copy during that iteration, gradients handed over at its flush.
    /// Across processes every process's host must call this with the same plan between the
    /// same two steps (e.g. rank 0 decides and broadcasts it); a step whose processes
    /// disagree fails on every process. The layers then travel between processes (docs/mpi.md).
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
            // Across processes each measured only its own stage: the check uses what every
            // process has alike (the config's profiles and cluster), so every process reaches
            // the same verdict on the same plan.
            let model = profiler.iterations > 0 && !spansProcesses ? measuredModel : config.model
            let cm = CostModel(model: model, cluster: spansProcesses ? config.cluster : clusterWithWorkspace, schedule: config.training.schedule, microBatches: config.training.microBatches)
            let evaluated = try cm.evaluate(layout)
            let over = cm.violations(evaluated)
            if !over.isEmpty {
                throw VPipeError.infeasible("the plan does not fit with the measured profiles, so it was not applied and training continues on the current plan: " + over.joined(separator: "; "))
            }
            let old = (try? cm.evaluate(layoutSnapshot).iterationSeconds) ?? .nan
            let before = window.meanIterationSeconds ?? (lastResult?.seconds ?? 0)
            if let p = pending { log.update(p.decision) { $0.note += "; replaced by a later request before it started" } }
            let ticket = log.append(MigrationDecision(source: "host", iteration: iterations, oldPredictedSeconds: old, newPredictedSeconds: evaluated.iterationSeconds,
                                                      applied: false, iterationSecondsBefore: before, note: "requested by the host"))
            pending = (layout, ticket)
        }
    }

    // MARK: What was measured

    /// The online profiler's numbers so far: per layer, per micro-batch.
    public var measuredProfiles: [LayerProfile] {
        profiler.profiles(microBatches: config.training.microBatches, parameterBytes: parameterBytes)
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
        let model = profiler.iterations > 0 ? measuredModel : config.model
        let cm = CostModel(model: model, cluster: config.cluster, schedule: config.training.schedule, microBatches: config.training.microBatches)
        guard var p = try? cm.evaluate(pipeline.layout) else { return plan }
        p.planner = plan?.planner
        p.planningSeconds = plan?.planningSeconds ?? 0
        return p
    }

    public func statistics() -> SessionStatistics {
        let profiles = measuredProfiles
        var predicted: [Double] = Array(repeating: .nan, count: pipeline.stages.count)
        if !profiling, profiler.iterations > 0 {
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
            // A copy with its own storage, made under the lock: the caller encodes it after
            // the lock is released while a step or apply_plan may update the log in place
            // (ThreadSanitizer reported the shared buffer in test_stress).
            decisions: stateLock.locked { log.entries.map { $0 } })
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
