import CVPipeProto
import VPipeCore
import VPipeRuntime

/// Training sessions on the wire: SessionConfig in, SessionStats and LayerParameters out
/// and in.
public enum WireSession {
    public static func sessionConfig(_ bytes: UnsafeRawBufferPointer) throws -> SessionConfig {
        try WireDecode.unpack(bytes, type: "vpipe.SessionConfig", unpack: vpipe__session_config__unpack,
                              free: vpipe__session_config__free_unpacked) { c in
            guard let model = c.pointee.model else {
                throw VPipeError.invalidField(field: "model", message: "missing: a session needs the model to train")
            }
            guard let cluster = c.pointee.cluster else {
                throw VPipeError.invalidField(field: "cluster", message: "missing: a session needs the cluster to train on")
            }
            guard let training = c.pointee.training else {
                throw VPipeError.invalidField(field: "training", message: "missing: a session needs training (at least micro_batches and an optimizer)")
            }
            let options = try trainingOptions(training)
            var layout: PlanLayout?
            if let plan = c.pointee.plan, plan.pointee.n_stages > 0 {
                let d = try WireDecode.plan(plan)
                if d.schedule != options.schedule {
                    throw VPipeError.invalidField(field: "plan.schedule", message: "the plan is for \(d.schedule.name) but training.schedule is \(options.schedule.name)")
                }
                if d.microBatches != options.microBatches {
                    throw VPipeError.invalidField(field: "plan.micro_batches", message: "the plan is for \(d.microBatches) micro-batches but training.micro_batches is \(options.microBatches)")
                }
                layout = d.layout
            }
            return SessionConfig(model: try WireDecode.modelSpec(model, requireProfiles: false),
                                 cluster: try WireDecode.clusterSpec(cluster), plan: layout, training: options,
                                 checkpointCodec: WireCheckpoint.codec)
        }
    }

    /// The layout of a serialised vpipe.Plan (`vpipe train --migrate-plan`).
    public static func planLayout(_ bytes: [UInt8]) throws -> PlanLayout {
        try bytes.withUnsafeBytes { try WireDecode.plan($0).layout }
    }

    /// The training options as the host wrote them; ranges and defaults are
    /// `TrainingOptions.check()` / `effective*`'s, at session open.
    static func trainingOptions(_ t: UnsafeMutablePointer<Vpipe__TrainingConfig>) throws -> TrainingOptions {
        let raw = Int(t.pointee.schedule.rawValue)
        let schedule = raw == 0 ? Schedule.oneFOneB : try WireDecode.scheduleValue(raw, field: "training.schedule")
        var failure: TrainingOptions.Failure?
        if t.pointee.fail_iteration > 0 {
            failure = .init(iteration: Int(t.pointee.fail_iteration), stage: Int(t.pointee.fail_stage), microBatch: Int(t.pointee.fail_micro_batch))
        }
        var options = TrainingOptions(schedule: schedule, microBatches: Int(t.pointee.micro_batches), seed: t.pointee.seed,
                                      optimizer: try optimizer(t), throttleCopies: t.pointee.throttle_copies != 0,
                                      profileIterations: Int(t.pointee.profile_iterations), failure: failure)
        options.replanEvery = Int(t.pointee.replan_every)
        options.replanThreshold = t.pointee.replan_threshold
        if t.pointee.slowdown_factor != 0 {
            options.slowdown = .init(stage: Int(t.pointee.slowdown_stage), factor: t.pointee.slowdown_factor,
                                     fromIteration: Int(t.pointee.slowdown_from_iteration))
        }
        options.transport = try transport(t.pointee.transport)
        options.failureTimeoutSeconds = t.pointee.failure_timeout_seconds
        if let text = t.pointee.schedule_text, text.pointee != 0 { options.scheduleText = String(cString: text) }
        return options
    }

    private static func optimizer(_ t: UnsafeMutablePointer<Vpipe__TrainingConfig>) throws -> TrainingOptions.OptimizerChoice {
        switch t.pointee.optimizer_case {
        case VPIPE__TRAINING_CONFIG__OPTIMIZER_SGD:
            guard let c = t.pointee.sgd else { throw VPipeError.invalidField(field: "training.sgd", message: "missing") }
            return .sgd(learningRate: c.pointee.lr, momentum: c.pointee.momentum)
        case VPIPE__TRAINING_CONFIG__OPTIMIZER_ADAM:
            guard let c = t.pointee.adam else { throw VPipeError.invalidField(field: "training.adam", message: "missing") }
            return .adam(learningRate: c.pointee.lr, beta1: c.pointee.beta1, beta2: c.pointee.beta2, epsilon: c.pointee.eps)
        default:
            throw VPipeError.invalidField(field: "training.optimizer", message: "missing: set training.sgd or training.adam")
        }
    }

    private static func transport(_ value: Vpipe__Transport) throws -> TrainingOptions.TransportKind {
        switch value {
        case VPIPE__TRANSPORT__TRANSPORT_IN_PROCESS: return .inProcess
        case VPIPE__TRANSPORT__TRANSPORT_MPI: return .mpi
        default:
            throw VPipeError.invalidField(field: "training.transport", message: "unknown value \(value.rawValue); use TRANSPORT_IN_PROCESS or TRANSPORT_MPI")
        }
    }

    public static func stats(_ s: SessionStatistics) -> [UInt8] {
        let arena = CArena()
        let message = arena.allocate(Vpipe__SessionStats.self, count: 1)
        vpipe__session_stats__init(message)
        message.pointee.iterations = UInt64(s.iterations)
        message.pointee.last_iteration_seconds = s.lastIterationSeconds
        message.pointee.mean_iteration_seconds = s.meanIterationSeconds
        message.pointee.last_loss = s.lastLoss
        let stages = arena.allocate(UnsafeMutablePointer<Vpipe__StageStats>?.self, count: s.stages.count)
        for (i, st) in s.stages.enumerated() {
            let m = arena.allocate(Vpipe__StageStats.self, count: 1)
            vpipe__stage_stats__init(m)
            m.pointee.stage = UInt32(st.stage)
            m.pointee.first_layer = UInt32(st.layers.lowerBound)
            m.pointee.last_layer = UInt32(st.layers.upperBound - 1)
            m.pointee.peak_device_bytes = UInt64(max(0, st.peakDeviceBytes))
            m.pointee.capacity_bytes = UInt64(max(0, st.capacityBytes))
            m.pointee.predicted_peak_bytes = WireEncode.saturatingUInt64(st.predictedPeakBytes)
            m.pointee.compute_seconds = st.computeSeconds
            m.pointee.stage_seconds_per_micro_batch = st.stageSecondsPerMicroBatch
            m.pointee.swapped_bytes = UInt64(max(0, st.swappedBytes))
            m.pointee.recomputed_layers = UInt32(clamping: st.recomputedLayers)
            stages[i] = m
        }
        message.pointee.n_stages = s.stages.count
        message.pointee.stages = stages
        let profiles = arena.allocate(UnsafeMutablePointer<Vpipe__LayerProfile>?.self, count: s.measuredProfiles.count)
        for (l, p) in s.measuredProfiles.enumerated() { profiles[l] = WireEncode.fill(p, arena) }
        message.pointee.n_measured_profiles = s.measuredProfiles.count
        message.pointee.measured_profiles = profiles
        if let plan = s.plan { message.pointee.plan = WireEncode.fill(plan, arena) }
        let decisions = arena.allocate(UnsafeMutablePointer<Vpipe__MigrationDecision>?.self, count: s.decisions.count)
        for (k, d) in s.decisions.enumerated() {
            let m = arena.allocate(Vpipe__MigrationDecision.self, count: 1)
            vpipe__migration_decision__init(m)
            m.pointee.source = arena.string(d.source)
            m.pointee.iteration = UInt64(max(0, d.iteration))
            m.pointee.old_predicted_seconds = d.oldPredictedSeconds
            m.pointee.new_predicted_seconds = d.newPredictedSeconds
            m.pointee.applied = d.applied ? 1 : 0
            let moved = arena.allocate(UInt32.self, count: d.layersMoved.count)
            for (j, l) in d.layersMoved.enumerated() { moved[j] = UInt32(clamping: l) }
            m.pointee.n_layers_moved = d.layersMoved.count
            m.pointee.layers_moved = moved
            m.pointee.bytes_moved = UInt64(max(0, d.bytesMoved))
            m.pointee.stall_seconds = d.stallSeconds
            m.pointee.iteration_seconds_before = d.iterationSecondsBefore
            m.pointee.iteration_seconds_after = d.iterationSecondsAfter
            m.pointee.note = arena.string(d.note)
            decisions[k] = m
        }
        message.pointee.n_decisions = s.decisions.count
        message.pointee.decisions = decisions
        return WireEncode.pack(message, size: vpipe__session_stats__get_packed_size, pack: vpipe__session_stats__pack)
    }

    public static func layerParameters(layer: Int, _ tensors: [(shape: [Int], values: [Float])]) -> [UInt8] {
        let arena = CArena()
        let message = arena.allocate(Vpipe__LayerParameters.self, count: 1)
        vpipe__layer_parameters__init(message)
        message.pointee.layer = UInt32(clamping: layer)
        let list = arena.allocate(UnsafeMutablePointer<Vpipe__TensorData>?.self, count: tensors.count)
        for (k, t) in tensors.enumerated() {
            let m = arena.allocate(Vpipe__TensorData.self, count: 1)
            vpipe__tensor_data__init(m)
            let shape = arena.allocate(UInt32.self, count: t.shape.count)
            for (d, v) in t.shape.enumerated() { shape[d] = UInt32(clamping: v) }
            m.pointee.n_shape = t.shape.count
            m.pointee.shape = shape
            let values = arena.allocate(Float.self, count: t.values.count)
            t.values.withUnsafeBufferPointer { values.update(from: $0.baseAddress!, count: t.values.count) }
            m.pointee.n_values = t.values.count
            m.pointee.values = values
            list[k] = m
        }
        message.pointee.n_tensors = tensors.count
        message.pointee.tensors = list
        return WireEncode.pack(message, size: vpipe__layer_parameters__get_packed_size, pack: vpipe__layer_parameters__pack)
    }

    public static func layerParameters(_ bytes: UnsafeRawBufferPointer) throws -> [(shape: [Int], values: [Float])] {
        try WireDecode.unpack(bytes, type: "vpipe.LayerParameters", unpack: vpipe__layer_parameters__unpack,
                              free: vpipe__layer_parameters__free_unpacked) { m in
            try WireDecode.repeated(m.pointee.tensors, m.pointee.n_tensors, field: "tensors").map { t in
                let shape = (0..<t.pointee.n_shape).map { Int(t.pointee.shape[$0]) }
                let values = Array(UnsafeBufferPointer(start: t.pointee.values, count: t.pointee.n_values))
                return (shape, values)
            }
        }
    }
}
