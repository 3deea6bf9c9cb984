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
    private var lastResult: Pipeline.StepResult?
    private var iterations = 0
    private var totalSeconds = 0.0
    private var lastLoss: Float = .nan
    public private(set) var plan: Plan?

    public init(_ config: SessionConfig) throws {
        try Validation.validate(config.model)
        try Validation.validate(config.cluster)
        try Validation.validate(microBatches: config.training.microBatches, field: "training.micro_batches")
        if config.training.schedule == .pipedreamAsync {
            throw VPipeError.notImplemented("training.schedule SCHEDULE_PIPEDREAM_ASYNC (weight stashing) in the runtime; use SCHEDULE_GPIPE or SCHEDULE_1F1B")
        }
        for (l, layer) in config.model.layers.enumerated() where layer.kind == nil {
            throw VPipeError.invalidField(field: "model.layers[\(l)]", message: "has no kind (linear, activation, ...): a session can only train layers it can build")
        }
        if let kind = config.model.layers.last?.kind, kind != .softmaxCrossEntropy {
            throw VPipeError.invalidField(field: "model.layers[\(config.model.layers.count - 1)]", message: "the last layer must be softmax_cross_entropy (the loss)")
        }
        self.config = config
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
            cluster.devices[0].memoryBytes = Int.max / 4
            cluster.links = []
            let L = config.model.layers.count
            pipeline = try Pipeline(model: config.model, cluster: cluster, options: config.training,
                                    layout: PlanLayout(ranges: [0..<L], policies: Array(repeating: .keep, count: L)))
            profiling = true
        }
    }

    deinit { pipeline.shutdown() }

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

    /// Values per row of the first layer's input (token models: 1, a token id per row).
    public var inputFeatures: Int? {
        switch config.model.layers.first?.kind {
        case let .linear(inFeatures, _): return inFeatures
        case .embedding: return 1
        case let .layerNorm(features): return features
        case let .transformerBlock(features, _, _, _): return features
        default: return nil
        }
    }

    /// One training iteration; returns the mean loss over the mini-batch.
    public func step(inputs: UnsafeBufferPointer<Float>, targets: UnsafeBufferPointer<Int32>) throws -> Float {
        guard let features = inputFeatures else {
            throw VPipeError.invalidField(field: "model.layers[0]", message: "the first layer must be linear, embedding, layer_norm or transformer_block so that the input width is known")
        }
        let result = try pipeline.step(inputs: inputs, features: features, targets: targets)
        lastResult = result
        rowsPerMicroBatch = inputs.count / features / config.training.microBatches
        iterations += 1
        totalSeconds += result.seconds
        lastLoss = result.loss
        accumulateProfiles(result)
        if profiling && profiledIterations >= max(1, config.training.profileIterations) {
            try planFromProfiles()
        }
        return result.loss
    }

    /// The online profiler's numbers so far: per layer, per micro-batch.
    public var measuredProfiles: [LayerProfile] {
        guard profiledIterations > 0 else { return profileSums }
        let m = Double(config.training.microBatches * profiledIterations)
        return profileSums.enumerated().map { l, p in
            LayerProfile(fwdSeconds: p.fwdSeconds / m, bwdSeconds: p.bwdSeconds / m, stashBytes: p.stashBytes,
                         outputBytes: p.outputBytes, paramBytes: pipeline.layers[l]?.parameters.reduce(0) { $0 + $1.bytes } ?? p.paramBytes)
        }
    }

    /// The model with the measured profiles and the optimizer's κ: what the planner and the
    /// cost model see.
    public var measuredModel: ModelSpec {
        var model = config.model
        let profiles = measuredProfiles
        for l in model.layers.indices { model.layers[l].profile = profiles[l] }
        model.stateBytesPerParamByte = pipeline.optimizer.stateBytesPerParamByte
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
        for (i, stage) in pipeline.stages.enumerated() {
            let meas = r.measurements[i]
            for (j, l) in stage.layers.enumerated() where j < meas.forwardSeconds.count {
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

    /// Ends profiling: plan with VPIPE on the measured model and move the layers.
    private func planFromProfiles() throws {
        let model = measuredModel
        let request = PlanRequest(model: model, cluster: config.cluster,
                                  options: PlanOptions(schedule: config.training.schedule, microBatches: config.training.microBatches, planner: .vpipe))
        let plan = try Planning.plan(request)
        let old = pipeline
        pipeline = try Pipeline(model: config.model, cluster: config.cluster, options: config.training, layout: plan.layout,
                                existing: (old.layers, old.optimizerState, old.optimizerSteps))
        old.shutdown()
        self.plan = plan
        profiling = false
    }

    public var isProfiling: Bool { profiling }

    public func statistics() -> SessionStatistics {
        let profiles = measuredProfiles
        var predicted: [Double] = Array(repeating: .nan, count: pipeline.stages.count)
        if !profiling, profiledIterations > 0 {
            let model = measuredModel
            let cm = CostModel(model: model, cluster: config.cluster, schedule: config.training.schedule, microBatches: config.training.microBatches)
            if let p = try? cm.evaluate(pipeline.layout) {
                predicted = p.stages.map { $0.peakMemoryBytes - Double(config.cluster.devices[$0.device].reservedBytes) }
            }
        }
        let stages = pipeline.stages.enumerated().map { i, s in
            let meas = lastResult?.measurements[i] ?? StageMeasurement()
            return SessionStatistics.StageStatistics(
                stage: i, layers: s.layers, peakDeviceBytes: lastResult?.peaks[i] ?? s.device.peakBytes, capacityBytes: s.device.capacity,
                predictedPeakBytes: predicted[i], computeSeconds: meas.computeSeconds,
                stageSecondsPerMicroBatch: meas.computeSeconds / Double(config.training.microBatches),
                swappedBytes: meas.swappedBytes, recomputedLayers: meas.recomputedLayers)
        }
        return SessionStatistics(
            iterations: iterations, lastIterationSeconds: lastResult?.seconds ?? 0,
            meanIterationSeconds: iterations > 0 ? totalSeconds / Double(iterations) : 0, lastLoss: lastLoss,
            stages: stages, measuredProfiles: profiles, plan: plan)
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
        }
        for (k, (_, values)) in arrays.enumerated() { params[k].fill(from: values) }
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
        let stages = pipeline.stages.enumerated().map { i, s in
            let busy = r.measurements[i].computeSeconds
            return SimulationReport.StageReport(
                busySeconds: busy, idleSeconds: r.seconds - busy, bubbleSeconds: r.seconds - busy, swapStallSeconds: 0,
                busyFraction: busy / r.seconds, idleFraction: 1 - busy / r.seconds, bubbleFraction: 1 - busy / r.seconds,
                peakMemoryBytes: Double(r.peaks[i]), staticBytes: 0, memoryBytes: s.device.capacity, memory: [])
        }
        let schedule = (try? pipeline.schedule()) ?? PipelineSchedule(kind: config.training.schedule, microBatches: config.training.microBatches, stages: [])
        let report = SimulationReport(schedule: schedule, iterationSeconds: r.seconds,
                                      costModelIterationSeconds: plan?.iterationSeconds ?? 0, stages: stages, events: events)
        return (TraceExport.chromeTrace(report), TraceExport.svg(report, title: "\(config.model.name): measured iteration \(iterations)"))
    }
}
