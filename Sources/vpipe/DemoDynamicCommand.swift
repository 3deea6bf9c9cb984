import ArgumentParser
import Foundation
import VPipeCore
import VPipeRuntime

/// `vpipe demo-dynamic` (`make demo-dynamic`, `make bench-migration`): two workloads that
/// change while training runs — a supernet whose choice blocks switch their active option,
/// and a device that slows down — each trained with a static plan and with online
/// re-planning side by side. Prints throughput over time and draws it (SVG); with
/// `--bench` also the migration stalls and the gap to a fresh plan made with hindsight.
struct DemoDynamicCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-dynamic", abstract: "Static plan vs online re-planning on workloads that change.")

    @Option(help: "Iterations per run.") var iterations = 90
    @Option(help: "Re-plan every this many iterations (online runs).") var replanEvery = 5
    @Option(help: "Where to write the SVG charts.") var out = "build/demo-dynamic"
    @Flag(help: "Also measure stalls and the gap to a fresh plan (make bench-migration).") var bench = false


    struct Workload {
        var name: String
        var model: ModelSpec
        var features: Int
        var classes: Int
        /// The iteration at which the workload changes (for the chart and the hindsight plan).
        var change: Int
        var slowdown: TrainingOptions.Slowdown?
        /// The same workload as it is after the change, from iteration 1 (for hindsight).
        var after: (ModelSpec, TrainingOptions.Slowdown?)
    }

    static func model(_ name: String, _ kinds: [LayerKind]) -> ModelSpec { ModelSpec(name: name, kinds: kinds) }

    func workloads() -> [Workload] {
        let switchAt = iterations / 3
        // Supernet: the first half of the choice blocks is wide before the switch, the second
        // half after it, so the heavy part of the chain moves from stage 0 to stage 1.
        func supernet(_ first: [Int], _ second: [Int], every: Int) -> ModelSpec {
            var kinds: [LayerKind] = [.linear(inFeatures: 64, outFeatures: 128)]
            for b in 0..<8 { kinds.append(.choiceBlock(features: 128, hiddenOptions: b < 4 ? first : second, switchEvery: every)) }
            kinds += [.linear(inFeatures: 128, outFeatures: 8), .softmaxCrossEntropy]
            return Self.model("supernet", kinds)
        }
        var mlp: [LayerKind] = [.linear(inFeatures: 64, outFeatures: 384)]
        for _ in 0..<6 { mlp += [.linear(inFeatures: 384, outFeatures: 384), .activation(.relu)] }
        mlp += [.linear(inFeatures: 384, outFeatures: 8), .softmaxCrossEntropy]
        let slow = TrainingOptions.Slowdown(stage: 0, factor: 3, fromIteration: switchAt + 1)
        return [
            Workload(name: "supernet (choice blocks switch at iteration \(switchAt + 1))",
                     model: supernet([1024, 64], [64, 1024], every: switchAt), features: 64, classes: 8, change: switchAt + 1,
                     slowdown: nil, after: (supernet([64, 1024], [1024, 64], every: 1 << 20), nil)),
            Workload(name: "slow device (stage 0 three times slower from iteration \(switchAt + 1))",
                     model: Self.model("mlp", mlp), features: 64, classes: 8, change: switchAt + 1,
                     slowdown: slow, after: (Self.model("mlp", mlp), .init(stage: 0, factor: 3, fromIteration: 1))),
        ]
    }

    struct Run {
        var seconds: [Double] = []
        var decisions: [MigrationDecision] = []
        var stagePerMicroBatch: [Double] = []
    }

    static let cluster = ClusterSpec.uniform(count: 2, device: DeviceSpec(name: "vdev", memoryBytes: 1 << 30, hostBandwidth: 1e10),
                                             link: LinkSpec(bandwidth: 1e10, latency: 1e-5))

    /// The plan one would make with hindsight for the workload after the change: its layers
    /// profiled on a nominal device, the slowed device's speed known, VPIPE.
    func hindsightPlan(_ w: Workload) throws -> PlanLayout {
        let options = TrainingOptions(schedule: .oneFOneB, microBatches: 8, seed: 5, optimizer: .sgd(learningRate: 0.02, momentum: 0.9), profileIterations: 4)
        let probe = try TrainingSession(SessionConfig(model: w.after.0, cluster: Self.cluster, plan: nil, training: options))
        defer { probe.close() }
        for _ in 0..<5 { _ = try step(probe, w) }
        var cluster = probe.clusterWithWorkspace
        if let s = w.after.1 { cluster.devices[s.stage].speed = 1 / s.factor }
        return try Planning.plan(PlanRequest(model: probe.measuredModel, cluster: cluster,
                                             options: PlanOptions(schedule: .oneFOneB, microBatches: 8, planner: .vpipe))).layout
    }

    func step(_ session: TrainingSession, _ w: Workload) throws -> Float {
        let rows = 8 * 32
        var state = UInt64(session.statistics().iterations + 7)
        var x = [Float](repeating: 0, count: rows * w.features), y = [Int32](repeating: 0, count: rows)
        for i in x.indices { state = state &* 6364136223846793005 &+ 1442695040888963407; x[i] = Float(Int(state >> 40) % 2000 - 1000) / 1000 }
        for i in y.indices { y[i] = Int32(i % w.classes) }
        return try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try session.step(inputs: xs, targets: ys) } }
    }

    func train(_ w: Workload, model: ModelSpec, slowdown: TrainingOptions.Slowdown?, replan: Bool, iterations: Int, plan: PlanLayout? = nil) throws -> Run {
        var options = TrainingOptions(schedule: .oneFOneB, microBatches: 8, seed: 5, optimizer: .sgd(learningRate: 0.02, momentum: 0.9), profileIterations: 2)
        options.replanEvery = replan ? replanEvery : 0
        options.replanThreshold = 0.05
        options.slowdown = slowdown
        let session = try TrainingSession(SessionConfig(model: model, cluster: Self.cluster, plan: plan, training: options))
        defer { session.close() }
        var run = Run()
        for _ in 0..<iterations {
            let t0 = Date()
            _ = try step(session, w)
            run.seconds.append(Date().timeIntervalSince(t0))
            run.stagePerMicroBatch.append(session.statistics().stages.map(\.stageSecondsPerMicroBatch).max() ?? 0)
        }
        run.decisions = session.statistics().decisions
        return run
    }

    func run() throws {
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let rows = 8 * 32
        for (k, w) in workloads().enumerated() {
            print("\n## \(w.name)\n")
            let fixed = try train(w, model: w.model, slowdown: w.slowdown, replan: false, iterations: iterations)
            let online = try train(w, model: w.model, slowdown: w.slowdown, replan: true, iterations: iterations)
            func tput(_ r: Run, _ a: Int, _ b: Int) -> Double {
                let s = r.seconds[a..<min(b, r.seconds.count)]
                return s.isEmpty ? 0 : Double(rows * s.count) / s.reduce(0, +)
            }
            print("iterations   static rows/s   online rows/s   online events")
            for a in stride(from: 0, to: iterations, by: 5) {
                let events = online.decisions.filter { $0.applied && $0.iteration >= a && $0.iteration < a + 5 }
                    .map { "migrated after \($0.iteration): layers \($0.layersMoved)" }.joined(separator: "; ")
                print("\(String(format: "%3d-%-3d", a + 1, a + 5))      \(String(format: "%10.0f", tput(fixed, a, a + 5)))      \(String(format: "%10.0f", tput(online, a, a + 5)))   \(events)")
            }
            let tail = w.change - 1 + 3 * replanEvery
            print("\nafter the change (iterations \(tail + 1)-\(iterations)): static \(Int(tput(fixed, tail, iterations))) rows/s, online \(Int(tput(online, tail, iterations))) rows/s")
            let replans = online.decisions.filter { $0.source == "online" }.map(\.planningSeconds).sorted()
            if let slowest = replans.last {
                print("re-planning: \(replans.count) re-plans, median \(formatSeconds(replans[replans.count / 2])), slowest \(formatSeconds(slowest)) (budget: docs/runtime.md)")
            }
            let svg = chart(title: w.name, fixed: fixed, online: online, change: w.change, rows: rows)
            try svg.write(toFile: "\(out)/workload\(k + 1).svg", atomically: true, encoding: .utf8)
            print("chart: \(out)/workload\(k + 1).svg")
            if bench {
                let hindsight = try train(w, model: w.after.0, slowdown: w.after.1, replan: false, iterations: 30, plan: try hindsightPlan(w))
                let fresh = tput(hindsight, 10, 30)
                let within = w.change - 1 + 2 * replanEvery
                let online2 = tput(online, within, min(iterations, within + 20))
                print("\nbench: fresh plan made with hindsight \(Int(fresh)) rows/s; online re-planning \(Int(online2)) rows/s over iterations \(within + 1)-\(min(iterations, within + 20)) "
                      + "(two re-planning periods after the change): \(String(format: "%.1f", (1 - online2 / fresh) * 100))% below")
                let settled = tput(online, iterations - 30, iterations)
                print("bench: online re-planning over the last 30 iterations \(Int(settled)) rows/s: \(String(format: "%.1f", (1 - settled / fresh) * 100))% below the fresh plan; "
                      + "static plan over the same iterations \(Int(tput(fixed, iterations - 30, iterations))) rows/s")
                for d in online.decisions where d.applied {
                    let mb = online.stagePerMicroBatch[min(d.iteration, online.stagePerMicroBatch.count - 1)]
                    print("bench: migration after iteration \(d.iteration): \(d.layersMoved.count) layers, \(d.bytesMoved) bytes, stall \(String(format: "%.3f", d.stallSeconds * 1e3)) ms vs one micro-batch's stage time \(String(format: "%.3f", mb * 1e3)) ms"
                          + " (predicted \(String(format: "%.2f", d.oldPredictedSeconds * 1e3)) -> \(String(format: "%.2f", d.newPredictedSeconds * 1e3)) ms; measured \(String(format: "%.2f", d.iterationSecondsBefore * 1e3)) -> \(String(format: "%.2f", d.iterationSecondsAfter * 1e3)) ms)")
                }
            }
        }
    }

    /// Throughput over iterations, static (grey) and online (blue), migrations marked.
    func chart(title: String, fixed: Run, online: Run, change: Int, rows: Int) -> String {
        let w = 900.0, h = 320.0, left = 70.0, right = 20.0, top = 40.0, bottom = 50.0
        func smooth(_ s: [Double]) -> [Double] {
            s.indices.map { i in
                let a = max(0, i - 2), b = min(s.count, i + 3)
                return Double(rows * (b - a)) / s[a..<b].reduce(0, +)
            }
        }
        let a = smooth(fixed.seconds), b = smooth(online.seconds)
        let top1 = max(a.max() ?? 1, b.max() ?? 1) * 1.1
        let n = Double(max(a.count, 1))
        func x(_ i: Double) -> Double { left + (w - left - right) * (i / n) }
        func y(_ v: Double) -> Double { top + (h - top - bottom) * (1 - v / top1) }
        func path(_ s: [Double]) -> String {
            s.enumerated().map { "\($0.offset == 0 ? "M" : "L")\(String(format: "%.1f", x(Double($0.offset))))," + String(format: "%.1f", y($0.element)) }.joined(separator: " ")
        }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"\(left)\" y=\"22\" font-size=\"15\" font-weight=\"bold\">\(title)</text>\n"
        svg += "<line x1=\"\(left)\" y1=\"\(h - bottom)\" x2=\"\(w - right)\" y2=\"\(h - bottom)\" stroke=\"black\"/><line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(h - bottom)\" stroke=\"black\"/>\n"
        for k in 0...4 {
            let v = top1 * Double(k) / 4
            svg += "<text x=\"\(left - 6)\" y=\"\(String(format: "%.1f", y(v) + 4))\" text-anchor=\"end\">\(Int(v))</text>\n"
        }
        svg += "<text x=\"14\" y=\"\(top + (h - top - bottom) / 2)\" transform=\"rotate(-90 14 \(top + (h - top - bottom) / 2))\" text-anchor=\"middle\">rows/s</text>\n"
        for i in stride(from: 0, through: Int(n), by: max(1, Int(n) / 6)) {
            svg += "<text x=\"\(String(format: "%.1f", x(Double(i))))\" y=\"\(h - bottom + 18)\" text-anchor=\"middle\">\(i)</text>\n"
        }
        svg += "<text x=\"\((w + left) / 2)\" y=\"\(h - 8)\" text-anchor=\"middle\">iteration</text>\n"
        svg += "<line x1=\"\(String(format: "%.1f", x(Double(change - 1))))\" y1=\"\(top)\" x2=\"\(String(format: "%.1f", x(Double(change - 1))))\" y2=\"\(h - bottom)\" stroke=\"rgb(200,60,60)\" stroke-dasharray=\"4 3\"/>\n"
        svg += "<text x=\"\(String(format: "%.1f", x(Double(change - 1)) + 4))\" y=\"\(top + 12)\" fill=\"rgb(200,60,60)\">workload changes</text>\n"
        for d in online.decisions where d.applied {
            svg += "<circle cx=\"\(String(format: "%.1f", x(Double(d.iteration))))\" cy=\"\(String(format: "%.1f", y(b[min(d.iteration, b.count - 1)])))\" r=\"5\" fill=\"none\" stroke=\"rgb(40,90,200)\" stroke-width=\"2\"/>\n"
        }
        svg += "<path d=\"\(path(a))\" fill=\"none\" stroke=\"rgb(140,140,140)\" stroke-width=\"2\"/>\n"
        svg += "<path d=\"\(path(b))\" fill=\"none\" stroke=\"rgb(40,90,200)\" stroke-width=\"2\"/>\n"
        svg += "<text x=\"\(w - 300)\" y=\"\(top + 12)\" fill=\"rgb(140,140,140)\">static plan</text><text x=\"\(w - 210)\" y=\"\(top + 12)\" fill=\"rgb(40,90,200)\">online re-planning (o = migration)</text>\n"
        return svg + "</svg>\n"
    }
}
