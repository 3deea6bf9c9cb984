import Foundation
import VPipeCore
import VPipeRuntime

/// `make bench-runtime`: the training runtime's targets (docs/benchmarks.md).
enum RuntimeBench {
    static func run(_ args: [String]) {
        let threads = Int(ProcessInfo.processInfo.environment["VPIPE_BENCH_THREADS"] ?? "") ?? 1
        if args.first == "overhead" { return stepOverhead() }
        if args.contains("--gpt-only") {
            print("## Runtime: GPT training step vs PyTorch (same run, interleaved)\n")
            GPTBench.run()
            return
        }
        if args.contains("--finite-checks-only") {
            print("## Runtime: cost of the NaN/Inf checks per step\n")
            finiteCheckCost()
            return
        }
        print("## Runtime: one training step of a 3-layer MLP, 1024 wide, batch 256, one stage\n")
        oneStageMLP(threads: threads)
        print("\n## Runtime: 2-stage 1F1B pipeline vs 1 stage (one BLAS thread per stage), m = 8, batch 512")
        pipelineSpeedup()
        print("\n## Runtime: swap that hides behind compute vs KEEP\n")
        hiddenSwap()
        print("\n## Runtime: cost of the NaN/Inf checks per step\n")
        finiteCheckCost()
        print("\n## Runtime: GPT training step vs PyTorch (same run, interleaved)\n")
        GPTBench.run()
        print("\n## Runtime: per-step overhead of the executor (a model with almost no compute)\n")
        stepOverhead()
    }

    /// The executor's own cost per step: an 8→8 MLP on 1 row per micro-batch, so that what
    /// is measured is handing work to the stage threads, the transport's hand-offs and the
    /// optimizer phase, not arithmetic. `vpipe-bench runtime overhead` runs this part alone.
    static func stepOverhead() {
        BLASThreads.set(1)
        let tiny = model([.linear(inFeatures: 8, outFeatures: 8), .activation(.relu), .linear(inFeatures: 8, outFeatures: 8),
                          .activation(.relu), .linear(inFeatures: 8, outFeatures: 4), .softmaxCrossEntropy])
        let m = 4
        let d = data(rows: m, features: 8, classes: 4)
        print("| stages | micro-batches | median step | per stage and micro-batch |")
        print("|---|---|---|---|")
        for p in [1, 2, 4] {
            let layout = PlanLayout(stageStarts: (0..<p).map { $0 * 6 / p }, layerCount: 6, policies: Array(repeating: .keep, count: 6))
            guard let s = try? TrainingSession(SessionConfig(model: tiny, cluster: cluster(p), plan: layout,
                                                             training: TrainingOptions(schedule: .oneFOneB, microBatches: m, optimizer: .sgd(learningRate: 0.01, momentum: 0)))) else {
                print("could not open a \(p)-stage session"); return
            }
            let t = time(s, d, warmup: 20, steps: 400)
            print("| \(p) | \(m) | \(formatSeconds(t)) | \(formatSeconds(t / Double(p * m))) |")
            s.close()
        }
    }

    /// What the non-finite checks of inputs, every layer's output and input gradient per
    /// micro-batch, and the parameter gradients per step cost, measured two ways on the same
    /// sessions: the time spent inside the checks as a share of the steps that ran them
    /// (`FiniteCheck.timedForBenchmark`), and the steps with the checks on vs off
    /// (interleaved rounds, medians; a loaded machine blurs this one by several percent).
    static func finiteCheckCost() {
        BLASThreads.set(1)
        print("| model | micro-batches | step with checks | without | on vs off | time in the checks per step | share of the step |")
        print("|---|---|---|---|---|---|---|")
        for (name, model, rows, m) in [("MLP 1024 wide, 6 layers", mlp, 256, 1), ("MLP 1024 wide, 6 layers", mlp, 256, 8),
                                       ("MLP 1024 wide, 14 layers", balancedMLP, 512, 8)] {
            let L = model.layers.count
            let d = data(rows: rows, features: 1024, classes: 16)
            guard let s = try? TrainingSession(SessionConfig(
                model: model, cluster: cluster(1), plan: PlanLayout(ranges: [0..<L], policies: Array(repeating: .keep, count: L)),
                training: TrainingOptions(schedule: .oneFOneB, microBatches: m, optimizer: .sgd(learningRate: 0.001, momentum: 0)))) else { continue }
            var on: [Double] = [], off: [Double] = []
            for round in 0..<8 {
                FiniteCheck.enabledForBenchmark = round % 2 == 0
                let t = time(s, d, warmup: 1, steps: 5)
                if round % 2 == 0 { on.append(t) } else { off.append(t) }
            }
            FiniteCheck.enabledForBenchmark = true
            // The checks' own time, inside the steps that ran them.
            let timedSteps = 10
            FiniteCheck.timedForBenchmark = true
            _ = FiniteCheck.nanosecondsForBenchmark.exchange(0, ordering: .relaxed)
            let t0 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<timedSteps {
                _ = try? d.0.withUnsafeBufferPointer { x in try d.1.withUnsafeBufferPointer { y in try s.step(inputs: x, targets: y) } }
            }
            let stepSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 / Double(timedSteps)
            let checkSeconds = Double(FiniteCheck.nanosecondsForBenchmark.load(ordering: .relaxed)) / 1e9 / Double(timedSteps)
            FiniteCheck.timedForBenchmark = false
            on.sort(); off.sort()
            let a = on[on.count / 2], b = off[off.count / 2]
            print("| \(name), batch \(rows) | \(m) | \(formatSeconds(a)) | \(formatSeconds(b)) | \(formatFixed((a / b - 1) * 100, decimals: 2))% "
                  + "| \(formatSeconds(checkSeconds)) | \(formatFixed(checkSeconds / stepSeconds * 100, decimals: 2))% |")
        }
        // The scan alone, over 1 MiB (the size of one 256 x 1024 activation), in cache as
        // after the layer that wrote it.
        let values = [Float](repeating: 0.5, count: 1 << 18)
        var best = Double.infinity
        for _ in 0..<50 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let found = values.withUnsafeBufferPointer { FiniteCheck.firstNonFinite($0.baseAddress!, count: $0.count) }
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            precondition(found == nil)
        }
        print("\nthe scan alone: 1 MiB in \(formatSeconds(best)) (\(formatFixed(Double(values.count * 4) / best / 1e9, decimals: 1)) GB/s)")
    }

    static func model(_ kinds: [LayerKind]) -> ModelSpec { ModelSpec(name: "mlp", kinds: kinds) }

    /// Linear 1024→1024, ReLU, Linear 1024→1024, ReLU, Linear 1024→16, loss.
    static let mlp = model([.linear(inFeatures: 1024, outFeatures: 1024), .activation(.relu), .linear(inFeatures: 1024, outFeatures: 1024),
                            .activation(.relu), .linear(inFeatures: 1024, outFeatures: 16), .softmaxCrossEntropy])

    static func data(rows: Int, features: Int, classes: Int) -> ([Float], [Int32]) {
        var s: UInt64 = 99
        func next() -> UInt64 { s = s &* 6364136223846793005 &+ 1442695040888963407; return s >> 33 }
        return ((0..<(rows * features)).map { _ in Float(Int(next() % 2001) - 1000) / 1000 }, (0..<rows).map { _ in Int32(next() % UInt64(classes)) })
    }

    static func cluster(_ p: Int, hostBandwidth: Double = 1e10) -> ClusterSpec {
        .uniform(count: p, device: DeviceSpec(name: "cpu", memoryBytes: 1 << 32, hostBandwidth: hostBandwidth), link: LinkSpec(bandwidth: 2e10, latency: 2e-5))
    }

    /// Median seconds per step over `steps` after `warmup`.
    static func time(_ session: TrainingSession, _ d: ([Float], [Int32]), warmup: Int = 3, steps: Int = 15) -> Double {
        var times: [Double] = []
        for i in 0..<(warmup + steps) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = try? d.0.withUnsafeBufferPointer { x in try d.1.withUnsafeBufferPointer { y in try session.step(inputs: x, targets: y) } }
            if i >= warmup { times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9) }
        }
        times.sort()
        return times[times.count / 2]
    }

    static func oneStageMLP(threads: Int) {
        BLASThreads.set(threads)
        let d = data(rows: 256, features: 1024, classes: 16)
        guard let s = try? TrainingSession(SessionConfig(
            model: mlp, cluster: cluster(1), plan: PlanLayout(ranges: [0..<6], policies: Array(repeating: .keep, count: 6)),
            training: TrainingOptions(schedule: .gpipe, microBatches: 1, optimizer: .sgd(learningRate: 0.01, momentum: 0)))) else { return }
        let t = time(s, d, steps: 20)
        print("{\"framework\":\"libvpipe\",\"threads\":\(threads),\"median_ms\":\(formatFixed(t * 1e3, decimals: 3))}")
        if ProcessInfo.processInfo.environment["VPIPE_BENCH_LAYERS"] != nil {
            for (l, p) in s.statistics().measuredProfiles.enumerated() {
                print("  layer \(l): forward \(formatSeconds(p.fwdSeconds)), backward \(formatSeconds(p.bwdSeconds))")
            }
        }
    }

    /// Six 1024×1024 linears with ReLUs, a 1024→16 head, the loss: 14 layers. The model's
    /// first linear needs no input gradient (2 matrix products instead of 3), so the even
    /// split is 3 linears per stage: 8 vs 9 products, 94% balanced.
    static let deepMLP: ModelSpec = deep(normalisedInput: false)

    /// The same with a LayerNorm first: then every linear computes its input gradient, and
    /// the two halves carry equal work — the case the ideal 2m/(m+1) describes.
    static let balancedMLP: ModelSpec = deep(normalisedInput: true)

    static func deep(normalisedInput: Bool) -> ModelSpec {
        var kinds: [LayerKind] = normalisedInput ? [.layerNorm(features: 1024)] : []
        for _ in 0..<6 { kinds += [.linear(inFeatures: 1024, outFeatures: 1024), .activation(.relu)] }
        kinds += [.linear(inFeatures: 1024, outFeatures: 16), .softmaxCrossEntropy]
        return model(kinds)
    }

    static func pipelineSpeedup() {
        for (name, model, split) in [("LayerNorm + six 1024-wide linears (balanced halves)", balancedMLP, 7),
                                     ("six 1024-wide linears (the first needs no input gradient: 8 vs 9.3 products)", deepMLP, 6)] {
            print("\n\(name):\n")
            pipelineSpeedup(model, split: split)
        }
    }

    static func pipelineSpeedup(_ model: ModelSpec, split: Int) {
        let m = 8
        let d = data(rows: 512, features: 1024, classes: 16)
        let L = model.layers.count
        let policies = Array(repeating: MemoryPolicy.keep, count: L)
        func session(_ p: Int) -> TrainingSession? {
            let layout = p == 1 ? PlanLayout(ranges: [0..<L], policies: policies) : PlanLayout(ranges: [0..<split, split..<L], policies: policies)
            return try? TrainingSession(SessionConfig(model: model, cluster: cluster(p), plan: layout,
                                                      training: TrainingOptions(schedule: .oneFOneB, microBatches: m, optimizer: .sgd(learningRate: 0.01, momentum: 0))))
        }
        BLASThreads.set(1)
        guard let one = session(1), let two = session(2) else { print("could not open sessions"); return }
        BLASThreads.set(1)
        let t1 = time(one, d), t2 = time(two, d)
        let ideal = 2.0 * Double(m) / Double(m + 1)
        print("| stages | median step | speed-up | ideal 2m/(m+1) | fraction of ideal |")
        print("|---|---|---|---|---|")
        print("| 1 | \(formatSeconds(t1)) | 1.00 | | |")
        print("| 2 | \(formatSeconds(t2)) | \(formatFixed(t1 / t2, decimals: 2)) | \(formatFixed(ideal, decimals: 2)) | \(formatFixed(t1 / t2 / ideal * 100, decimals: 1))% |")
        // Measured vs simulator on the measured profiles.
        let stats = two.statistics()
        var measuredModel = model
        for l in measuredModel.layers.indices { measuredModel.layers[l].profile = stats.measuredProfiles[l] }
        measuredModel.inputBytes = 1024 * 4 * 512 / m
        if let sim = try? Simulator(model: measuredModel, cluster: cluster(2)).simulate(
            PlanLayout(ranges: [0..<split, split..<L], policies: policies), schedule: .oneFOneB, microBatches: m) {
            print("\nmeasured iteration (2 stages) \(formatSeconds(t2)) vs simulator on measured profiles \(formatSeconds(sim.iterationSeconds)): "
                + "ratio \(formatFixed(t2 / sim.iterationSeconds, decimals: 3)) (optimizer step not simulated)")
        }
        one.close(); two.close()
    }

    /// One stage, m = 4, copies throttled to a bandwidth at which cost model v1 says the
    /// swap of the first linear's stash hides behind the stage's compute (S < C).
    static func hiddenSwap() {
        BLASThreads.set(1)
        let m = 4
        let d = data(rows: 512, features: 1024, classes: 16)
        func session(_ policies: [MemoryPolicy], bandwidth: Double) -> TrainingSession? {
            try? TrainingSession(SessionConfig(model: mlp, cluster: cluster(1, hostBandwidth: bandwidth),
                                               plan: PlanLayout(ranges: [0..<6], policies: policies),
                                               training: TrainingOptions(schedule: .gpipe, microBatches: m, optimizer: .sgd(learningRate: 0.01, momentum: 0),
                                                                         throttleCopies: true)))
        }
        guard let keep = session(Array(repeating: .keep, count: 6), bandwidth: 4e9) else { return }
        let tKeep = time(keep, d)
        let stats = keep.statistics()
        let stash = Double(stats.measuredProfiles[0].stashBytes + stats.measuredProfiles[2].stashBytes)
        let compute = stats.measuredProfiles.reduce(0.0) { $0 + $1.fwdSeconds + $1.bwdSeconds }
        // Bandwidth at which the swap traffic 2·a takes half the compute time: hidden by the model.
        let bandwidth = 2 * stash / (0.5 * compute)
        keep.close()
        var policies = Array(repeating: MemoryPolicy.keep, count: 6)
        policies[0] = .swap
        policies[2] = .swap
        guard let swap = session(policies, bandwidth: bandwidth) else { return }
        let tSwap = time(swap, d)
        print("| policy | median step | vs KEEP |")
        print("|---|---|---|")
        print("| KEEP | \(formatSeconds(tKeep)) | |")
        print("| SWAP layers 0 and 2 (copy engine throttled to \(formatFixed(bandwidth / 1e9, decimals: 2)) GB/s, S = C/2 in the model) | \(formatSeconds(tSwap)) | \(formatFixed((tSwap / tKeep - 1) * 100, decimals: 1))% |")
        swap.close()
    }
}
