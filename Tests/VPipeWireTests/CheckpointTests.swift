import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import VPipeCore
import VPipeRuntime
import VPipeWire

/// Checkpoint and resume (docs/checkpoint.md): train k steps, save, train n more; versus
/// load into a fresh session and train n. Losses and parameters must be bit-identical
/// (tolerance 0: the resumed session holds the same floats and runs the same kernels in
/// the same order), for every schedule and optimizer, with SWAP and RECOMPUTE layers, and
/// under another plan. Bad checkpoints are refused naming what is wrong, session untouched.
@Suite struct CheckpointTests {
    /// Linear(8→16) ReLU Linear(16→16) GELU Linear(16→4) loss: 6 layers.
    static let mlp = ModelSpec(name: "mlp", kinds: [
        .linear(inFeatures: 8, outFeatures: 16), .activation(.relu), .linear(inFeatures: 16, outFeatures: 16),
        .activation(.gelu), .linear(inFeatures: 16, outFeatures: 4), .softmaxCrossEntropy])
    static let keep = Array(repeating: MemoryPolicy.keep, count: 6)
    static let mixed: [MemoryPolicy] = [.keep, .swap, .recompute, .recompute, .swap, .keep]
    static let sgd = TrainingOptions.OptimizerChoice.sgd(learningRate: 0.05, momentum: 0.9)
    static let adam = TrainingOptions.OptimizerChoice.adam(learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8)

    static func session(_ layout: PlanLayout?, schedule: Schedule = .oneFOneB, optimizer: TrainingOptions.OptimizerChoice = adam,
                        model: ModelSpec = mlp, seed: UInt64 = 7, devices: Int? = nil) throws -> TrainingSession {
        let p = devices ?? layout?.ranges.count ?? 2
        var training = TrainingOptions(schedule: schedule, microBatches: 4, seed: seed, optimizer: optimizer)
        training.profileIterations = 2
        return try TrainingSession(SessionConfig(
            model: model, cluster: .uniform(count: p, device: DeviceSpec(name: "cpu", memoryBytes: 1 << 30, hostBandwidth: 1e10), link: LinkSpec(bandwidth: 1e10)),
            plan: layout, training: training, checkpointCodec: WireCheckpoint.codec))
    }

    /// Step `k` (1-based) of a fixed data stream, as `vpipe train` feeds it.
    @discardableResult
    static func step(_ s: TrainingSession, _ k: Int) throws -> Float {
        var state = UInt64(k % 3 + 1) &* 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }
        let x: [Float] = (0..<(32 * 8)).map { _ in Float(Int(next() % 2000) - 1000) / 1000 }
        let y: [Int32] = (0..<32).map { _ in Int32(next() % 4) }
        return try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try s.step(inputs: xs, targets: ys) } }
    }

    static func parameters(_ s: TrainingSession) throws -> [[UInt32]] {
        try (0..<6).flatMap { l in try s.parameters(layer: l).map { $0.values.map(\.bitPattern) } }
    }

    static func temporaryPath(_ name: String) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vpipe-checkpoint-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent(name).path
    }

    static func plan(_ starts: [Int], _ policies: [MemoryPolicy]) -> PlanLayout {
        PlanLayout(stageStarts: starts, layerCount: 6, policies: policies)
    }

    /// k steps, save, n steps on the original; a fresh session (on `resumeLayout`) loads and
    /// runs the same n steps. Returns both trajectories and final parameters.
    static func resume(_ layout: PlanLayout, into resumeLayout: PlanLayout? = nil, schedule: Schedule, optimizer: TrainingOptions.OptimizerChoice,
                       k: Int = 3, n: Int = 3, name: String) throws
        -> (continued: [Float], resumed: [Float], continuedParameters: [[UInt32]], resumedParameters: [[UInt32]])
    {
        let path = temporaryPath(name)
        defer { unlink(path) }
        let original = try session(layout, schedule: schedule, optimizer: optimizer)
        for i in 1...k { try step(original, i) }
        try original.save(to: path)
        let continued = try (k + 1...k + n).map { try step(original, $0) }
        let fresh = try session(resumeLayout ?? layout, schedule: schedule, optimizer: optimizer)
        try fresh.load(from: path)
        #expect(fresh.statistics().iterations == k)
        let resumed = try (k + 1...k + n).map { try step(fresh, $0) }
        return (continued, resumed, try parameters(original), try parameters(fresh))
    }

    static func bits(_ xs: [Float]) -> [UInt32] { xs.map(\.bitPattern) }

    @Test(arguments: [Schedule.gpipe, .oneFOneB, .pipedreamAsync], [false, true])
    func resumeIsExact(schedule: Schedule, swapAndRecompute: Bool) throws {
        for (name, optimizer) in [("sgd", Self.sgd), ("adam", Self.adam)] {
            let layout = Self.plan([0, 3], swapAndRecompute ? Self.mixed : Self.keep)
            let r = try Self.resume(layout, schedule: schedule, optimizer: optimizer, name: "exact-\(schedule.name)-\(name)-\(swapAndRecompute)")
            #expect(Self.bits(r.resumed) == Self.bits(r.continued), "\(schedule.name) \(name): resumed losses \(r.resumed), continued \(r.continued)")
            #expect(r.resumedParameters == r.continuedParameters, "\(schedule.name) \(name): parameters differ after resuming")
        }
    }

    @Test func asyncResumeKeepsTheWeightVersions() throws {
        let path = Self.temporaryPath("async-versions")
        defer { unlink(path) }
        let original = try Self.session(Self.plan([0, 3], Self.keep), schedule: .pipedreamAsync)
        for i in 1...2 { try Self.step(original, i) }
        try original.save(to: path)
        try Self.step(original, 3)
        let fresh = try Self.session(Self.plan([0, 3], Self.keep), schedule: .pipedreamAsync)
        try fresh.load(from: path)
        try Self.step(fresh, 3)
        let a = original.lastWeightVersions.map { $0.mapValues { [$0.forward, $0.backward] } }
        let b = fresh.lastWeightVersions.map { $0.mapValues { [$0.forward, $0.backward] } }
        #expect(a == b && !a.isEmpty, "weight versions continued \(a), resumed \(b)")
        #expect(a.first?[0]?.first == 8, "the third iteration's first micro-batch should see version 8 (2 iterations × 4 updates), saw \(String(describing: a.first?[0]))")
    }

    /// Layers are stored by model layer: a 2-stage checkpoint resumes on 1, 3 and 4 stages
    /// with other partitions and policies, and the losses are those of the old plan.
    @Test(arguments: [Schedule.gpipe, .oneFOneB])
    func resumeUnderAnotherPlan(schedule: Schedule) throws {
        let old = Self.plan([0, 3], Self.keep)
        for other in [Self.plan([0], Self.mixed), Self.plan([0, 1, 4], Self.mixed), Self.plan([0, 2, 3, 5], [.swap, .keep, .recompute, .recompute, .keep, .keep])] {
            let r = try Self.resume(old, into: other, schedule: schedule, optimizer: Self.adam, name: "replan-\(schedule.name)-\(other.ranges.count)")
            #expect(Self.bits(r.resumed) == Self.bits(r.continued), "\(other.ranges.count) stages: resumed \(r.resumed), continued on the old plan \(r.continued)")
            #expect(r.resumedParameters == r.continuedParameters)
        }
    }

    /// A session opened without a plan (profiling) resumes on the checkpoint's plan, and a
    /// checkpoint taken while profiling resumes profiling where it was.
    @Test func sessionsWithoutAPlanResumeOnTheCheckpointsPlan() throws {
        for k in [1, 3] {
            let path = Self.temporaryPath("profiling-\(k)")
            defer { unlink(path) }
            let original = try Self.session(nil)
            for i in 1...k { try Self.step(original, i) }
            try original.save(to: path)
            let measured = original.measuredProfiles
            let continued = try (k + 1...k + 3).map { try Self.step(original, $0) }
            let fresh = try Self.session(nil)
            try fresh.load(from: path)
            // The profiler's measurements come back as they were (times too, not re-measured).
            #expect(fresh.measuredProfiles.map(\.fwdSeconds) == measured.map(\.fwdSeconds) && fresh.measuredProfiles.map(\.stashBytes) == measured.map(\.stashBytes),
                    "k=\(k): measured profiles after loading \(fresh.measuredProfiles.map(\.fwdSeconds)), saved \(measured.map(\.fwdSeconds))")
            #expect(fresh.isProfiling == (k < 2), "after \(k) steps the session should \(k < 2 ? "still" : "no longer") profile")
            let resumed = try (k + 1...k + 3).map { try Self.step(fresh, $0) }
            #expect(Self.bits(resumed) == Self.bits(continued), "k=\(k): resumed \(resumed), continued \(continued)")
            if k == 3 { #expect(fresh.statistics().plan?.layout == original.statistics().plan?.layout) }
        }
    }

    /// A migration requested (vp_session_apply_plan) and not started when the checkpoint was
    /// taken is in it: resumed on the same plan it starts at the next step, exactly as in
    /// the uninterrupted run; resumed under another plan it no longer applies.
    @Test func aPendingMigrationIsSavedAndStartsAfterTheLoad() throws {
        let path = Self.temporaryPath("pending")
        defer { unlink(path) }
        let a = try Self.session(Self.plan([0, 3], Self.keep))
        for i in 1...2 { try Self.step(a, i) }
        try a.applyPlan(Self.plan([0, 2], Self.keep))
        try a.save(to: path)
        let b = try Self.session(Self.plan([0, 3], Self.keep))
        try b.load(from: path)
        let restored = b.statistics().decisions
        #expect(restored.count == 1 && restored[0].source == "host" && !restored[0].applied && restored[0].note.contains("restored"),
                "expected the pending host request, restored and not yet applied; decisions: \(restored)")
        for i in 3...4 {
            let (la, lb) = (try Self.step(a, i), try Self.step(b, i))
            #expect(la.bitPattern == lb.bitPattern, "step \(i): loss \(la) uninterrupted, \(lb) resumed")
        }
        #expect(a.statistics().decisions.last?.applied == true && b.statistics().decisions.last?.applied == true,
                "the migration should have been applied in both runs: \(a.statistics().decisions) / \(b.statistics().decisions)")
        #expect(try Self.parameters(a) == Self.parameters(b))
        let c = try Self.session(Self.plan([0, 4], Self.keep))
        try c.load(from: path)
        #expect(c.statistics().decisions.isEmpty, "resumed under another plan the pending migration must not apply: \(c.statistics().decisions)")
    }

    /// The re-planner's state in a saved checkpoint (its profiler part).
    static func savedProfiler(_ path: String) throws -> CheckpointMetadata.Profiler {
        var profiler = CheckpointMetadata.Profiler()
        _ = try withMetadata([UInt8](Data(contentsOf: URL(fileURLWithPath: path)))) { profiler = $0.profiler }
        return profiler
    }

    /// Online re-planning's hold on recent moves (MigrationHysteresis) is in the checkpoint: a
    /// run that migrated, saved, and resumed on the same plan holds the moved layers as the
    /// uninterrupted run does (moving one back within 3 windows needs 4× the threshold), so it
    /// cannot undo a move the uninterrupted run keeps; under another plan the hold starts afresh.
    @Test func theReplannersHoldOnRecentMovesSurvivesALoad() throws {
        var training = TrainingOptions(schedule: .oneFOneB, microBatches: 4, seed: 7, optimizer: Self.adam)
        training.replanEvery = 2
        training.slowdown = .init(stage: 0, factor: 8, fromIteration: 2)
        func open(_ layout: PlanLayout) throws -> TrainingSession {
            try TrainingSession(SessionConfig(
                model: Self.mlp, cluster: .uniform(count: 2, device: DeviceSpec(name: "cpu", memoryBytes: 1 << 30, hostBandwidth: 1e10), link: LinkSpec(bandwidth: 1e10)),
                plan: layout, training: training, checkpointCodec: WireCheckpoint.codec))
        }
        let start = Self.plan([0, 3], Self.keep)
        let a = try open(start)
        var k = 0
        while k < 20, !a.statistics().decisions.contains(where: \.applied) {
            k += 1
            try Self.step(a, k)
        }
        let decisions = a.statistics().decisions
        let notes = decisions.map { "\($0.iteration): \($0.note)" }
        let migrated = decisions.contains { $0.applied }
        try #require(migrated, "expected an online migration off the 8× slower stage 0 within 20 steps; decisions: \(notes)")
        let moved = PlanLayout(ranges: a.statistics().stages.map(\.layers), policies: Self.keep)
        let (path, again, other) = (Self.temporaryPath("hold"), Self.temporaryPath("hold-again"), Self.temporaryPath("hold-other"))
        defer { for p in [path, again, other] { unlink(p) } }
        try a.save(to: path)
        let saved = try Self.savedProfiler(path)
        let hold = MigrationHysteresis(windows: saved.hysteresisWindows, moves: saved.hysteresisMoves)
        #expect(!saved.hysteresisMoves.isEmpty && saved.hysteresisWindows >= 1,
                "expected the checkpoint to hold the move from \(start.ranges) to \(moved.ranges); it has windows \(saved.hysteresisWindows), moves \(saved.hysteresisMoves)")
        #expect(hold.requiredGain(threshold: 0.05, from: moved, to: start) == 0.05 * MigrationHysteresis.moveBackFactor,
                "moving back to \(start.ranges) right after the move should need \(MigrationHysteresis.moveBackFactor)× the threshold; the saved hold asks \(hold.requiredGain(threshold: 0.05, from: moved, to: start))")
        // Resumed on the plan it was saved on: the same hold (saved again, field for field).
        let b = try open(moved)
        try b.load(from: path)
        try b.save(to: again)
        let resumed = try Self.savedProfiler(again)
        #expect(resumed.hysteresisWindows == saved.hysteresisWindows && resumed.hysteresisMoves == saved.hysteresisMoves,
                "resumed on the same plan the hold should be the uninterrupted run's (windows \(saved.hysteresisWindows), moves \(saved.hysteresisMoves)); it is windows \(resumed.hysteresisWindows), moves \(resumed.hysteresisMoves)")
        // Under another plan the saved stage numbers mean other stages: no hold.
        let another = [[0, 5], [0, 4]].map { Self.plan($0, Self.keep) }.first { $0 != moved }!
        let c = try open(another)
        try c.load(from: path)
        try c.save(to: other)
        let elsewhere = try Self.savedProfiler(other)
        #expect(elsewhere.hysteresisMoves.isEmpty && elsewhere.hysteresisWindows == 0,
                "resumed under \(another.ranges) (saved on \(moved.ranges)) the hold should start afresh; it is windows \(elsewhere.hysteresisWindows), moves \(elsewhere.hysteresisMoves)")
    }

    // MARK: - bad checkpoints

    /// A good checkpoint of the mlp after 2 steps, as bytes.
    static func goodCheckpoint(_ name: String) throws -> [UInt8] {
        let path = temporaryPath(name)
        defer { unlink(path) }
        let s = try session(plan([0, 3], keep))
        for i in 1...2 { try step(s, i) }
        try s.save(to: path)
        return try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Loading `bytes` must fail with an error whose text contains `expected`, and leave a
    /// trained session exactly as it was (parameters, iteration, the next loss).
    static func expectRefused(_ bytes: [UInt8], _ expected: String, into model: ModelSpec = mlp, optimizer: TrainingOptions.OptimizerChoice = adam,
                              seed: UInt64 = 7, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let path = temporaryPath("bad-\(UUID().uuidString)")  // tests run in parallel
        defer { unlink(path) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let layout = PlanLayout(stageStarts: [0, 3], layerCount: model.layers.count, policies: Array(repeating: .keep, count: model.layers.count))
        let s = try session(layout, optimizer: optimizer, model: model, seed: seed)
        let twin = try session(layout, optimizer: optimizer, model: model, seed: seed)
        try step(s, 1)
        try step(twin, 1)
        do {
            try s.load(from: path)
            Issue.record("loading should have failed with \"\(expected)\"", sourceLocation: sourceLocation)
        } catch {
            #expect(error is CheckpointError, "expected a CheckpointError, got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
            #expect("\(error)".contains(expected), "expected the error to say \"\(expected)\", it says: \(error)", sourceLocation: sourceLocation)
        }
        #expect(s.statistics().iterations == 1, sourceLocation: sourceLocation)
        #expect(try step(s, 2).bitPattern == (try step(twin, 2)).bitPattern, "a refused load changed the session", sourceLocation: sourceLocation)
    }

    @Test func truncatedFilesAreRefused() throws {
        let good = try Self.goodCheckpoint("truncated")
        for cut in [0, 7, 15, 16, 100, good.count / 2, good.count - 25, good.count - 1] {
            try Self.expectRefused(Array(good.prefix(cut)), cut < 8 ? "shorter than" : (cut < 40 ? "truncated" : "truncated"))
        }
    }

    @Test func corruptedBytesAreCaughtByTheirChecksum() throws {
        let good = try Self.goodCheckpoint("corrupted")
        var blob = good
        blob[16 + 40] ^= 0x01  // inside layer 0's weight matrix
        try Self.expectRefused(blob, "layer 0 (\"l0\") parameter tensor 0: checksum mismatch")
        var meta = good
        meta[good.count - 30] ^= 0x80  // inside the metadata
        try Self.expectRefused(meta, "metadata checksum mismatch")
        var magic = good
        magic[0] = UInt8(ascii: "X")
        try Self.expectRefused(magic, "not a libvpipe checkpoint")
    }

    @Test func aNewerFormatIsRefusedNamingBothVersions() throws {
        var bytes = try Self.goodCheckpoint("newer")
        bytes[8] = 2
        try Self.expectRefused(bytes, "format version 2; this libvpipe reads versions up to 1")
    }

    @Test func checkpointsOfAnotherModelOrOptimizerAreRefused() throws {
        let good = try Self.goodCheckpoint("other-model")
        var renamed = Self.mlp
        renamed.layers[2].name = "hidden"
        try Self.expectRefused(good, "layer 2 is \"l2\" in the checkpoint, \"hidden\" in the session's model", into: renamed)
        var wider = Self.mlp
        wider.layers[2].kind = .linear(inFeatures: 16, outFeatures: 16)
        wider.layers[0].kind = .linear(inFeatures: 8, outFeatures: 16)
        wider.layers[4].kind = .linear(inFeatures: 16, outFeatures: 5)
        try Self.expectRefused(good, "layer 4 (\"l4\") is linear(16, 4) in the checkpoint, linear(16, 5) in the session's model", into: wider)
        var longer = Self.mlp
        longer.layers.insert(ModelSpec(name: "x", kinds: [.activation(.relu)]).layers[0], at: 1)
        try Self.expectRefused(good, "a model of 6 layers", into: longer)
        try Self.expectRefused(good, "its optimizer state is for adam, the session trains with sgd+momentum", optimizer: Self.sgd)
        try Self.expectRefused(good, "seed 7", seed: 8)
    }

    @Test func aMissingFileAndASaveThatCannotHappenAreErrors() throws {
        let s = try Self.session(Self.plan([0, 3], Self.keep))
        #expect(throws: CheckpointError.self) { try s.load(from: Self.temporaryPath("does-not-exist")) }
        #expect(throws: CheckpointError.self) { try s.save(to: "/nonexistent-directory/ck") }
    }

    /// A save that dies mid-write leaves only a temporary file: the previous checkpoint at the
    /// path still loads. (Simulated: a stray temporary beside a good checkpoint.)
    @Test func aGoodCheckpointSurvivesLaterSavesAndStrayTemporaries() throws {
        let path = Self.temporaryPath("overwrite")
        defer { unlink(path) }
        let s = try Self.session(Self.plan([0, 3], Self.keep))
        try Self.step(s, 1)
        try s.save(to: path)
        try Self.step(s, 2)
        try s.save(to: path)  // replaces the first atomically
        try Data(repeating: 0xAB, count: 100).write(to: URL(fileURLWithPath: path + ".tmp-99999"))
        defer { unlink(path + ".tmp-99999") }
        let fresh = try Self.session(Self.plan([0, 3], Self.keep))
        try fresh.load(from: path)
        #expect(fresh.statistics().iterations == 2)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: (path as NSString).deletingLastPathComponent)
            .filter { $0.hasPrefix("overwrite.tmp-") && $0 != "overwrite.tmp-99999" }
        #expect(leftovers.isEmpty, "temporary files left behind: \(leftovers)")
    }

    /// Fuzzing the loader behind its checksums: the metadata is mutated (bytes flipped,
    /// inserted, cut, lengths and offsets changed) and its CRC and trailer rewritten to
    /// match, so the protobuf decoder and every bound check see hostile input. Each load
    /// must fail with a CheckpointError or succeed; never trap. Deterministic (seeded).
    @Test func mutatedMetadataWithValidChecksumsNeverTraps() throws {
        let good = try Self.goodCheckpoint("mutated")
        let t = good.count - 24
        func le(_ at: Int, _ n: Int) -> Int { (0..<n).reduce(0) { $0 | Int(good[at + $1]) << (8 * $1) } }
        let metaOffset = le(t, 8), metaLength = le(t + 8, 8)
        let blobs = Array(good[0..<metaOffset]), meta = Array(good[metaOffset..<(metaOffset + metaLength)])
        let s = try Self.session(Self.plan([0, 3], Self.keep))
        let path = Self.temporaryPath("mutated-file")
        defer { unlink(path) }
        var rng = RNG(seed: 2024)
        var refused = 0, loaded = 0
        for round in 0..<400 {
            var m = meta
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                let at = Int(rng.next() % UInt64(max(1, m.count)))
                switch rng.next() % 5 {
                case 0: m[at] ^= UInt8(truncatingIfNeeded: 1 << (rng.next() % 8))
                case 1: m[at] = UInt8(truncatingIfNeeded: rng.next())
                case 2: m.insert(UInt8(truncatingIfNeeded: rng.next()), at: at)
                case 3: if m.count > 1 { m.remove(at: at) }
                default: m[at] = [0x00, 0x7f, 0x80, 0xff][Int(rng.next() % 4)]
                }
            }
            var file = blobs + m
            let crc = m.withUnsafeBytes { UInt32(truncatingIfNeeded: Self.crc32($0)) }
            for v in [UInt64(metaOffset), UInt64(m.count)] { file += withUnsafeBytes(of: v.littleEndian, Array.init) }
            file += withUnsafeBytes(of: crc.littleEndian, Array.init)
            file += Array("VPCK".utf8)
            try Data(file).write(to: URL(fileURLWithPath: path))
            do {
                try s.load(from: path)
                loaded += 1
            } catch is CheckpointError {
                refused += 1
            } catch {
                Issue.record("round \(round): expected a CheckpointError, got \(type(of: error)): \(error)")
            }
        }
        #expect(refused > 300, "most mutations should be refused (\(refused) refused, \(loaded) loaded)")
    }

    /// `good` with its metadata replaced by `transform(metadata)`, CRC and trailer valid.
    static func withMetadata(_ good: [UInt8], _ transform: (inout CheckpointMetadata) -> Void) throws -> [UInt8] {
        let t = good.count - 24
        func le(_ at: Int, _ n: Int) -> Int { (0..<n).reduce(0) { $0 | Int(good[at + $1]) << (8 * $1) } }
        let metaOffset = le(t, 8), metaLength = le(t + 8, 8)
        var meta = try Array(good[metaOffset..<(metaOffset + metaLength)]).withUnsafeBytes { try WireCheckpoint.decode($0) }
        transform(&meta)
        let m = WireCheckpoint.encode(meta)
        var file = Array(good[0..<metaOffset]) + m
        let crc = m.withUnsafeBytes { UInt32(truncatingIfNeeded: crc32($0)) }
        for v in [UInt64(metaOffset), UInt64(m.count)] { file += withUnsafeBytes(of: v.littleEndian, Array.init) }
        file += withUnsafeBytes(of: crc.littleEndian, Array.init)
        return file + Array("VPCK".utf8)
    }

    /// A NaN or infinite weight in an intact file (its CRC matching: saved from a diverged run,
    /// or written by other code) is refused, naming the layer, the tensor and the index; the
    /// finite check runs in the CRC pass, chunk by chunk, so every position is covered.
    @Test func nonFiniteWeightsAreRefused() throws {
        let good = try Self.goodCheckpoint("non-finite")
        var weight = CheckpointMetadata.Blob(shape: [], offset: 0, bytes: 0, crc32: 0)
        _ = try Self.withMetadata(good) { weight = $0.layers[2].parameters[0] }
        #expect(weight.shape == [16, 16], "layer 2's weight should be 16×16, the checkpoint says \(weight.shape)")
        for (value, index) in [(Float.nan, 0), (Float.infinity, 37), (-Float.infinity, 255)] {
            var bytes = good
            withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes.replaceSubrange((weight.offset + 4 * index)..<(weight.offset + 4 * index + 4), with: $0) }
            let crc = bytes[weight.offset..<(weight.offset + weight.bytes)].withUnsafeBytes { Self.crc32($0) }
            let bad = try Self.withMetadata(bytes) { $0.layers[2].parameters[0].crc32 = crc }
            try Self.expectRefused(bad, "layer 2 (\"l2\") parameter tensor 0 holds a non-finite value (index \(index))")
        }
    }

    /// A manifest's shard names are file names beside it: one that points elsewhere
    /// ("../", an absolute path) is refused when the metadata decodes (WireCheckpoint), before
    /// anything is opened.
    @Test func shardNamesOutsideTheManifestsDirectoryAreRefused() throws {
        let good = try Self.goodCheckpoint("shard-names")
        for name in ["../elsewhere.rank0", "/etc/passwd", "..", ""] {
            let bad = try Self.withMetadata(good) { meta in
                meta.shards = [.init(file: name, rank: 0, layers: Array(0..<meta.layerCount), bytes: 100, metadataCRC: 1)]
            }
            try Self.expectRefused(bad, "checkpoint.shards[0].file: must be a plain file name, got \"\(name)\"")
        }
    }

    /// CRC-32 (zlib's polynomial), bit by bit: an independent check of the library's.
    static func crc32(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c >> 1) ^ (0xEDB8_8320 & (0 &- (c & 1))) }
        }
        return ~c
    }

    /// The metadata is a real vpipe.Checkpoint message: it round-trips through the codec.
    @Test func metadataRoundTrips() throws {
        var meta = CheckpointMetadata()
        meta.modelName = "m"
        meta.layerCount = 3
        meta.iteration = 12
        meta.optimizerSteps = 12
        meta.seed = 99
        meta.schedule = .gpipe
        meta.microBatches = 4
        meta.optimizer = "adam"
        meta.plan = PlanLayout(stageStarts: [0, 2], layerCount: 3, policies: [.keep, .swap, .recompute])
        meta.profiler.profiledIterations = 3
        meta.profiler.windowForwardSeconds = [1, 2, 3]
        meta.profiler.windowBackwardSeconds = [4, 5, 6]
        meta.profiler.lastLoss = 1.5
        meta.layers = [CheckpointMetadata.Layer(index: 0, name: "fc", kind: "linear(2, 3)",
                                                parameters: [.init(shape: [3, 2], offset: 16, bytes: 24, crc32: 5)],
                                                optimizerState: [.init(shape: [3, 2], offset: 40, bytes: 24, crc32: 6), .init(shape: [3, 2], offset: 64, bytes: 24, crc32: 7)],
                                                statePerParameter: 2, weightVersion: 9)]
        meta.shards = [.init(file: "ck.it12.rank0", rank: 0, layers: [0, 1], bytes: 1000, metadataCRC: 42)]
        meta.worldSize = 2
        meta.pendingPlan = PlanLayout(stageStarts: [0, 1], layerCount: 3, policies: [.keep, .keep, .swap])
        meta.pendingSource = "online"
        meta.profiler.hysteresisWindows = 4
        meta.profiler.hysteresisMoves = [.init(layer: 2, fromStage: 0, window: 3), .init(layer: 5, fromStage: 1, window: 1)]
        let bytes = WireCheckpoint.encode(meta)
        let back = try bytes.withUnsafeBytes { try WireCheckpoint.decode($0) }
        #expect(back == meta)
    }
}
