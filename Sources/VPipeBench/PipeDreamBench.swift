import Foundation
import VPipeCore

/// `make bench-planner`, PipeDream's published profiles: VPIPE against PIPEDREAM (PipeDream's
/// own straight-pipeline partitioner, docs/planners.md) on the graphs in data/pipedream-profiles.
enum PipeDreamBench {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("data/pipedream-profiles")

    /// Every checked-in profile as a ModelSpec: one micro-batch = PipeDream's profiled
    /// mini-batch, so the bottlenecks are in PipeDream's own units (seconds per mini-batch).
    static func models() -> [ModelSpec] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.sorted().compactMap { name in
            let file = folder.appendingPathComponent("\(name)/graph.txt")
            guard let text = try? String(contentsOf: file, encoding: .utf8) else { return nil }
            do { return try PipeDreamGraph.parse(text).modelSpec(name: name) } catch {
                print("\(file.path): \(error)")
                return nil
            }
        }
    }

    /// PipeDream's own optimizer on the same files (its antichain DAG, 10 GB/s, no memory
    /// constraint): profile -> stages -> bottleneck in seconds per profiled mini-batch, from
    /// data/pipedream-profiles/pipedream-optimizer.txt (where they come from is written there).
    static func pipedreamOptimum() -> [String: [Int: Double]] {
        let text = (try? String(contentsOf: folder.appendingPathComponent("pipedream-optimizer.txt"), encoding: .utf8)) ?? ""
        var out: [String: [Int: Double]] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: " ").map(String.init)
            guard f.count == 5 else { continue }
            out[f[0]] = [4: Double(f[2]), 8: Double(f[3]), 16: Double(f[4])].compactMapValues { $0 }
        }
        return out
    }

    /// 10 GB/s links without latency (PipeDream's link term is 2 × bytes / bandwidth),
    /// 12 GB/s copy engines, 1F1B with m = 4p.
    static func request(_ model: ModelSpec, stages p: Int, memory: Int, planner: PlannerKind) -> PlanRequest {
        let cluster = ClusterSpec.uniform(
            count: p, device: DeviceSpec(name: "gpu", memoryBytes: memory, hostBandwidth: 12e9),
            link: LinkSpec(bandwidth: 10e9, latency: 0))
        return PlanRequest(model: model, cluster: cluster, options: PlanOptions(schedule: .oneFOneB, microBatches: 4 * p, planner: planner))
    }

    /// "proven" or the gap its lower bound leaves.
    static func certificate(_ plan: Plan) -> String {
        plan.provenOptimal ? "proven" : "gap ≤ \(formatFixed(100 * (plan.optimalityGap ?? .infinity), decimals: 1))%"
    }

    static func run(tightOnly: Bool = false, profile: String? = nil) {
        let models = models().filter { profile == nil || $0.name == profile }
        let ample = 1 << 50
        if !tightOnly { ampleMemory(models, ample: ample) }
        tightMemory(models, ample: ample)
    }

    static func ampleMemory(_ models: [ModelSpec], ample: Int) {
        let optimum = pipedreamOptimum()
        print("Ample memory (1 PiB per device), 10 GB/s links, latency 0, 1F1B, m = 4p; τ in seconds per profiled mini-batch.")
        print("PipeDream: its own optimizer on its antichain DAG (data/pipedream-profiles/pipedream-optimizer.txt);")
        print("PIPEDREAM: the same DP on our chain of the graph. VPIPE twice: under the THROUGHPUT objective")
        print("(smallest τ, then T_iter) and under the default (smallest T_iter).\n")
        print("| profile | layers | stages | PipeDream τ | PIPEDREAM τ | VPIPE τ (THROUGHPUT) | VPIPE / PipeDream | PIPEDREAM T_iter | VPIPE T_iter (THROUGHPUT) | VPIPE T_iter (default) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        var worstChain = 0.0, worstVPipe = 0.0
        for model in models {
            for p in [4, 8, 16] where p <= model.layers.count {
                let pd = try? Planning.plan(request(model, stages: p, memory: ample, planner: .pipedream))
                var throughput = request(model, stages: p, memory: ample, planner: .vpipe)
                throughput.options.objective = .throughput
                let vt = try? Planning.plan(throughput)
                let vp = try? Planning.plan(request(model, stages: p, memory: ample, planner: .vpipe))
                let theirs = optimum[model.name]?[p]
                guard let pd, let vt, let vp else {
                    print("| \(model.name) | \(model.layers.count) | \(p) | | \(pd == nil ? "failed" : "") | \(vt == nil ? "failed" : "") | | | | \(vp == nil ? "failed" : "") |")
                    continue
                }
                if let theirs {
                    worstChain = max(worstChain, pd.bottleneckSeconds / theirs)
                    worstVPipe = max(worstVPipe, vt.bottleneckSeconds / theirs)
                }
                print("| \(model.name) | \(model.layers.count) | \(p) | \(theirs.map(formatSeconds) ?? "not recorded") | \(formatSeconds(pd.bottleneckSeconds)) | "
                    + "\(formatSeconds(vt.bottleneckSeconds)) | \(theirs.map { formatFixed(vt.bottleneckSeconds / $0, decimals: 4) } ?? "") | "
                    + "\(formatSeconds(pd.iterationSeconds)) | \(formatSeconds(vt.iterationSeconds)) | \(formatSeconds(vp.iterationSeconds)) |")
            }
        }
        print("\nWorst PIPEDREAM τ / PipeDream τ: \(formatFixed(worstChain, decimals: 4)); worst VPIPE (THROUGHPUT) τ / PipeDream τ: \(formatFixed(worstVPipe, decimals: 4))\n")
    }

    static func tightMemory(_ models: [ModelSpec], ample: Int) {

        print("Tight memory: each device gets 90% or 75% of the largest stage memory of PIPEDREAM's (memory-unaware) plan, so that plan does not fit.\n")
        print("| profile | stages | memory per device | PIPEDREAM | TIME_BALANCED T_iter | GPIPE T_iter | VPIPE T_iter | VPIPE τ | VPIPE policies (K/S/R) | VPIPE certificate | VPIPE planning |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for model in models {
            for p in [4, 8] where p <= model.layers.count {
              for fraction in [0.9, 0.75] {
                guard let pd = try? Planning.plan(request(model, stages: p, memory: ample, planner: .pipedream)) else { continue }
                let memory = Int(fraction * (pd.stages.map(\.peakMemoryBytes).max() ?? 0))
                func cell(_ kind: PlannerKind) -> (String, Plan?) {
                    do {
                        let plan = try Planning.plan(request(model, stages: p, memory: memory, planner: kind))
                        return (formatSeconds(plan.iterationSeconds), plan)
                    } catch VPipeError.infeasible {
                        // Its plan ignores memory, so the stage over is the ample-memory plan's.
                        guard kind == .pipedream, let over = pd.stages.first(where: { $0.peakMemoryBytes > Double(memory) }) else {
                            return ("infeasible", nil)
                        }
                        return ("does not fit: stage \(over.device) needs \(formatBytes(over.peakMemoryBytes))", nil)
                    } catch { return ("\(error)", nil) }
                }
                let (pdCell, _) = cell(.pipedream)
                let (tb, _) = cell(.timeBalanced)
                let (gp, _) = cell(.gpipe)
                let (vpCell, vp) = cell(.vpipe)
                let counts = vp.map { $0.stages.flatMap(\.policies).reduce(into: [0, 0, 0]) { $0[$1.rawValue - 1] += 1 } }
                print("| \(model.name) | \(p) | \(formatBytes(Double(memory))) (\(Int(fraction * 100))%) | \(pdCell) | \(tb) | \(gp) | \(vpCell) | "
                    + "\(vp.map { formatSeconds($0.bottleneckSeconds) } ?? "") | \(counts.map { "\($0[0])/\($0[1])/\($0[2])" } ?? "") | "
                    + "\(vp.map(certificate) ?? "") | \(vp.map { formatSeconds($0.planningSeconds) } ?? "") |")
              }
            }
        }
    }
}
