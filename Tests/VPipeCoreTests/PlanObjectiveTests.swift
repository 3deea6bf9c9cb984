import Foundation
import Testing
import VPipeCore

/// The planning objective: ITERATION_TIME (cost model v1's T_iter, the default) and
/// THROUGHPUT (the smallest bottleneck τ, then the smallest T_iter).
@Suite struct PlanObjectiveTests {
    static func throughput(_ r: PlanRequest, _ planner: PlannerKind) -> PlanRequest {
        var r = r
        r.options.planner = planner
        r.options.objective = .throughput
        return r
    }

    /// EXACT under THROUGHPUT against brute force over every partition and policy assignment.
    @Test func exactThroughputIsTheSmallestBottleneckThenTheSmallestIteration() throws {
        var rng = Fixtures.Random(seed: 31)
        var compared = 0
        for _ in 0..<30 {
            var r = RandomInstances.memoryTight(&rng)
            r.model.layers = Array(r.model.layers.prefix(6))
            if r.cluster.devices.count > r.model.layers.count { continue }
            let cm = CostModel(r)
            let L = r.model.layers.count, p = r.cluster.devices.count
            var best: (tau: Double, time: Double)?
            try Fixtures.everyLayout(L, p) { layout in
                let plan = try cm.evaluate(layout)
                guard plan.isFeasible else { return }
                if best == nil || plan.bottleneckSeconds < best!.tau * (1 - 1e-12)
                    || (plan.bottleneckSeconds <= best!.tau * (1 + 1e-12) && plan.iterationSeconds < best!.time) {
                    best = (plan.bottleneckSeconds, plan.iterationSeconds)
                }
            }
            guard let best else { continue }
            for planner in [PlannerKind.exact, .vpipe] {
                let plan = try Planning.plan(Self.throughput(r, planner))
                #expect(abs(plan.bottleneckSeconds - best.tau) <= 1e-9 * best.tau && abs(plan.iterationSeconds - best.time) <= 1e-9 * best.time,
                        "\(planner.name) THROUGHPUT: τ \(plan.bottleneckSeconds), T_iter \(plan.iterationSeconds); brute force τ \(best.tau), T_iter \(best.time)")
                #expect(plan.provenOptimal && plan.objective == .throughput, "\(planner.name): expected a proven THROUGHPUT plan")
            }
            compared += 1
        }
        #expect(compared >= 10, "only \(compared) feasible instances compared")
    }

    /// On random memory-tight instances: VPIPE under THROUGHPUT = EXACT under THROUGHPUT, its
    /// τ is never above any baseline's, its T_iter never below the default objective's, and
    /// its certificate bounds the T_iter optimum from below.
    @Test func throughputNeverLosesTheBottleneckToABaseline() throws {
        var rng = Fixtures.Random(seed: 404)
        var compared = 0, strictlyBetterTau = 0
        for _ in 0..<120 {
            let r = RandomInstances.memoryTight(&rng)
            guard let exact = try? Planning.plan(Self.throughput(r, .exact)) else { continue }
            var byTime = r
            byTime.options.planner = .exact
            let fastest = try Planning.plan(byTime)
            let vpipe = try Planning.plan(Self.throughput(r, .vpipe))
            #expect(abs(vpipe.bottleneckSeconds - exact.bottleneckSeconds) <= 1e-9 * exact.bottleneckSeconds
                    && abs(vpipe.iterationSeconds - exact.iterationSeconds) <= 1e-9 * exact.iterationSeconds,
                    "VPIPE THROUGHPUT τ \(vpipe.bottleneckSeconds) T_iter \(vpipe.iterationSeconds), EXACT τ \(exact.bottleneckSeconds) T_iter \(exact.iterationSeconds)")
            #expect(vpipe.iterationSeconds >= fastest.iterationSeconds * (1 - 1e-9),
                    "THROUGHPUT's T_iter \(vpipe.iterationSeconds) below the T_iter optimum \(fastest.iterationSeconds)")
            #expect(vpipe.bottleneckSeconds <= fastest.bottleneckSeconds * (1 + 1e-9),
                    "THROUGHPUT's τ \(vpipe.bottleneckSeconds) above ITERATION_TIME's \(fastest.bottleneckSeconds)")
            #expect(vpipe.lowerBoundSeconds > 0 && vpipe.lowerBoundSeconds <= fastest.iterationSeconds * (1 + 1e-9),
                    "bound \(vpipe.lowerBoundSeconds) above the T_iter optimum \(fastest.iterationSeconds)")
            if vpipe.bottleneckSeconds < fastest.bottleneckSeconds * (1 - 1e-9) { strictlyBetterTau += 1 }
            for kind in [PlannerKind.uniform, .parameters, .timeBalanced, .gpipe, .pipedream] {
                var b = r
                b.options.planner = kind
                guard let baseline = try? Planning.plan(b) else { continue }
                #expect(vpipe.bottleneckSeconds <= baseline.bottleneckSeconds * (1 + 1e-9),
                        "VPIPE THROUGHPUT τ \(vpipe.bottleneckSeconds) above \(kind.name)'s \(baseline.bottleneckSeconds)")
            }
            compared += 1
        }
        #expect(compared >= 60, "only \(compared) feasible instances")
        #expect(strictlyBetterTau >= 1, "no instance where THROUGHPUT lowers τ: the test does not tell the objectives apart")
    }

    /// A plan VPIPE cannot prove (DenseNet-121's 430 layers under tight memory fall back to
    /// the local search) is still never worse than any baseline's.
    @Test func unprovenPlansNeverLoseToABaseline() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("data/pipedream-profiles")
        let text = try String(contentsOf: folder.appendingPathComponent("densenet121/graph.txt"), encoding: .utf8)
        let model = try PipeDreamGraph.parse(text).modelSpec(name: "densenet121")
        let cluster = ClusterSpec.uniform(count: 4, device: DeviceSpec(name: "gpu", memoryBytes: Int(14.98 * Double(1 << 30)), hostBandwidth: 12e9),
                                          link: LinkSpec(bandwidth: 10e9, latency: 0))
        var r = PlanRequest(model: model, cluster: cluster, options: PlanOptions(schedule: .oneFOneB, microBatches: 16))
        let vpipe = try Planning.plan(r)
        for kind in [PlannerKind.uniform, .parameters, .timeBalanced, .gpipe, .pipedream] {
            r.options.planner = kind
            guard let baseline = try? Planning.plan(r) else { continue }
            #expect(vpipe.iterationSeconds <= baseline.iterationSeconds * (1 + 1e-9),
                    "VPIPE \(vpipe.iterationSeconds) s (proven \(vpipe.provenOptimal)) above \(kind.name)'s \(baseline.iterationSeconds) s")
        }
    }

    /// The bar: on PipeDream's published profiles with ample memory, VPIPE's
    /// bottleneck under THROUGHPUT is never worse than PIPEDREAM's, at 4, 8 and 16 stages;
    /// under the default objective VPIPE's T_iter is never worse.
    @Test func throughputMatchesPipeDreamOnItsProfiles() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("data/pipedream-profiles")
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
            .filter { FileManager.default.fileExists(atPath: folder.appendingPathComponent("\($0)/graph.txt").path) }
        #expect(names.count >= 8, "expected the 8 checked-in profiles, found \(names)")
        for name in names {
            let text = try String(contentsOf: folder.appendingPathComponent("\(name)/graph.txt"), encoding: .utf8)
            let model = try PipeDreamGraph.parse(text).modelSpec(name: name)
            for p in [4, 8, 16] where p <= model.layers.count {
                let cluster = ClusterSpec.uniform(count: p, device: DeviceSpec(name: "gpu", memoryBytes: 1 << 50, hostBandwidth: 12e9),
                                                  link: LinkSpec(bandwidth: 10e9, latency: 0))
                let r = PlanRequest(model: model, cluster: cluster, options: PlanOptions(schedule: .oneFOneB, microBatches: 4 * p, planner: .pipedream))
                let pipedream = try Planning.plan(r)
                let vpipe = try Planning.plan(Self.throughput(r, .vpipe))
                #expect(vpipe.bottleneckSeconds <= pipedream.bottleneckSeconds * (1 + 1e-9),
                        "\(name), \(p) stages: VPIPE THROUGHPUT τ \(vpipe.bottleneckSeconds) > PIPEDREAM τ \(pipedream.bottleneckSeconds)")
                #expect(vpipe.provenOptimal, "\(name), \(p) stages: THROUGHPUT plan not proven")
                var byTime = r
                byTime.options.planner = .vpipe
                let fastest = try Planning.plan(byTime)
                #expect(fastest.iterationSeconds <= pipedream.iterationSeconds * (1 + 1e-9),
                        "\(name), \(p) stages: VPIPE T_iter \(fastest.iterationSeconds) > PIPEDREAM T_iter \(pipedream.iterationSeconds)")
            }
        }
    }
}
