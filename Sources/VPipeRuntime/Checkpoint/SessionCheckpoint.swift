import VPipeCore
#if canImport(Glibc)
import Glibc
#endif

/// Saving and resuming a session's whole training state (docs/checkpoint.md).
///
/// What training depends on, and where it goes: each layer's parameters and optimizer state
/// (SGD momentum, Adam m and v) by model layer, not by stage, so that a checkpoint loads into
/// any plan; the iteration (a choice block's active option, the host's data position) and
/// the optimizer step count (Adam's bias correction); PIPEDREAM_ASYNC's weight versions (the
/// update count each stage's optimizer uses; the iteration ends with a drain, so no stashed
/// copy is in flight at a step boundary); the plan; the profiler's and re-planner's
/// measurements. Layers draw no random numbers after initialisation (their weights come
/// from `RNG(seed, layer index)` once), so there is no generator state to keep: the seed is
/// stored and checked.
extension TrainingSession {
    /// Writes the session's training state to `path`, atomically: a crash mid-write leaves
    /// the previous checkpoint at `path` intact. Between steps only (the ABI serialises
    /// calls on a session). With TRANSPORT_MPI every rank must call it with the same path
    /// between the same two steps: each rank writes its stages' shard, then rank 0 the
    /// manifest at `path`, which is what a load reads first. `timing`, when given, receives
    /// where the time went (the bench).
    public func save(to path: String, timing: CheckpointTiming? = nil) throws {
        let codec = try requireCodec()
        if let t = pipeline.transport as? MPITransport {
            try saveDistributed(to: path, codec: codec, transport: t, timing: timing)
            return
        }
        var meta = timing.measure(\.serialise) { metadataHeader() }
        let writer = try CheckpointWriter(path: path, codec: codec, timing: timing)
        do {
            meta.layers = try writeLayers(writer)
            _ = try writer.finish(meta)
        } catch {
            writer.abandon()
            throw error
        }
    }

    /// Resumes the training state saved at `path` (a file written by `save`, or an MPI
    /// manifest and its shards, whatever the world size that wrote them). Everything is
    /// checked first — format version, checksums, the model's layers (names, kinds, shapes),
    /// the optimizer — and a refused checkpoint leaves the session untouched. A session
    /// opened with a plan keeps it (resuming under another plan); one opened without a plan
    /// and still profiling takes the checkpoint's. With TRANSPORT_MPI every rank calls it;
    /// if any rank refuses, every rank does (naming the rank and why).
    public func load(from path: String, timing: CheckpointTiming? = nil) throws {
        let codec = try requireCodec()
        let mpi = pipeline.transport as? MPITransport
        let prepare = { [self] () -> Result<PreparedLoad, Error> in
            // The blobs' CRCs are timed as `verify`, everything else here as `open`.
            let verifying = timing?.verify ?? 0, t0 = monotonicSeconds()
            defer { timing?.open += monotonicSeconds() - t0 - ((timing?.verify ?? 0) - verifying) }
            return Result { try prepareLoad(path, codec: codec, timing: timing) }
        }
        // Under MPI the checks run while this rank keeps answering its peers (a long read is
        // not a dead rank).
        let outcome = try mpi.map { try $0.answeringPeers(while: "reading the checkpoint", prepare) } ?? prepare()
        var prepared: PreparedLoad?
        var localError: Error?
        switch outcome {
        case let .success(p): prepared = p
        case let .failure(e): localError = e
        }
        if let mpi {
            let verdicts = try CheckpointCollective.exchange(localError.map { "\($0)" }, transport: mpi, "exchanging whether every rank can load the checkpoint")
            if let (rank, why) = verdicts.enumerated().compactMap({ r, v in v.map { (r, $0) } }).first {
                if let localError { throw localError }
                throw CheckpointError.mismatch(path: path, "rank \(rank) refused it, so no rank loads it: \(why)")
            }
        }
        if let localError { throw localError }
        guard let prepared else { return }
        try timing.measure(\.copy) { try apply(prepared) }
    }

    // MARK: - writing

    private func requireCodec() throws -> CheckpointCodec {
        guard let codec = config.checkpointCodec else {
            throw VPipeError.invalidField(field: "checkpoint", message: "the session has no checkpoint codec (open it through the wire layer: WireSession.sessionConfig or vp_session_open)")
        }
        return codec
    }

    var optimizerName: String {
        switch config.training.optimizer {
        case let .sgd(_, momentum): return momentum == 0 ? "sgd" : "sgd+momentum"
        case .adam: return "adam"
        }
    }

    private func metadataHeader() -> CheckpointMetadata {
        var meta = CheckpointMetadata()
        meta.modelName = config.model.name
        meta.layerCount = config.model.layers.count
        meta.iteration = pipeline.iteration
        meta.optimizerSteps = pipeline.optimizerSteps
        meta.seed = config.training.seed
        meta.schedule = config.training.schedule
        meta.microBatches = config.training.microBatches
        meta.optimizer = optimizerName
        meta.plan = pipeline.layout
        meta.profiler = profilerRecord()
        meta.worldSize = (pipeline.transport as? MPITransport)?.size ?? 1
        if let p = pendingRecord() { (meta.pendingPlan, meta.pendingSource) = (p.layout, p.source) }
        return meta
    }

    /// Streams every layer this process holds into `writer`, by model layer.
    private func writeLayers(_ writer: CheckpointWriter) throws -> [CheckpointMetadata.Layer] {
        var out: [CheckpointMetadata.Layer] = []
        for (l, spec) in config.model.layers.enumerated() {
            guard let layer = pipeline.layers[l] else { continue }
            let state = pipeline.optimizerState[l]
            let perParameter = state.first?.count ?? 0
            let version = pipeline.stages.first { $0.layers.contains(l) }?.weightVersion ?? 0
            out.append(CheckpointMetadata.Layer(
                index: l, name: spec.name, kind: spec.kind?.checkpointName ?? "",
                parameters: try layer.parameters.map { try writer.blob($0) },
                optimizerState: try state.flatMap { try $0.map { try writer.blob($0) } },
                statePerParameter: perParameter, weightVersion: version))
        }
        return out
    }

    /// Each rank writes `<path>.it<iteration>.rank<r>` (atomically), the ranks exchange what
    /// they wrote, and rank 0 commits the manifest at `path` only when every shard is on
    /// disk: a rank that dies mid-save leaves the previous manifest, and its shards, intact.
    /// The shards a manifest no longer names are removed afterwards, each by its rank.
    private func saveDistributed(to path: String, codec: CheckpointCodec, transport t: MPITransport, timing: CheckpointTiming?) throws {
        let base = CheckpointPaths.fileName(path)
        let shardName = "\(base).it\(pipeline.iteration).rank\(t.rank)"
        let shardPath = CheckpointPaths.sibling(of: path, named: shardName)
        // Written while this rank keeps answering its peers (a long write is not a dead rank).
        let mine: String = try t.answeringPeers(while: "writing its checkpoint shard") { [self] in
            // A shard has a new name every save, so the one it supersedes is not the file at
            // its path: its cached pages are dropped here instead (see AtomicFile).
            for stale in CheckpointPaths.staleShards(of: path, rank: t.rank, keeping: shardName) {
                AtomicFile.dropCachedPages(of: CheckpointPaths.sibling(of: path, named: stale))
            }
            var meta = timing.measure(\.serialise) { metadataHeader() }
            do {
                let writer = try CheckpointWriter(path: shardPath, codec: codec, timing: timing)
                do {
                    meta.layers = try writeLayers(writer)
                    let (bytes, crc) = try writer.finish(meta)
                    return "ok \(bytes) \(crc) " + meta.layers.map { String($0.index) }.joined(separator: ",")
                } catch {
                    writer.abandon()
                    throw error
                }
            } catch {
                return "error \(error)"
            }
        }
        CheckpointTestHooks.afterShardWritten?()
        // Bounded: a rank that died during the save fails every rank here, naming it, and
        // the previous manifest (and its shards) stands.
        let reports = try CheckpointCollective.exchange(mine, transport: t, "exchanging the checkpoint shards' reports")
        var shards: [CheckpointMetadata.Shard] = []
        for (r, report) in reports.enumerated() {
            let parts = (report ?? "").split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
            guard parts.count >= 3, parts[0] == "ok", let bytes = Int(parts[1]), let crc = UInt32(parts[2]) else {
                let why = (report ?? "").hasPrefix("error ") ? String((report ?? "").dropFirst(6)) : (report ?? "no report")
                throw CheckpointError.io(path: path, "rank \(r) could not write its shard, so the manifest was not updated (the previous checkpoint stands): \(why)")
            }
            let layers = parts.count > 3 ? parts[3].split(separator: ",").compactMap { Int($0) } : []
            shards.append(CheckpointMetadata.Shard(file: "\(base).it\(pipeline.iteration).rank\(r)", rank: r, layers: layers, bytes: bytes, metadataCRC: crc))
        }
        var manifestError: String?
        if t.rank == 0 {
            do {
                var manifest = metadataHeader()
                manifest.shards = shards
                let writer = try CheckpointWriter(path: path, codec: codec)
                do { _ = try writer.finish(manifest) } catch { writer.abandon(); throw error }
            } catch {
                manifestError = "\(error)"
            }
        }
        let verdict = try CheckpointCollective.exchange(manifestError, transport: t, from: [0], "waiting for rank 0's checkpoint manifest")
        if let why = verdict[0] { throw CheckpointError.io(path: path, "rank 0 could not write the manifest (the previous checkpoint stands): \(why)") }
        CheckpointPaths.removeStaleShards(of: path, rank: t.rank, keeping: shardName)
    }

    // MARK: - reading

    /// A checked checkpoint, ready to be applied without further failure.
    struct PreparedLoad {
        var metadata: CheckpointMetadata
        /// Per local layer: verified parameter values and optimizer state, model order.
        var layers: [Int: (record: CheckpointMetadata.Layer, parameters: [UnsafeBufferPointer<Float>], state: [UnsafeBufferPointer<Float>])]
        /// Keeps the mappings alive while the values are copied.
        var readers: [CheckpointReader]
        /// The measurements to resume with: this rank's own (its shard's) when the
        /// checkpoint was written by as many ranks on the same plan, else the manifest's
        /// counters with an empty re-planning window (see `profilerToRestore`).
        var profiler: CheckpointMetadata.Profiler
    }

    private func prepareLoad(_ path: String, codec: CheckpointCodec, timing: CheckpointTiming?) throws -> PreparedLoad {
        let top = try CheckpointReader(path: path, codec: codec, timing: timing)
        let meta = top.metadata
        let model = config.model
        guard meta.layerCount == model.layers.count else {
            throw CheckpointError.mismatch(path: path, "it holds a model of \(meta.layerCount) layers (\"\(meta.modelName)\"), the session's has \(model.layers.count) (\"\(model.name)\")")
        }
        guard meta.optimizer == optimizerName else {
            throw CheckpointError.mismatch(path: path, "its optimizer state is for \(meta.optimizer), the session trains with \(optimizerName)")
        }
        guard meta.seed == config.training.seed else {
            throw CheckpointError.mismatch(path: path, "it was trained with seed \(meta.seed), the session has training.seed \(config.training.seed)")
        }
        // Where each layer is: in this file, or in a shard the manifest names.
        var readers = [top]
        var ownShard: CheckpointReader?
        var source: [Int: (reader: CheckpointReader, record: CheckpointMetadata.Layer)] = [:]
        for record in meta.layers { source[record.index] = (top, record) }
        let local = pipeline.layers.indices.filter { pipeline.layers[$0] != nil }
        if !meta.shards.isEmpty {
            let needed = Set(local)
            for shard in meta.shards where !needed.isDisjoint(with: shard.layers) {
                let shardPath = CheckpointPaths.sibling(of: path, named: shard.file)
                let reader = try CheckpointReader(path: shardPath, codec: codec, timing: timing)
                guard reader.size == shard.bytes, reader.metadataCRC == shard.metadataCRC else {
                    throw CheckpointError.damaged(path: shardPath, "the manifest \(path) expects \(shard.bytes) bytes with metadata CRC-32 \(hex(shard.metadataCRC)), found \(reader.size) bytes with \(hex(reader.metadataCRC)) (a shard of another save?)")
                }
                readers.append(reader)
                if shard.rank == pipeline.transport.rank { ownShard = reader }
                for record in reader.metadata.layers { source[record.index] = (reader, record) }
            }
        }
        var layers: [Int: (record: CheckpointMetadata.Layer, parameters: [UnsafeBufferPointer<Float>], state: [UnsafeBufferPointer<Float>])] = [:]
        for l in local {
            guard let layer = pipeline.layers[l] else { continue }
            let spec = model.layers[l]
            guard let (reader, record) = source[l] else {
                throw CheckpointError.damaged(path: path, "layer \(l) (\"\(spec.name)\") is in none of its files")
            }
            let what = "layer \(l)"
            guard record.name == spec.name else {
                throw CheckpointError.mismatch(path: path, "\(what) is \"\(record.name)\" in the checkpoint, \"\(spec.name)\" in the session's model")
            }
            let kind = spec.kind?.checkpointName ?? ""
            guard record.kind == kind else {
                throw CheckpointError.mismatch(path: path, "\(what) (\"\(spec.name)\") is \(record.kind) in the checkpoint, \(kind) in the session's model")
            }
            let params = layer.parameters
            guard record.parameters.count == params.count else {
                throw CheckpointError.mismatch(path: path, "\(what) (\"\(spec.name)\") has \(record.parameters.count) parameter tensors in the checkpoint, \(params.count) in the session")
            }
            for (k, (b, p)) in zip(record.parameters, params).enumerated() where b.shape != p.shape {
                throw CheckpointError.mismatch(path: path, "\(what) (\"\(spec.name)\") tensor \(k) has shape \(b.shape) in the checkpoint, \(p.shape) in the session")
            }
            let state = pipeline.optimizerState[l]
            let perParameter = state.first?.count ?? 0
            guard record.statePerParameter == perParameter, record.optimizerState.count == perParameter * params.count else {
                throw CheckpointError.mismatch(path: path, "\(what) (\"\(spec.name)\") has \(record.optimizerState.count) optimizer state tensors, the session's \(optimizerName) keeps \(perParameter * params.count)")
            }
            for (k, b) in record.optimizerState.enumerated() where b.shape != params[k / max(1, perParameter)].shape {
                throw CheckpointError.mismatch(path: path, "\(what) (\"\(spec.name)\") optimizer state tensor \(k) has shape \(b.shape), expected \(params[k / max(1, perParameter)].shape)")
            }
            let values = try record.parameters.enumerated().map { k, b in try reader.verify(b, "\(what) (\"\(spec.name)\") parameter tensor \(k)", finite: true) }
            let moments = try record.optimizerState.enumerated().map { k, b in try reader.verify(b, "\(what) (\"\(spec.name)\") optimizer state tensor \(k)") }
            layers[l] = (record, values, moments)
        }
        // PIPEDREAM_ASYNC: the layers of a stage share its update count.
        for stage in pipeline.stages {
            let versions = Set(stage.layers.compactMap { layers[$0]?.record.weightVersion })
            guard versions.count <= 1 else {
                throw CheckpointError.mismatch(path: path, "stage \(stage.index)'s layers \(stage.layers) have weight versions \(versions.sorted()) in the checkpoint; under PIPEDREAM_ASYNC the layers of a stage must share one")
            }
        }
        return PreparedLoad(metadata: meta, layers: layers, readers: readers, profiler: profilerToRestore(meta, ownShard: ownShard?.metadata))
    }

    /// Across processes each rank measured only its own stage: its window (per-layer times,
    /// stage speeds) is in its shard, the manifest holds rank 0's. Resumed by as many ranks on
    /// the same plan, each rank takes its own shard's, so the next re-plan merges every
    /// rank's measurements as the uninterrupted run would have; otherwise the windows do not
    /// map onto the new stages and the re-planner starts a fresh window (the counters come
    /// from the manifest either way).
    private func profilerToRestore(_ meta: CheckpointMetadata, ownShard: CheckpointMetadata?) -> CheckpointMetadata.Profiler {
        guard !meta.shards.isEmpty else { return meta.profiler }
        if meta.worldSize == pipeline.transport.processCount, meta.plan == pipeline.layout, let own = ownShard?.profiler {
            return own
        }
        var p = meta.profiler
        (p.windowForwardSeconds, p.windowBackwardSeconds, p.windowIterations, p.windowIterationSeconds, p.stageSpeed, p.calibrationBaseline) = ([], [], 0, [], [], 0)
        return p
    }

    /// Copies a checked checkpoint into the session. Only the placement of a profiling
    /// session can fail (its arenas), and it comes first.
    private func apply(_ p: PreparedLoad) throws {
        try restorePlacement(p.metadata.plan, profilingInCheckpoint: p.metadata.profiler.profiling)
        for (l, entry) in p.layers {
            guard let layer = pipeline.layers[l] else { continue }
            // Gradients are left as they are: zero, as between any two steps (the optimizer
            // zeroes what it applied and a failed step zeroes all, Pipeline.step); zeroing them
            // again wrote another quarter of the parameter memory (with Adam) on every load.
            for (t, values) in zip(layer.parameters, entry.parameters) { t.device.upload(values, to: t) }
            for (k, values) in entry.state.enumerated() {
                let per = max(1, entry.record.statePerParameter)
                let t = pipeline.optimizerState[l][k / per][k % per]
                t.device.upload(values, to: t)
            }
        }
        for stage in pipeline.stages {
            if let v = stage.layers.lazy.compactMap({ p.layers[$0]?.record.weightVersion }).first { stage.weightVersion = v }
        }
        pipeline.restoreCounters(iteration: p.metadata.iteration, optimizerSteps: p.metadata.optimizerSteps)
        let onSavedPlan = pipeline.layout == p.metadata.plan
        restoreProfiler(p.profiler, onSavedPlan: onSavedPlan)
        // A migration pending at the save starts at the next step, when the run resumes on
        // the plan it was decided for; resumed under another plan it no longer applies.
        if let pending = p.metadata.pendingPlan, onSavedPlan,
           pending.ranges.count == pipeline.layout.ranges.count {
            restorePending(pending, source: p.metadata.pendingSource, savedAt: p.metadata.iteration)
        }
    }
}

/// File names of a checkpoint and its shards.
enum CheckpointPaths {
    static func fileName(_ path: String) -> String {
        path.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? path
    }

    static func sibling(of path: String, named name: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return name }
        return String(path[...slash]) + name
    }

    /// This rank's shards of `path` other than `keeping` (`<name>.it<N>.rank<r>`): those of
    /// earlier saves, removed once a newer manifest names `keeping`.
    static func staleShards(of path: String, rank: Int, keeping: String) -> [String] {
        let dir = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let prefix = fileName(path) + ".it", suffix = ".rank\(rank)"
        guard let d = opendir(dir.isEmpty ? "/" : dir) else { return [] }
        defer { closedir(d) }
        var stale: [String] = []
        while let entry = readdir(d) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix(prefix), name.hasSuffix(suffix), name != keeping,
               Int(name.dropFirst(prefix.count).dropLast(suffix.count)) != nil {
                stale.append(name)
            }
        }
        return stale
    }

    static func removeStaleShards(of path: String, rank: Int, keeping: String) {
        for name in staleShards(of: path, rank: rank, keeping: keeping) { unlink(sibling(of: path, named: name)) }
    }
}
