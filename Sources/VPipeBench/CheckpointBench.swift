import Foundation
import VPipeCore
import VPipeRuntime
import VPipeWire
#if canImport(Glibc)
import Glibc
#endif

/// `make bench-checkpoint`: save and load time and bytes of a session's checkpoint, against
/// the disk's plain write speed (write + fsync of the same number of bytes) and plain read
/// speed measured in the same run, in the same directory (docs/benchmarks.md).
/// Target: save within 1.5× of the plain write.
enum CheckpointBench {
    static func run(_ args: [String]) {
        let dir = args.first ?? "build/bench-checkpoint"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        print("## Checkpoint: save and load vs the disk's plain write (+fsync) and read, directory \(dir)\n")
        print("| model | checkpoint bytes | save s | load s | plain write+fsync s | plain read s | save / plain write | load / plain read |")
        print("|---|---|---|---|---|---|---|---|")
        // The demo's GPT (make demo: 4 blocks × 64 features, sequences of 32, vocabulary 65), Adam.
        let V = 65, C = 64, T = 32
        var gpt: [LayerKind] = [.embedding(vocabulary: V, features: C, sequenceLength: T)]
        gpt += Array(repeating: .transformerBlock(features: C, heads: 4, sequenceLength: T, mlpRatio: 4), count: 4)
        gpt += [.layerNorm(features: C), .linear(inFeatures: C, outFeatures: V), .softmaxCrossEntropy]
        measure("demo GPT (4×64, Adam)", ModelSpec(name: "char-gpt-4x64", kinds: gpt), stages: 4, dir: dir)
        // A model of 268 MB of parameters: four 4096×4096 linears (Adam: 805 MB checkpoint).
        var big: [LayerKind] = []
        for _ in 0..<4 { big += [.linear(inFeatures: 4096, outFeatures: 4096), .activation(.relu)] }
        big += [.linear(inFeatures: 4096, outFeatures: 16), .softmaxCrossEntropy]
        measure("MLP 4×4096² (268 MB parameters, Adam)", ModelSpec(name: "mlp-4x4096", kinds: big), stages: 2, dir: dir)
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

    /// Median of three: checkpoint save, checkpoint load, plain write + fsync, plain read.
    static func measure(_ name: String, _ model: ModelSpec, stages: Int, dir: String) {
        do {
            let path = "\(dir)/bench.vpck", plain = "\(dir)/plain.bin"
            defer { unlink(path); unlink(plain) }
            let a = try session(model, stages: stages), b = try session(model, stages: stages)
            var save: [Double] = [], load: [Double] = [], write: [Double] = [], read: [Double] = []
            for _ in 0..<3 {
                save.append(try seconds { try a.save(to: path) })
                let bytes = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
                load.append(try seconds { try b.load(from: path) })
                let (w, r) = try plainWriteAndRead(plain, bytes: bytes)
                write.append(w)
                read.append(r)
            }
            let bytes = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
            func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
            let (s, l, w, r) = (median(save), median(load), median(write), median(read))
            print("| \(name) | \(bytes) | \(formatFixed(s, decimals: 4)) | \(formatFixed(l, decimals: 4)) | \(formatFixed(w, decimals: 4)) | \(formatFixed(r, decimals: 4)) | \(formatFixed(s / w, decimals: 2))× | \(formatFixed(l / r, decimals: 2))× |")
        } catch {
            print("| \(name) | error: \(error) | | | | | | |")
        }
    }

    /// A plain file of `bytes` bytes: write in 4 MiB pieces + fsync + close; then read it back.
    static func plainWriteAndRead(_ path: String, bytes: Int) throws -> (write: Double, read: Double) {
        let chunk = [UInt8](repeating: 0x5A, count: 4 << 20)
        let w = try seconds {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard fd >= 0 else { throw RuntimeError.failed("cannot create \(path)") }
            var left = bytes
            while left > 0 {
                let n = chunk.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, min(left, $0.count)) }
                guard n > 0 else { close(fd); throw RuntimeError.failed("write failed") }
                left -= n
            }
            fsync(fd)
            close(fd)
        }
        var buffer = [UInt8](repeating: 0, count: bytes)
        let r = try seconds {
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { throw RuntimeError.failed("cannot open \(path)") }
            var done = 0
            while done < bytes {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, bytes - done) }
                guard n > 0 else { break }
                done += n
            }
            close(fd)
        }
        return (w, r)
    }
}
