import Foundation
import VPipeCore
import VPipeRuntime
import VPipeWire
#if canImport(Glibc)
import Glibc
#endif

/// `make bench-checkpoint`: save and load time and bytes of a session's checkpoint, against
/// the disk's plain write (write + fsync of the same number of bytes to a file in the same
/// directory) and plain read (read of that file into memory), measured in the same run
/// (docs/benchmarks.md). Loads and plain reads are measured twice: warm (the file in the
/// page cache, as right after a save) and cold (its pages dropped with POSIX_FADV_DONTNEED,
/// so the bytes come from the disk). Where the time goes is split into phases. A read into
/// newly allocated memory is measured too: the floor of a one-pass load that reads into new
/// parameter memory and swaps it in, which the loader does not do (it costs more here).
/// Target: save within 1.5× of the plain write, load within 1.5× of the plain read.
enum CheckpointBench {
    static func run(_ args: [String]) {
        let dir = args.first ?? "build/bench-checkpoint"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
        print("## Checkpoint: save and load vs the disk's plain write (+fsync) and read, directory \(dir)\n")
        print("Load average at the start: \(load). Median of 3 of each.\n")
        var rows: [Row] = []
        // The demo's GPT (make demo: 4 blocks × 64 features, sequences of 32, vocabulary 65), Adam.
        let V = 65, C = 64, T = 32
        var gpt: [LayerKind] = [.embedding(vocabulary: V, features: C, sequenceLength: T)]
        gpt += Array(repeating: .transformerBlock(features: C, heads: 4, sequenceLength: T, mlpRatio: 4), count: 4)
        gpt += [.layerNorm(features: C), .linear(inFeatures: C, outFeatures: V), .softmaxCrossEntropy]
        rows.append(measure("demo GPT (4×64, Adam)", ModelSpec(name: "char-gpt-4x64", kinds: gpt), stages: 4, dir: dir))
        // A model of 268 MB of parameters: four 4096×4096 linears (Adam: 805 MB checkpoint).
        var big: [LayerKind] = []
        for _ in 0..<4 { big += [.linear(inFeatures: 4096, outFeatures: 4096), .activation(.relu)] }
        big += [.linear(inFeatures: 4096, outFeatures: 16), .softmaxCrossEntropy]
        rows.append(measure("MLP 4×4096² (268 MB parameters, Adam)", ModelSpec(name: "mlp-4x4096", kinds: big), stages: 2, dir: dir))

        func f(_ x: Double) -> String { formatFixed(x, decimals: 4) }
        func r(_ x: Double) -> String { formatFixed(x, decimals: 2) + "×" }
        print("| model | checkpoint bytes | save s | plain write+fsync s | save / plain | load warm s | plain read warm s | load / plain (warm) | load cold s | plain read cold s | load / plain (cold) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for x in rows {
            guard x.error == nil else { print("| \(x.name) | error: \(x.error!) | | | | | | | | | |"); continue }
            print("| \(x.name) | \(x.bytes) | \(f(x.save)) | \(f(x.plainWrite)) | \(r(x.save / x.plainWrite)) | \(f(x.loadWarm)) | \(f(x.plainReadWarm)) | \(r(x.loadWarm / x.plainReadWarm)) | \(f(x.loadCold)) | \(f(x.plainReadCold)) | \(r(x.loadCold / x.plainReadCold)) |")
        }
        print("\nWhere the time goes (seconds; the run with the median total):\n")
        print("| model | save: serialise | checksum | write | fsync | rename+dir fsync | plain: write | fsync | load warm: open+checks | verify (CRC, finite) | copy | load cold: open+checks | verify | copy |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for x in rows where x.error == nil {
            let s = x.savePhases, w = x.loadWarmPhases, c = x.loadColdPhases
            print("| \(x.name) | \(f(s.serialise)) | \(f(s.checksum)) | \(f(s.write)) | \(f(s.fsync)) | \(f(s.rename)) | \(f(x.plainWritePhases.write)) | \(f(x.plainWritePhases.fsync)) | \(f(w.open)) | \(f(w.verify)) | \(f(w.copy)) | \(f(c.open)) | \(f(c.verify)) | \(f(c.copy)) |")
        }
        // Why the load reads the file twice (a CRC pass over the mapping, then the copy into
        // the session's memory) rather than once into new memory swapped in after the CRCs:
        // new memory's first touch (page faults, zeroing) costs more than the CRC pass.
        print("\nThe floor of a one-pass load into newly allocated memory (read(2) into fresh calloc'd memory, freeing what it replaces; no CRC) vs the plain read into touched memory:\n")
        print("| model | plain read warm s | fresh-memory read warm s | fresh / plain (warm) | plain read cold s | fresh-memory read cold s | fresh / plain (cold) |")
        print("|---|---|---|---|---|---|---|")
        for x in rows where x.error == nil {
            print("| \(x.name) | \(f(x.plainReadWarm)) | \(f(x.freshReadWarm)) | \(r(x.freshReadWarm / x.plainReadWarm)) | \(f(x.plainReadCold)) | \(f(x.freshReadCold)) | \(r(x.freshReadCold / x.plainReadCold)) |")
        }
    }

    struct Row {
        var name: String, error: String?
        var bytes = 0
        var save = 0.0, plainWrite = 0.0, loadWarm = 0.0, plainReadWarm = 0.0, loadCold = 0.0, plainReadCold = 0.0
        var freshReadWarm = 0.0, freshReadCold = 0.0
        var savePhases = CheckpointTiming(), plainWritePhases = (write: 0.0, fsync: 0.0)
        var loadWarmPhases = CheckpointTiming(), loadColdPhases = CheckpointTiming()
    }

    static func session(_ model: ModelSpec, stages p: Int) throws -> TrainingSession {
        let L = model.layers.count
        let layout = PlanLayout(stageStarts: (0..<p).map { $0 * L / p }, layerCount: L, policies: Array(repeating: .keep, count: L))
        return try TrainingSession(SessionConfig(
            model: model, cluster: .uniform(count: p, device: DeviceSpec(name: "cpu", memoryBytes: 1 << 33, hostBandwidth: 1e10), link: LinkSpec(bandwidth: 1e10)),
            plan: layout, training: TrainingOptions(schedule: .oneFOneB, microBatches: 2, seed: 1,
                                                    optimizer: .adam(learningRate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8)),
            checkpointCodec: WireCheckpoint.codec))
    }

    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let t0 = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    /// Drops `path`'s pages from the page cache (they are clean after the fsync), so that
    /// the next read comes from the disk.
    static func dropCache(_ path: String) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return }
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        close(fd)
    }

    static func measure(_ name: String, _ model: ModelSpec, stages: Int, dir: String) -> Row {
        var row = Row(name: name, error: nil)
        do {
            let path = "\(dir)/bench.vpck", plain = "\(dir)/plain.bin"
            defer { unlink(path); unlink(plain) }
            let a = try session(model, stages: stages), b = try session(model, stages: stages)
            // One training step each: the checkpoint holds trained values and Adam moments,
            // and both sessions' memory is touched, as in a running job.
            for s in [a, b] { try step(s, classes: classes(model)) }
            var saves: [(Double, CheckpointTiming)] = [], warm: [(Double, CheckpointTiming)] = [], cold: [(Double, CheckpointTiming)] = []
            var writes: [(Double, (write: Double, fsync: Double))] = [], readsWarm: [Double] = [], readsCold: [Double] = []
            var freshWarm: [Double] = [], freshCold: [Double] = []
            // Each checkpoint operation right next to its plain counterpart, so that both see
            // the same load on a shared machine.
            for _ in 0..<3 {
                let ts = CheckpointTiming()
                saves.append((try seconds { try a.save(to: path, timing: ts) }, ts))
                row.bytes = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
                let w = try plainWrite(plain, bytes: row.bytes)
                writes.append((w.write + w.fsync, w))
                let tw = CheckpointTiming()
                warm.append((try seconds { try b.load(from: path, timing: tw) }, tw))
                readsWarm.append(try plainRead(plain, bytes: row.bytes))
                freshWarm.append(try freshRead(plain, bytes: row.bytes))
                dropCache(path)
                let tc = CheckpointTiming()
                cold.append((try seconds { try b.load(from: path, timing: tc) }, tc))
                dropCache(plain)
                readsCold.append(try plainRead(plain, bytes: row.bytes))
                dropCache(plain)
                freshCold.append(try freshRead(plain, bytes: row.bytes))
            }
            func median<T>(_ xs: [(Double, T)]) -> (Double, T) { xs.sorted { $0.0 < $1.0 }[xs.count / 2] }
            (row.save, row.savePhases) = median(saves)
            (row.loadWarm, row.loadWarmPhases) = median(warm)
            (row.loadCold, row.loadColdPhases) = median(cold)
            (row.plainWrite, row.plainWritePhases) = median(writes)
            row.plainReadWarm = readsWarm.sorted()[1]
            row.plainReadCold = readsCold.sorted()[1]
            row.freshReadWarm = freshWarm.sorted()[1]
            row.freshReadCold = freshCold.sorted()[1]
        } catch {
            row.error = "\(error)"
        }
        return row
    }

    static func classes(_ model: ModelSpec) -> Int {
        for layer in model.layers.reversed() {
            if case let .linear(_, outFeatures) = layer.kind { return outFeatures }
        }
        return 1
    }

    /// A training step: 4 samples for the MLP, 4 sequences of 32 token ids (< 16) for the GPT.
    static func step(_ s: TrainingSession, classes: Int) throws {
        let features = s.inputFeatures ?? 1
        let rows = features == 1 ? 4 * 32 : 4
        let x = (0..<(rows * features)).map { Float(($0 * 7) % 16) / (features == 1 ? 1 : 16) }
        let y = (0..<rows).map { Int32(($0 * 5) % classes) }
        _ = try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try s.step(inputs: xs, targets: ys) } }
    }

    /// A plain file of `bytes` bytes replacing the previous one (as a save replaces the
    /// previous checkpoint): open with O_TRUNC, write(2) in 2 MiB pieces (the checkpoint
    /// writer's size), then fsync and close.
    static func plainWrite(_ path: String, bytes: Int) throws -> (write: Double, fsync: Double) {
        let chunk = [UInt8](repeating: 0x5A, count: 2 << 20)
        var fd: Int32 = -1
        defer { if fd >= 0 { close(fd) } }
        let w = try seconds {
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard fd >= 0 else { throw RuntimeError.failed("cannot create \(path)") }
            var left = bytes
            while left > 0 {
                let n = chunk.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, min(left, $0.count)) }
                guard n > 0 else { throw RuntimeError.failed("write failed") }
                left -= n
            }
        }
        let s = seconds { fsync(fd) }
        return (w, s)
    }

    /// Reads the file into memory (a buffer allocated and touched beforehand).
    static func plainRead(_ path: String, bytes: Int) throws -> Double {
        var buffer = [UInt8](repeating: 1, count: bytes)
        return try buffer.withUnsafeMutableBytes { b in try seconds { try readAll(path, into: b) } }
    }

    /// What a one-pass load (read(2) straight into newly allocated parameter memory, swapped
    /// in when every CRC passed) cannot go below: the allocation (calloc, as the CPU device's
    /// allocator), the read into it (its pages are first touched by the read), and freeing
    /// the memory it replaces. No CRC: the bound is without it.
    static func freshRead(_ path: String, bytes: Int) throws -> Double {
        var old = calloc(bytes, 1), new: UnsafeMutableRawPointer?
        defer { free(old); free(new) }
        guard let replaced = old else { throw RuntimeError.failed("cannot allocate \(bytes) bytes") }
        memset(replaced, 1, bytes)  // the memory being replaced, touched as a session's is
        return try seconds {
            new = calloc(bytes, 1)
            guard let fresh = new else { throw RuntimeError.failed("cannot allocate \(bytes) bytes") }
            try readAll(path, into: UnsafeMutableRawBufferPointer(start: fresh, count: bytes))
            free(old)
            old = nil
        }
    }

    static func readAll(_ path: String, into buffer: UnsafeMutableRawBufferPointer) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw RuntimeError.failed("cannot open \(path)") }
        defer { close(fd) }
        var done = 0
        while done < buffer.count {
            let n = Glibc.read(fd, buffer.baseAddress! + done, buffer.count - done)
            guard n > 0 else { break }
            done += n
        }
    }
}
