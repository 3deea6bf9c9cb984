import Foundation
import VPipeCore

/// `make bench-planner`: the planner's quality and speed targets (docs/benchmarks.md).
enum PlannerBench {
    static func run() {
        print("## Planner quality: VPIPE vs EXACT on random small instances\n")
        quality()
        print("\n## Planner quality: analytic transformers, VPIPE vs the baselines\n")
        transformers()
        print("\n## PipeDream's published profiles: VPIPE vs PIPEDREAM (PipeDream's own partitioner)\n")
        PipeDreamBench.run()
        print("\n## Planner quality: deep pipelines, VPIPE vs the independent EXACT\n")
        DeepPlannerBench.run(instances: 120)
        print("\n## GPT-3 13B, 16 × 40 GiB, 24 GB/s copy engines, 100 GB/s links, 1F1B, m = 64\n")
        DeepPlannerBench.gpt3()
        print("\n## Cost model vs simulator (VPIPE plans)\n")
        modelVersusSimulator()
        print("\n## Planner speed (release build)\n")
        speed()
    }

    static func quality() {
        var rng = SplitMix64(seed: 2021)
        var gaps: [Schedule: (n: Int, worst: Double, worstLocal: Double, over1: Int, over1Local: Int, policies: Int)] = [:]
        for _ in 0..<1000 {
            var r = RandomInstances.memoryTight(&rng, planner: .exact)
            guard let exact = try? Planning.plan(r) else { continue }
            r.options.planner = .vpipe
            guard let vpipe = try? Planning.plan(r),
                  let local = try? Planning.plan(r, settings: .init(exactPartitionOnSmallInstances: false)) else {
                print("VPIPE failed on an instance EXACT solved")
                continue
            }
            let g = vpipe.iterationSeconds / exact.iterationSeconds - 1
            let gl = local.iterationSeconds / exact.iterationSeconds - 1
            var e = gaps[r.options.schedule] ?? (0, 0, 0, 0, 0, 0)
            e.n += 1
            e.worst = max(e.worst, g)
            e.worstLocal = max(e.worstLocal, gl)
            e.over1 += g > 0.01 ? 1 : 0
            e.over1Local += gl > 0.01 ? 1 : 0
            e.policies += exact.stages.contains { $0.policies.contains { $0 != .keep } } ? 1 : 0
            gaps[r.options.schedule] = e
        }
        print("| schedule | feasible instances | optimum swaps/recomputes | VPIPE worst gap | > 1% | local search only: worst gap | > 1% |")
        print("|---|---|---|---|---|---|---|")
        for s in Schedule.allCases {
            guard let e = gaps[s] else { continue }
            print("| \(s.name) | \(e.n) | \(e.policies) | \(pct(e.worst)) | \(e.over1) | \(pct(e.worstLocal)) | \(e.over1Local) |")
        }
    }

    static func transformers() {
        let gib = 1 << 30
        print("| model | devices × memory | schedule | m | VPIPE T_iter | best baseline | VPIPE / best | GPIPE / VPIPE | VPIPE policies (K/S/R) |")
        print("|---|---|---|---|---|---|---|---|---|")
        let shapes: [(TransformerShape, Int)] = [(.bertLarge(), 4), (.gpt2XL(), 8), (.gpt3_2_7B(), 8), (.gpt3_13B(), 16)]
        for (shape, p) in shapes {
            for memory in [11, 16, 24, 40] {
                for schedule in [Schedule.gpipe, .oneFOneB] {
                    let m = 2 * p
                    let cluster = ClusterSpec.uniform(
                        count: p, device: DeviceSpec(name: "gpu", memoryBytes: memory * gib, hostBandwidth: 12e9),
                        link: LinkSpec(bandwidth: 10e9, latency: 1e-5))
                    var r = PlanRequest(model: shape.model(), cluster: cluster,
                                        options: PlanOptions(schedule: schedule, microBatches: m, planner: .vpipe))
                    let vpipe = try? Planning.plan(r)
                    var best: (PlannerKind, Double)?
                    var gpipe: Double?
                    for kind in [PlannerKind.uniform, .parameters, .timeBalanced, .gpipe, .pipedream] {
                        r.options.planner = kind
                        guard let plan = try? Planning.plan(r) else { continue }
                        if kind == .gpipe { gpipe = plan.iterationSeconds }
                        if best == nil || plan.iterationSeconds < best!.1 { best = (kind, plan.iterationSeconds) }
                    }
                    let label = "| \(shape.name) | \(p) × \(memory) GiB | \(schedule.name) | \(m) |"
                    guard let vpipe else {
                        print("\(label) infeasible | \(best.map { "\($0.0.name) \(formatSeconds($0.1))" } ?? "infeasible") | | | |")
                        continue
                    }
                    let counts = vpipe.stages.flatMap(\.policies).reduce(into: [0, 0, 0]) { $0[$1.rawValue - 1] += 1 }
                    let ratio = best.map { formatFixed(vpipe.iterationSeconds / $0.1, decimals: 3) } ?? "n/a (none fits)"
                    let overGpipe = gpipe.map { formatFixed($0 / vpipe.iterationSeconds, decimals: 2) + "×" } ?? "n/a"
                    print("\(label) \(formatSeconds(vpipe.iterationSeconds)) | \(best.map { "\($0.0.name) \(formatSeconds($0.1))" } ?? "none fits") | \(ratio) | \(overGpipe) | \(counts[0])/\(counts[1])/\(counts[2]) |")
                }
            }
        }
    }

    /// T_iter of cost model v1 against the discrete-event simulator playing the same plan's
    /// schedule, per schedule; the spread measures the model's roughness (docs/cost-model.md).
    static func modelVersusSimulator() {
        let gib = 1 << 30
        print("| model | devices × memory | schedule | m | cost model T_iter | simulated | simulated / model |")
        print("|---|---|---|---|---|---|---|")
        var worst: [Schedule: (Double, Double)] = [:]
        for (shape, p) in [(TransformerShape.bertLarge(), 4), (.gpt2XL(), 8), (.gpt3_2_7B(), 8)] {
            for memory in [11, 24] {
                for schedule in Schedule.allCases {
                    let cluster = ClusterSpec.uniform(
                        count: p, device: DeviceSpec(name: "gpu", memoryBytes: memory * gib, hostBandwidth: 12e9),
                        link: LinkSpec(bandwidth: 10e9, latency: 1e-5))
                    let r = PlanRequest(model: shape.model(), cluster: cluster,
                                        options: PlanOptions(schedule: schedule, microBatches: 2 * p, planner: .vpipe))
                    guard let plan = try? Planning.plan(r),
                          let sim = try? Simulator(model: r.model, cluster: cluster).simulate(plan.layout, schedule: schedule, microBatches: 2 * p)
                    else { continue }
                    let ratio = sim.iterationSeconds / plan.iterationSeconds
                    var w = worst[schedule] ?? (Double.infinity, 0)
                    w = (min(w.0, ratio), max(w.1, ratio))
                    worst[schedule] = w
                    print("| \(shape.name) | \(p) × \(memory) GiB | \(schedule.name) | \(2 * p) | \(formatSeconds(plan.iterationSeconds)) | \(formatSeconds(sim.iterationSeconds)) | \(formatFixed(ratio, decimals: 3)) |")
                }
            }
        }
        print("")
        for s in Schedule.allCases {
            if let w = worst[s] { print("- \(s.name): simulated / model between \(formatFixed(w.0, decimals: 3)) and \(formatFixed(w.1, decimals: 3))") }
        }
    }

    static func speed() {
        print("| layers × stages | model | VPIPE median | VPIPE max | VPIPE CPU median / max | TIME_BALANCED median | target | VPIPE T_iter | best baseline T_iter | certificate |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for (blocks, p, target) in [(62, 16, "≤ 100 ms"), (98, 8, "—"), (998, 64, "≤ 200 ms")] {
            let shape = TransformerShape(name: "gpt-\(blocks)", blocks: blocks, hidden: 2048, heads: 16, sequenceLength: 1024,
                                         vocabulary: 50257, microBatchSize: 1)
            let model = shape.model()
            // Memory tight enough that policies matter: 60% of the even share of all-KEEP.
            let keep = model.layers.reduce(0.0) { $0 + 4 * Double($1.profile.paramBytes) + Double(min(p, 2 * p)) * Double($1.profile.stashBytes) }
            let cluster = ClusterSpec.uniform(
                count: p, device: DeviceSpec(name: "gpu", memoryBytes: Int(keep / Double(p) * 0.6), hostBandwidth: 12e9),
                link: LinkSpec(bandwidth: 10e9, latency: 1e-5))
            var r = PlanRequest(model: model, cluster: cluster, options: PlanOptions(schedule: .oneFOneB, microBatches: 2 * p, planner: .vpipe))
            var times: [Double] = [], cpu: [Double] = []
            var policies = 0
            var vpipe: Plan?
            for _ in 0..<7 {
                let t0 = DispatchTime.now().uptimeNanoseconds, c0 = clock()
                vpipe = try? Planning.plan(r)
                times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
                cpu.append(Double(clock() - c0) / Double(CLOCKS_PER_SEC))
                policies = vpipe?.stages.flatMap(\.policies).filter { $0 != .keep }.count ?? -1
            }
            // "Never worse than any baseline": every other planner on the same request.
            var baseline: (String, Double)?
            for kind in [PlannerKind.uniform, .parameters, .timeBalanced, .gpipe, .pipedream] {
                var b = r
                b.options.planner = kind
                if let plan = try? Planning.plan(b), baseline == nil || plan.iterationSeconds < baseline!.1 { baseline = (kind.name, plan.iterationSeconds) }
            }
            let certificate = vpipe.map { $0.provenOptimal ? "proven" : "gap ≤ \(PlannerBench.pct($0.optimalityGap ?? .infinity))" } ?? "-"
            r.options.planner = .timeBalanced
            var tb: [Double] = []
            for _ in 0..<3 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                _ = try? Planning.plan(r)
                tb.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            }
            times.sort()
            cpu.sort()
            tb.sort()
            print("| \(model.layers.count) × \(p) | \(shape.name), \(policies) layers swapped/recomputed | \(formatSeconds(times[times.count / 2])) | \(formatSeconds(times.last!)) | \(formatSeconds(cpu[cpu.count / 2])) / \(formatSeconds(cpu.last!)) | \(formatSeconds(tb[tb.count / 2])) | \(target) | "
                + "\(vpipe.map { formatSeconds($0.iterationSeconds) } ?? "failed") | \(baseline.map { "\(formatSeconds($0.1)) (\($0.0))" } ?? "none fits") | \(certificate) |")
        }
    }

    static func pct(_ g: Double) -> String { formatFixed(g * 100, decimals: 3) + "%" }
}

/// Deep pipelines: VPIPE against the independent exact reference (PLANNER_EXACT) on seeded
/// transformer LMs (`RandomInstances.deepPipeline`, 4–16 stages), per schedule, with the
/// local search alone (the planner before the exact DP) for comparison.
enum DeepPlannerBench {
    struct Row {
        var n = 0, policies = 0, proven = 0, over1 = 0, over1Local = 0
        var gaps: [Double] = [], localGaps: [Double] = [], times: [Double] = [], exactTimes: [Double] = []
    }

    static func run(instances: Int) {
        var rng = SplitMix64(seed: 10)
        var rows: [Schedule: Row] = [:]
        var drawn = 0, infeasible = 0, gaveUp = 0, compared = 0
        while compared < instances {
            var r = RandomInstances.deepPipeline(&rng, planner: .exact)
            if r.cluster.devices.count < 4 { continue }
            drawn += 1
            let t0 = DispatchTime.now().uptimeNanoseconds
            let exact: Plan
            do { exact = try Planning.plan(r) } catch VPipeError.infeasible { infeasible += 1; continue } catch {
                print("- instance \(drawn): EXACT gave up: \(error)"); gaveUp += 1; continue
            }
            let exactSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            r.options.planner = .vpipe
            guard let vpipe = try? Planning.plan(r),
                  let local = try? Planning.plan(r, settings: .init(exactPartitionOnSmallInstances: false)) else {
                print("- instance \(drawn): VPIPE failed where EXACT found a plan"); continue
            }
            compared += 1
            var row = rows[r.options.schedule] ?? Row()
            let g = vpipe.iterationSeconds / exact.iterationSeconds - 1
            let gl = local.iterationSeconds / exact.iterationSeconds - 1
            row.n += 1
            row.gaps.append(g)
            row.localGaps.append(gl)
            row.over1 += g > 0.01 ? 1 : 0
            row.over1Local += gl > 0.01 ? 1 : 0
            row.proven += vpipe.provenOptimal ? 1 : 0
            row.policies += exact.stages.contains { $0.policies.contains { $0 != .keep } } ? 1 : 0
            row.times.append(vpipe.planningSeconds)
            row.exactTimes.append(exactSeconds)
            rows[r.options.schedule] = row
            if g > 0.01 || vpipe.lowerBoundSeconds > exact.iterationSeconds * (1 + 1e-9) {
                print("- instance \(drawn): \(r.model.layers.count) layers × \(r.cluster.devices.count) stages \(r.options.schedule.name) m=\(r.options.microBatches): VPIPE \(vpipe.iterationSeconds), EXACT \(exact.iterationSeconds), bound \(vpipe.lowerBoundSeconds)")
            }
        }
        print("| schedule | instances | optimum swaps/recomputes | VPIPE worst gap | mean gap | > 1% | proven optimal | VPIPE time p50 / p90 / max | EXACT p50 / max | local search alone: worst gap | > 1% |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        var all = Row()
        for s in Schedule.allCases {
            guard let e = rows[s] else { continue }
            print(line(s.name, e))
            all.n += e.n; all.policies += e.policies; all.proven += e.proven; all.over1 += e.over1; all.over1Local += e.over1Local
            all.gaps += e.gaps; all.localGaps += e.localGaps; all.times += e.times; all.exactTimes += e.exactTimes
        }
        print(line("all", all))
        print("\n\(drawn) instances drawn (seed 10, 4–16 stages): \(compared) compared, \(infeasible) infeasible, EXACT gave up on \(gaveUp).")
    }

    static func line(_ name: String, _ e: Row) -> String {
        let t = e.times.sorted(), x = e.exactTimes.sorted()
        func q(_ a: [Double], _ f: Double) -> String { a.isEmpty ? "-" : formatSeconds(a[min(a.count - 1, Int(Double(a.count) * f))]) }
        let mean = e.gaps.reduce(0, +) / Double(max(1, e.gaps.count))
        return "| \(name) | \(e.n) | \(e.policies) | \(PlannerBench.pct(e.gaps.max() ?? 0)) | \(PlannerBench.pct(mean)) | \(e.over1) | \(e.proven) | "
            + "\(q(t, 0.5)) / \(q(t, 0.9)) / \(q(t, 1)) | \(q(x, 0.5)) / \(q(x, 1)) | \(PlannerBench.pct(e.localGaps.max() ?? 0)) | \(e.over1Local) |"
    }

    /// VPIPE alone (no EXACT, so long 2- and 3-stage instances count too) on `instances`
    /// seeded deep pipelines with 2–16 stages, under the given node budgets: how many plans
    /// are proven optimal, the worst certificate gap, and the planning time. Used to choose
    /// `VPipePlanner.stageNodeBudget` (docs/benchmarks.md).
    static func proofs(instances: Int, stageNodeBudget: Int, planNodeBudget: Int) {
        var rng = SplitMix64(seed: 10)
        struct Bucket { var n = 0, proven = 0, worstGap = 0.0, times: [Double] = [], cpu: [Double] = [] }
        var buckets: [String: Bucket] = [:]
        let settings = Planning.Settings(stageNodeBudget: stageNodeBudget, planNodeBudget: planNodeBudget)
        var planned = 0, infeasible = 0
        while planned < instances {
            let r = RandomInstances.deepPipeline(&rng)
            let p = r.cluster.devices.count
            let cpu0 = clock()
            guard let plan = try? Planning.plan(r, settings: settings) else { infeasible += 1; continue }
            let cpu = Double(clock() - cpu0) / Double(CLOCKS_PER_SEC)
            planned += 1
            let name = p <= 3 ? "2–3" : p <= 8 ? "4–8" : "9–16"
            var b = buckets[name] ?? Bucket()
            b.n += 1
            b.proven += plan.provenOptimal ? 1 : 0
            b.worstGap = max(b.worstGap, plan.optimalityGap ?? .infinity)
            b.times.append(plan.planningSeconds)
            b.cpu.append(cpu)
            buckets[name] = b
            if !plan.provenOptimal {
                print("- not proven: \(r.model.layers.count) layers × \(p) stages \(r.options.schedule.name) m=\(r.options.microBatches): gap ≤ \(PlannerBench.pct(plan.optimalityGap ?? .infinity)), \(formatSeconds(plan.planningSeconds))")
            }
        }
        print("stage budget \(stageNodeBudget) nodes, plan budget \(planNodeBudget) nodes; \(planned) plans (seed 10), \(infeasible) infeasible draws skipped\n")
        // CPU time is the planner's one-core time whatever else runs on the machine.
        print("| stages | plans | proven optimal | worst certificate gap | wall time p50 / p90 / max | CPU time p50 / p90 / max |")
        print("|---|---|---|---|---|---|")
        for name in ["2–3", "4–8", "9–16"] {
            guard let b = buckets[name] else { continue }
            func q(_ a: [Double]) -> String {
                let t = a.sorted()
                return [0.5, 0.9, 1].map { formatSeconds(t[min(t.count - 1, Int(Double(t.count) * $0))]) }.joined(separator: " / ")
            }
            print("| \(name) | \(b.n) | \(b.proven) | \(PlannerBench.pct(b.worstGap)) | \(q(b.times)) | \(q(b.cpu)) |")
        }
    }

    /// The instance issue #10 measured.
    static func gpt3() {
        let model = TransformerShape.gpt3_13B().model()
        let cluster = ClusterSpec.uniform(count: 16, device: DeviceSpec(name: "gpu", memoryBytes: 40 << 30, hostBandwidth: 24e9),
                                          link: LinkSpec(bandwidth: 100e9, latency: 1e-5))
        var r = PlanRequest(model: model, cluster: cluster, options: PlanOptions(schedule: .oneFOneB, microBatches: 64, planner: .vpipe))
        guard let vpipe = try? Planning.plan(r), let local = try? Planning.plan(r, settings: .init(exactPartitionOnSmallInstances: false)) else {
            print("GPT-3 13B: VPIPE failed"); return
        }
        r.options.planner = .exact
        let exact = try? Planning.plan(r)
        print("| planner | T_iter | stage lengths | planning time |")
        print("|---|---|---|---|")
        for (name, plan) in [("VPIPE", vpipe), ("local search alone", local)] + (exact.map { [("EXACT", $0)] } ?? []) {
            print("| \(name) | \(formatSeconds(plan.iterationSeconds)) | \(plan.stages.map { String($0.layers.count) }.joined(separator: " ")) | \(formatSeconds(plan.planningSeconds)) |")
        }
        print("\nVPIPE certificate: proven optimal \(vpipe.provenOptimal), lower bound \(formatSeconds(vpipe.lowerBoundSeconds)).")
    }
}
