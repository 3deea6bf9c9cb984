import Foundation
import VPipeCore
import VPipeRuntime

/// The GPT of issue 13 against PyTorch, measured in the same run: `make bench-runtime`.
///
/// Model: embedding (vocabulary 256) with positions, 8 pre-LN transformer blocks of width 128
/// with 4 heads, sequence 64, final LayerNorm, head to 256 classes, softmax cross-entropy;
/// batch 8 sequences in 4 micro-batches, SGD. bench/torch_gpt.py is the same model in
/// PyTorch. The machine is shared, so the peers are interleaved: each round runs PyTorch at 1
/// thread, libvpipe on 1 stage, PyTorch at 2 threads, libvpipe on 2 stages (1F1B, one BLAS
/// thread per stage), each a median over its steps; the table shows the median round.
enum GPTBench {
    static let vocabulary = 256, features = 128, heads = 4, sequenceLength = 64, blocks = 8
    static let sequences = 8, microBatches = 4

    static func model(blocks: Int = blocks, features: Int = features) -> ModelSpec {
        var kinds: [LayerKind] = [.embedding(vocabulary: vocabulary, features: features, sequenceLength: sequenceLength)]
        kinds += Array(repeating: .transformerBlock(features: features, heads: heads, sequenceLength: sequenceLength, mlpRatio: 4), count: blocks)
        kinds += [.layerNorm(features: features), .linear(inFeatures: features, outFeatures: vocabulary), .softmaxCrossEntropy]
        let names = ["embedding"] + (0..<blocks).map { "block\($0)" } + ["ln_f", "head", "loss"]
        return ModelSpec(name: "gpt-\(blocks)x\(features)", kinds: kinds, names: names)
    }

    /// Random token ids and next-token targets for `sequences` sequences.
    static func batch(sequences: Int, seed: UInt64 = 7) -> ([Float], [Int32]) {
        var s = seed
        func next() -> Int { s = s &* 6364136223846793005 &+ 1442695040888963407; return Int(s >> 33) % vocabulary }
        let ids = (0..<(sequences * (sequenceLength + 1))).map { _ in next() }
        var x: [Float] = [], y: [Int32] = []
        for q in 0..<sequences {
            let row = ids[(q * (sequenceLength + 1))..<((q + 1) * (sequenceLength + 1))]
            x += row.dropLast().map { Float($0) }
            y += row.dropFirst().map { Int32($0) }
        }
        return (x, y)
    }

    static func session(_ model: ModelSpec, stages: Int) throws -> TrainingSession {
        let L = model.layers.count
        // Two stages: the embedding and the first half of the blocks, then the rest (the head
        // and loss are light, so the halves are within a few per cent of each other).
        let split = 1 + blocks / 2
        let ranges = stages == 1 ? [0..<L] : [0..<split, split..<L]
        return try TrainingSession(SessionConfig(
            model: model, cluster: RuntimeBench.cluster(stages), plan: PlanLayout(ranges: ranges, policies: Array(repeating: .keep, count: L)),
            training: TrainingOptions(schedule: .oneFOneB, microBatches: microBatches, optimizer: .sgd(learningRate: 0.01, momentum: 0))))
    }

    /// PyTorch's median step in ms at `threads`, from bench/torch_gpt.py; nil when torch is missing.
    static func torch(threads: Int, steps: Int) -> Double? {
        let python = ProcessInfo.processInfo.environment["PYTHON"] ?? "python3"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [python, "bench/torch_gpt.py", "--threads", "\(threads)", "--iters", "\(steps)"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0,
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let ms = json["median_ms"] as? Double else { return nil }
        return ms
    }

    static func run(rounds: Int = 3, steps: Int = 8) {
        print("Model: embedding + 8 pre-LN blocks (width 128, 4 heads, T 64) + LayerNorm + head (V 256) + loss; "
            + "8 sequences in 4 micro-batches, SGD; kernels: CVPipeKernels \(KernelInfo.isa)\n")
        let spec = model()
        let d = batch(sequences: sequences)
        BLASThreads.set(1)
        guard let one = try? session(spec, stages: 1), let two = try? session(spec, stages: 2) else {
            print("could not open the GPT sessions"); return
        }
        var rows: [String: [Double]] = [:]
        for _ in 0..<rounds {
            if let t = torch(threads: 1, steps: steps) { rows["torch1", default: []].append(t) }
            BLASThreads.set(1)
            rows["vpipe1", default: []].append(RuntimeBench.time(one, d, warmup: 2, steps: steps) * 1e3)
            if let t = torch(threads: 2, steps: steps) { rows["torch2", default: []].append(t) }
            BLASThreads.set(1)
            rows["vpipe2", default: []].append(RuntimeBench.time(two, d, warmup: 2, steps: steps) * 1e3)
        }
        func median(_ k: String) -> Double? {
            guard let v = rows[k]?.sorted(), !v.isEmpty else { return nil }
            return v[v.count / 2]
        }
        func cell(_ k: String) -> String { median(k).map { formatFixed($0, decimals: 1) + " ms" } ?? "skipped (no torch)" }
        func ratio(_ a: String, _ b: String) -> String {
            guard let x = median(a), let y = median(b) else { return "" }
            return formatFixed(x / y, decimals: 2)
        }
        let tokens = Double(sequences * sequenceLength)
        func rate(_ k: String) -> String { median(k).map { formatFixed(tokens / ($0 / 1e3), decimals: 0) } ?? "" }
        print("| run | step (median of \(rounds) rounds × \(steps) steps) | tokens/s | step / PyTorch's at the same core count |")
        print("|---|---|---|---|")
        print("| PyTorch 2.13, 1 thread | \(cell("torch1")) | \(rate("torch1")) | 1.00 |")
        print("| libvpipe, 1 stage, 1 BLAS thread | \(cell("vpipe1")) | \(rate("vpipe1")) | \(ratio("vpipe1", "torch1")) |")
        print("| PyTorch 2.13, 2 intra-op threads | \(cell("torch2")) | \(rate("torch2")) | 1.00 |")
        print("| libvpipe, 2 stages (1F1B), 1 BLAS thread each | \(cell("vpipe2")) | \(rate("vpipe2")) | \(ratio("vpipe2", "torch2")) |")
        print("\nall rounds (ms): " + ["torch1", "vpipe1", "torch2", "vpipe2"].map { k in
            "\(k) " + (rows[k] ?? []).map { formatFixed($0, decimals: 1) }.joined(separator: "/") }.joined(separator: ", "))
        one.close(); two.close()
    }
}
