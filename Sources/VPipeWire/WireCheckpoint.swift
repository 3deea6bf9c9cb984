import CVPipeProto
import VPipeCore
import VPipeRuntime

/// Checkpoint metadata <-> protobuf `vpipe.Checkpoint` (the runtime writes the file around it).
public enum WireCheckpoint {
    /// The codec a session saves and loads with (set by `WireSession.sessionConfig`).
    public static let codec = CheckpointCodec(encode: { encode($0) }, decode: { try decode($0) })

    public static func encode(_ meta: CheckpointMetadata) -> [UInt8] {
        let arena = CArena()
        let m = arena.allocate(Vpipe__Checkpoint.self, count: 1)
        vpipe__checkpoint__init(m)
        m.pointee.format_version = UInt32(clamping: meta.formatVersion)
        m.pointee.model_name = arena.string(meta.modelName)
        m.pointee.layer_count = UInt32(clamping: meta.layerCount)
        m.pointee.iteration = UInt64(clamping: meta.iteration)
        m.pointee.optimizer_steps = UInt64(clamping: meta.optimizerSteps)
        m.pointee.seed = meta.seed
        m.pointee.schedule = Vpipe__Schedule(rawValue: .init(meta.schedule.rawValue))
        m.pointee.micro_batches = UInt32(clamping: meta.microBatches)
        m.pointee.optimizer = arena.string(meta.optimizer)
        m.pointee.plan = plan(meta.plan, schedule: meta.schedule, microBatches: meta.microBatches, arena)
        m.pointee.profiler = profiler(meta.profiler, arena)
        m.pointee.n_layers = meta.layers.count
        m.pointee.layers = list(meta.layers, arena) { layer($0, arena) }
        m.pointee.n_shards = meta.shards.count
        m.pointee.shards = list(meta.shards, arena) { s in
            let p = arena.allocate(Vpipe__CheckpointShard.self, count: 1)
            vpipe__checkpoint_shard__init(p)
            p.pointee.file = arena.string(s.file)
            p.pointee.rank = UInt32(clamping: s.rank)
            p.pointee.n_layers = s.layers.count
            p.pointee.layers = values(s.layers.map { UInt32(clamping: $0) }, arena)
            p.pointee.bytes = UInt64(clamping: s.bytes)
            p.pointee.metadata_crc32 = s.metadataCRC
            return p
        }
        m.pointee.world_size = UInt32(clamping: meta.worldSize)
        if let pending = meta.pendingPlan {
            m.pointee.pending_plan = plan(pending, schedule: meta.schedule, microBatches: meta.microBatches, arena)
            m.pointee.pending_source = arena.string(meta.pendingSource)
        }
        return WireEncode.pack(m, size: vpipe__checkpoint__get_packed_size, pack: vpipe__checkpoint__pack)
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws -> CheckpointMetadata {
        try WireDecode.unpack(bytes, type: "vpipe.Checkpoint", unpack: vpipe__checkpoint__unpack, free: vpipe__checkpoint__free_unpacked) { m in
            var meta = CheckpointMetadata()
            meta.formatVersion = Int(m.pointee.format_version)
            meta.modelName = WireDecode.string(m.pointee.model_name)
            meta.layerCount = Int(m.pointee.layer_count)
            meta.iteration = try int(m.pointee.iteration, "iteration")
            meta.optimizerSteps = try int(m.pointee.optimizer_steps, "optimizer_steps")
            meta.seed = m.pointee.seed
            meta.optimizer = WireDecode.string(m.pointee.optimizer)
            if let p = m.pointee.plan {
                let d = try WireDecode.plan(p, field: "checkpoint.plan.")
                (meta.schedule, meta.microBatches, meta.plan) = (d.schedule, d.microBatches, d.layout)
            }
            if let p = m.pointee.profiler { meta.profiler = try profiler(p) }
            meta.layers = try WireDecode.repeated(m.pointee.layers, m.pointee.n_layers, field: "checkpoint.layers").enumerated().map { i, l in
                try layer(l, field: "checkpoint.layers[\(i)]")
            }
            meta.shards = try WireDecode.repeated(m.pointee.shards, m.pointee.n_shards, field: "checkpoint.shards").enumerated().map { i, s in
                let file = WireDecode.string(s.pointee.file)
                // A shard lies beside its manifest: a name with a path in it is refused.
                guard !file.isEmpty, !file.contains("/"), file != ".", file != ".." else {
                    throw VPipeError.invalidField(field: "checkpoint.shards[\(i)].file", message: "must be a plain file name, got \"\(file)\"")
                }
                return CheckpointMetadata.Shard(file: file, rank: Int(s.pointee.rank),
                                                layers: try scalars(s.pointee.layers, s.pointee.n_layers, "checkpoint.shards[\(i)].layers").map { Int($0) },
                                                bytes: try int(s.pointee.bytes, "checkpoint.shards[\(i)].bytes"), metadataCRC: s.pointee.metadata_crc32)
            }
            meta.worldSize = Int(m.pointee.world_size)
            if let p = m.pointee.pending_plan {
                meta.pendingPlan = try WireDecode.plan(p, field: "checkpoint.pending_plan.").layout
                meta.pendingSource = WireDecode.string(m.pointee.pending_source)
            }
            return meta
        }
    }

    // MARK: - parts

    static func plan(_ layout: PlanLayout, schedule: Schedule, microBatches: Int, _ arena: CArena) -> UnsafeMutablePointer<Vpipe__Plan> {
        let m = arena.allocate(Vpipe__Plan.self, count: 1)
        vpipe__plan__init(m)
        m.pointee.schedule = Vpipe__Schedule(rawValue: .init(schedule.rawValue))
        m.pointee.micro_batches = UInt32(clamping: microBatches)
        m.pointee.n_stages = layout.ranges.count
        m.pointee.stages = list(Array(layout.ranges.enumerated()), arena) { i, range in
            let sp = arena.allocate(Vpipe__StagePlan.self, count: 1)
            vpipe__stage_plan__init(sp)
            sp.pointee.device = UInt32(clamping: i)
            sp.pointee.first_layer = UInt32(clamping: range.lowerBound)
            sp.pointee.last_layer = UInt32(clamping: range.upperBound - 1)
            let policies = arena.allocate(Vpipe__MemoryPolicy.self, count: range.count)
            for (j, l) in range.enumerated() where l < layout.policies.count {
                policies[j] = Vpipe__MemoryPolicy(rawValue: .init(layout.policies[l].rawValue))
            }
            sp.pointee.n_policy = range.count
            sp.pointee.policy = policies
            return sp
        }
        return m
    }

    static func blob(_ b: CheckpointMetadata.Blob, _ arena: CArena) -> UnsafeMutablePointer<Vpipe__CheckpointBlob>? {
        let p = arena.allocate(Vpipe__CheckpointBlob.self, count: 1)
        vpipe__checkpoint_blob__init(p)
        p.pointee.n_shape = b.shape.count
        p.pointee.shape = values(b.shape.map { UInt64(clamping: $0) }, arena)
        p.pointee.offset = UInt64(clamping: b.offset)
        p.pointee.bytes = UInt64(clamping: b.bytes)
        p.pointee.crc32 = b.crc32
        return p
    }

    static func layer(_ l: CheckpointMetadata.Layer, _ arena: CArena) -> UnsafeMutablePointer<Vpipe__CheckpointLayer>? {
        let p = arena.allocate(Vpipe__CheckpointLayer.self, count: 1)
        vpipe__checkpoint_layer__init(p)
        p.pointee.index = UInt32(clamping: l.index)
        p.pointee.name = arena.string(l.name)
        p.pointee.kind = arena.string(l.kind)
        p.pointee.n_parameters = l.parameters.count
        p.pointee.parameters = list(l.parameters, arena) { blob($0, arena) }
        p.pointee.n_optimizer_state = l.optimizerState.count
        p.pointee.optimizer_state = list(l.optimizerState, arena) { blob($0, arena) }
        p.pointee.state_per_parameter = UInt32(clamping: l.statePerParameter)
        p.pointee.weight_version = UInt64(clamping: l.weightVersion)
        return p
    }

    /// Field paths are built only when a value is refused (a checkpoint holds thousands of
    /// blobs: naming each one eagerly cost more than reading the small checkpoints' values).
    static func layer(_ p: UnsafeMutablePointer<Vpipe__CheckpointLayer>, field: @autoclosure () -> String) throws -> CheckpointMetadata.Layer {
        func blobs(_ items: UnsafeMutablePointer<UnsafeMutablePointer<Vpipe__CheckpointBlob>?>?, _ n: Int, _ name: String) throws -> [CheckpointMetadata.Blob] {
            try WireDecode.repeated(items, n, field: "\(field()).\(name)").enumerated().map { k, b in
                func f() -> String { "\(field()).\(name)[\(k)]" }
                return CheckpointMetadata.Blob(shape: try scalars(b.pointee.shape, b.pointee.n_shape, "\(f()).shape").map { try int($0, "\(f()).shape") },
                                               offset: try int(b.pointee.offset, "\(f()).offset"), bytes: try int(b.pointee.bytes, "\(f()).bytes"),
                                               crc32: b.pointee.crc32)
            }
        }
        return CheckpointMetadata.Layer(
            index: Int(p.pointee.index), name: WireDecode.string(p.pointee.name), kind: WireDecode.string(p.pointee.kind),
            parameters: try blobs(p.pointee.parameters, p.pointee.n_parameters, "parameters"),
            optimizerState: try blobs(p.pointee.optimizer_state, p.pointee.n_optimizer_state, "optimizer_state"),
            statePerParameter: Int(p.pointee.state_per_parameter), weightVersion: try int(p.pointee.weight_version, "\(field()).weight_version"))
    }

    static func profiler(_ r: CheckpointMetadata.Profiler, _ arena: CArena) -> UnsafeMutablePointer<Vpipe__CheckpointProfiler> {
        let p = arena.allocate(Vpipe__CheckpointProfiler.self, count: 1)
        vpipe__checkpoint_profiler__init(p)
        p.pointee.profiling = r.profiling ? 1 : 0
        p.pointee.profiled_iterations = UInt64(clamping: r.profiledIterations)
        p.pointee.n_profile_sums = r.profileSums.count
        p.pointee.profile_sums = list(r.profileSums, arena) { WireEncode.fill($0, arena) }
        p.pointee.window_iterations = UInt64(clamping: r.windowIterations)
        p.pointee.n_window_forward_seconds = r.windowForwardSeconds.count
        p.pointee.window_forward_seconds = values(r.windowForwardSeconds, arena)
        p.pointee.n_window_backward_seconds = r.windowBackwardSeconds.count
        p.pointee.window_backward_seconds = values(r.windowBackwardSeconds, arena)
        p.pointee.n_window_iteration_seconds = r.windowIterationSeconds.count
        p.pointee.window_iteration_seconds = values(r.windowIterationSeconds, arena)
        p.pointee.n_stage_speed = r.stageSpeed.count
        p.pointee.stage_speed = values(r.stageSpeed, arena)
        p.pointee.calibration_baseline = r.calibrationBaseline
        p.pointee.workspace_bytes = UInt64(clamping: r.workspaceBytes)
        p.pointee.rows_per_micro_batch = UInt64(clamping: r.rowsPerMicroBatch)
        p.pointee.iterations = UInt64(clamping: r.iterations)
        p.pointee.total_seconds = r.totalSeconds
        p.pointee.last_loss = r.lastLoss
        p.pointee.hysteresis_windows = UInt64(clamping: r.hysteresisWindows)
        p.pointee.n_hysteresis_moves = r.hysteresisMoves.count
        p.pointee.hysteresis_moves = list(r.hysteresisMoves, arena) { m in
            let move = arena.allocate(Vpipe__CheckpointMove.self, count: 1)
            vpipe__checkpoint_move__init(move)
            move.pointee.layer = UInt32(clamping: m.layer)
            move.pointee.from_stage = UInt32(clamping: m.fromStage)
            move.pointee.window = UInt64(clamping: m.window)
            return move
        }
        return p
    }

    static func profiler(_ p: UnsafeMutablePointer<Vpipe__CheckpointProfiler>) throws -> CheckpointMetadata.Profiler {
        let f = "checkpoint.profiler"
        var r = CheckpointMetadata.Profiler()
        r.profiling = p.pointee.profiling != 0
        r.profiledIterations = try int(p.pointee.profiled_iterations, "\(f).profiled_iterations")
        r.profileSums = try WireDecode.repeated(p.pointee.profile_sums, p.pointee.n_profile_sums, field: "\(f).profile_sums").enumerated().map { i, s in
            LayerProfile(fwdSeconds: s.pointee.fwd_seconds, bwdSeconds: s.pointee.bwd_seconds,
                         stashBytes: try int(s.pointee.stash_bytes, "\(f).profile_sums[\(i)].stash_bytes"),
                         outputBytes: try int(s.pointee.output_bytes, "\(f).profile_sums[\(i)].output_bytes"),
                         paramBytes: try int(s.pointee.param_bytes, "\(f).profile_sums[\(i)].param_bytes"))
        }
        r.windowIterations = try int(p.pointee.window_iterations, "\(f).window_iterations")
        r.windowForwardSeconds = try scalars(p.pointee.window_forward_seconds, p.pointee.n_window_forward_seconds, "\(f).window_forward_seconds")
        r.windowBackwardSeconds = try scalars(p.pointee.window_backward_seconds, p.pointee.n_window_backward_seconds, "\(f).window_backward_seconds")
        guard r.windowForwardSeconds.count == r.windowBackwardSeconds.count else {
            throw VPipeError.invalidField(field: "\(f).window_backward_seconds", message: "\(r.windowBackwardSeconds.count) values, window_forward_seconds has \(r.windowForwardSeconds.count)")
        }
        r.windowIterationSeconds = try scalars(p.pointee.window_iteration_seconds, p.pointee.n_window_iteration_seconds, "\(f).window_iteration_seconds")
        r.stageSpeed = try scalars(p.pointee.stage_speed, p.pointee.n_stage_speed, "\(f).stage_speed")
        r.calibrationBaseline = p.pointee.calibration_baseline
        r.workspaceBytes = try int(p.pointee.workspace_bytes, "\(f).workspace_bytes")
        r.rowsPerMicroBatch = try int(p.pointee.rows_per_micro_batch, "\(f).rows_per_micro_batch")
        r.iterations = try int(p.pointee.iterations, "\(f).iterations")
        r.totalSeconds = p.pointee.total_seconds
        r.lastLoss = p.pointee.last_loss
        r.hysteresisWindows = try int(p.pointee.hysteresis_windows, "\(f).hysteresis_windows")
        r.hysteresisMoves = try WireDecode.repeated(p.pointee.hysteresis_moves, p.pointee.n_hysteresis_moves, field: "\(f).hysteresis_moves").enumerated().map { i, m in
            MigrationHysteresis.SavedMove(layer: Int(m.pointee.layer), fromStage: Int(m.pointee.from_stage),
                                          window: try int(m.pointee.window, "\(f).hysteresis_moves[\(i)].window"))
        }
        return r
    }

    // MARK: - helpers

    /// A C array of the message's repeated scalar field, as Swift values.
    static func scalars<T>(_ p: UnsafeMutablePointer<T>?, _ n: Int, _ field: @autoclosure () -> String) throws -> [T] {
        guard n > 0 else { return [] }
        guard let p else { throw VPipeError.invalidField(field: field(), message: "\(n) values announced but none present") }
        return Array(UnsafeBufferPointer(start: p, count: n))
    }

    static func int(_ v: UInt64, _ field: @autoclosure () -> String) throws -> Int {
        guard v <= UInt64(Int.max >> 2) else { throw VPipeError.invalidField(field: field(), message: "\(v) is out of range") }
        return Int(v)
    }

    static func values<T>(_ xs: [T], _ arena: CArena) -> UnsafeMutablePointer<T> {
        let p = arena.allocate(T.self, count: xs.count)
        for (i, x) in xs.enumerated() { p[i] = x }
        return p
    }

    static func list<T, M>(_ xs: [T], _ arena: CArena, _ make: (T) -> UnsafeMutablePointer<M>?) -> UnsafeMutablePointer<UnsafeMutablePointer<M>?> {
        let p = arena.allocate(UnsafeMutablePointer<M>?.self, count: xs.count)
        for (i, x) in xs.enumerated() { p[i] = make(x) }
        return p
    }
}
