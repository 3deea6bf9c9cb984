import Foundation
import Testing
import VPipeCore

/// The simulator against iteration times derived by hand, and against the cost model.
@Suite struct SimulatorTests {
    /// `p` stages of one layer each with f = 1, b = 2 (Fixtures.model splits f+b = 3 as 1:2),
    /// stash 10 B, output `output` B.
    func uniform(_ p: Int, output: Int = 0, policy: MemoryPolicy = .keep) -> (ModelSpec, PlanLayout) {
        let model = Fixtures.model(Array(repeating: (3.0, 10, output, 4), count: p))
        return (model, PlanLayout(ranges: (0..<p).map { $0..<($0 + 1) }, policies: Array(repeating: policy, count: p)))
    }

    func simulate(_ model: ModelSpec, _ cluster: ClusterSpec, _ layout: PlanLayout, _ kind: Schedule, m: Int) throws
        -> SimulationReport
    {
        try Simulator(model: model, cluster: cluster).simulate(layout, schedule: kind, microBatches: m)
    }

    /// One stage, all KEEP: nothing overlaps and nothing waits, so T = m·(f + b) = 4·3.
    @Test(arguments: Schedule.allCases)
    func oneStageIsTheSumOfItsWork(kind: Schedule) throws {
        let (model, layout) = uniform(1)
        let r = try simulate(model, Fixtures.cluster(1), layout, kind, m: 4)
        #expect(abs(r.iterationSeconds - 12) < 1e-12, "got \(r.iterationSeconds)")
        #expect(r.stages[0].busyFraction == 1 && r.stages[0].bubbleFraction == 0)
        #expect(r.iterationSeconds == r.costModelIterationSeconds)
    }

    /// p equal stages, links of zero cost (λ = 0, o = 0). GPipe: micro-batch j's forward on
    /// stage i ends at (i + j + 1)·f, so the last stage's last forward ends at (m + p − 1)·f;
    /// the backwards run the same staircase backwards, stage 0's last ending (m + p − 1)·b
    /// later: T = (m + p − 1)·(f + b). 1F1B has the same fill and drain ((p − 1) forwards and
    /// backwards of bubble) around m·(f + b) of work: the same T. Both equal the cost model's
    /// (m − 1)·τ + Σ T_i with τ = T_i = f + b. Bubble fraction per stage: (p − 1)/(m + p − 1).
    @Test(arguments: Schedule.allCases)
    func uniformStagesFollowTheClosedForm(kind: Schedule) throws {
        for (p, m) in [(2, 3), (3, 4), (4, 8), (5, 2)] {
            let (model, layout) = uniform(p)
            let r = try simulate(model, Fixtures.cluster(p, latency: 0), layout, kind, m: m)
            let expected = Double(m + p - 1) * 3
            #expect(abs(r.iterationSeconds - expected) < 1e-9, "\(kind.name) p=\(p) m=\(m): expected \(expected), got \(r.iterationSeconds)")
            #expect(abs(r.costModelIterationSeconds - expected) < 1e-9)
            for s in r.stages {
                #expect(abs(s.bubbleFraction - Double(p - 1) / Double(m + p - 1)) < 1e-9)
                #expect(abs(s.busyFraction + s.idleFraction - 1) < 1e-12)
            }
        }
    }

    /// Links cost something: every activation and gradient crosses p − 1 links on the
    /// critical path of the fill and the drain. GPipe with link time c per transfer:
    /// T = (m + p − 1)·(f + b) + 2·(p − 1)·c when c ≤ f (the link never becomes the bottleneck).
    @Test func linkLatencyAddsToFillAndDrain() throws {
        let (model, layout) = uniform(3, output: 50)
        let cluster = Fixtures.cluster(3, linkBandwidth: 100, latency: 0.25)  // c = 0.25 + 50/100 = 0.75
        let r = try simulate(model, cluster, layout, .gpipe, m: 4)
        #expect(abs(r.iterationSeconds - (6 * 3 + 2 * 2 * 0.75)) < 1e-9, "got \(r.iterationSeconds)")
    }

    /// A swap that cannot hide: one stage, one SWAP layer of a = 10 B, H = 1 B/s, so each swap
    /// takes 10 s against f = 1, b = 2. Under 1F1B (F0 SO0 SI0 B0 F1 ...) nothing overlaps the
    /// swaps: T = m·(f + b + 2·a/H) = 2·23 = 46, i.e. the KEEP time 6 plus the exposed swap
    /// time 40, all of which the compute stream spends waiting for its own swap-ins.
    @Test func exposedSwapGrowsTheIteration() throws {
        let (model, layout) = uniform(1, policy: .swap)
        let slow = Fixtures.cluster(1, hostBandwidth: 1)
        let r = try simulate(model, slow, layout, .oneFOneB, m: 2)
        #expect(abs(r.iterationSeconds - 46) < 1e-9, "got \(r.iterationSeconds)")
        #expect(abs(r.stages[0].swapStallSeconds - 40) < 1e-9, "got \(r.stages[0].swapStallSeconds)")
        #expect(abs(r.stages[0].bubbleSeconds) < 1e-9)
        let keep = try simulate(model, slow, uniform(1).1, .oneFOneB, m: 2)
        #expect(abs(r.iterationSeconds - keep.iterationSeconds - 40) < 1e-9)
        // GPipe overlaps the swap-outs with the second forward: F0, F1 ‖ SO0, SO1, SI0, SI1,
        // then B1 after SI1: T = f + 4·a/H + b = 43. The swap engine is the bottleneck.
        let g = try simulate(model, slow, layout, .gpipe, m: 2)
        #expect(abs(g.iterationSeconds - 43) < 1e-9, "got \(g.iterationSeconds)")
        // With a fast copy engine the swaps hide behind compute except the first swap-in's tail.
        let fast = try simulate(model, Fixtures.cluster(1, hostBandwidth: 1e12), layout, .gpipe, m: 2)
        #expect(abs(fast.iterationSeconds - 6) < 1e-9, "got \(fast.iterationSeconds)")
    }

    /// Valid but extreme numbers that overflow a duration are an error naming the field, and
    /// an iteration of zero-length actions reports zeros, not NaN.
    @Test func extremeInputsFailCleanly() throws {
        let (model, layout) = uniform(1, policy: .swap)
        var huge = model
        huge.layers[0].profile.stashBytes = Validation.maxBytes
        do {
            _ = try simulate(huge, Fixtures.cluster(1, hostBandwidth: 1e-300), layout, .gpipe, m: 2)
            Issue.record("expected an error")
        } catch let VPipeError.invalidField(field, _) {
            #expect(field == "cluster.devices[0].host_bandwidth")
        }
        var zero = Fixtures.model([(0, 0, 0, 0), (0, 0, 0, 0)])
        zero.inputBytes = 0
        let r = try simulate(zero, Fixtures.cluster(2), PlanLayout(ranges: [0..<1, 1..<2], policies: [.keep, .recompute]), .oneFOneB, m: 3)
        #expect(r.iterationSeconds == 0 && r.stages.allSatisfy { $0.busyFraction == 0 && $0.bubbleFraction == 0 })
        #expect(TraceExport.svg(r).hasSuffix("</svg>\n") && !TraceExport.chromeTrace(r).contains("nan"))
    }

    /// Swap-ins wait for memory. One SWAP stage, f = 1, b = 2, a = 10 B, H = 10 B/s (1 s per
    /// swap), GPipe, m = 3; static bytes w 4·κ 2 + x 8 + o 0 = 16. With room for everything:
    /// SO0..SO2 end at 2, 3, 4; SI0..SI2 run 4–7 back to back; B0..B2 run 5–11: T = 11.
    /// With M = 26 (static + one stash) a swap-in may start only once the previous backward
    /// has freed its stash (or when compute waits for it): SI1 runs 7–8 after B0 (5–7),
    /// B1 8–10, SI2 10–11, B2 11–13: T = 13, and after the forwards memory stays under M.
    @Test func swapInsWaitForMemory() throws {
        let (model, layout) = uniform(1, policy: .swap)
        let roomy = try simulate(model, Fixtures.cluster(1, memory: 1000, hostBandwidth: 10), layout, .gpipe, m: 3)
        let tight = try simulate(model, Fixtures.cluster(1, memory: 26, hostBandwidth: 10), layout, .gpipe, m: 3)
        #expect(abs(roomy.iterationSeconds - 11) < 1e-9, "got \(roomy.iterationSeconds)")
        #expect(abs(tight.iterationSeconds - 13) < 1e-9, "got \(tight.iterationSeconds)")
        #expect(tight.stages[0].memory.filter { $0.time >= 4 }.allSatisfy { $0.bytes <= 26 }, "\(tight.stages[0].memory)")
        #expect(roomy.stages[0].memory.contains { $0.time >= 4 && $0.bytes > 26 })
    }

    /// For KEEP plans the simulator's peak memory is the cost model's Mem_i: the static part
    /// plus n_i stashes, where n_i = m (GPipe) or min(m, p − i) (1F1B) is what the schedules hold.
    @Test(arguments: Schedule.allCases)
    func keepPlansPeakAtTheCostModelsMemory(kind: Schedule) throws {
        let model = Fixtures.model([(3, 10, 7, 4), (6, 20, 9, 8), (3, 30, 5, 0), (3, 40, 3, 2)])
        let layout = PlanLayout(stageStarts: [0, 1, 3], layerCount: 4, policies: Array(repeating: .keep, count: 4))
        let cluster = Fixtures.cluster(3, linkBandwidth: 10, latency: 0.1)
        let plan = try CostModel(model: model, cluster: cluster, schedule: kind, microBatches: 5).evaluate(layout)
        let r = try simulate(model, cluster, layout, kind, m: 5)
        for (i, s) in r.stages.enumerated() {
            #expect(s.peakMemoryBytes == plan.stages[i].peakMemoryBytes, "\(kind.name) stage \(i)")
            #expect(s.memory.first?.time == 0 && s.memory.last?.bytes == s.staticBytes, "stashes all freed: \(s.memory)")
        }
    }

    /// The cost model against the simulator on a few plans. The difference is printed (it is a
    /// measure of the model: docs/cost-model.md); asserted are only bounds every correct
    /// simulation obeys: no faster than the bottleneck stage's m micro-batches of work, no
    /// slower than every action run one after another.
    @Test func costModelVersusSimulator() throws {
        var cases: [(String, ModelSpec, ClusterSpec, PlanLayout)] = [
            ("hand", Fixtures.handModel, Fixtures.handCluster,
             PlanLayout(ranges: [0..<2, 2..<4], policies: [.swap, .recompute, .recompute, .keep])),
        ]
        let bert = TransformerShape.bertLarge(microBatchSize: 8).model()
        let bertCluster = ClusterSpec.uniform(
            count: 4, device: DeviceSpec(name: "gpu", memoryBytes: 16 << 30, hostBandwidth: 12e9),
            link: LinkSpec(bandwidth: 10e9, latency: 1e-5))
        for planner in [PlannerKind.timeBalanced, .gpipe] {
            let request = PlanRequest(model: bert, cluster: bertCluster, options: PlanOptions(schedule: .oneFOneB, microBatches: 8, planner: planner))
            cases.append(("bert-large \(planner.name)", bert, bertCluster, try Planning.plan(request).layout))
        }
        var swapped = cases[1].3
        for l in swapped.ranges[0] where l % 2 == 0 { swapped.policies[l] = .swap }
        cases.append(("bert-large swap half of stage 0", bert, bertCluster, swapped))

        print("plan                               schedule          cost model    simulator    sim/model")
        for (name, model, cluster, layout) in cases {
            for kind in Schedule.allCases {
                let m = 8
                let r = try simulate(model, cluster, layout, kind, m: m)
                let plan = try CostModel(model: model, cluster: cluster, schedule: kind, microBatches: m).evaluate(layout)
                print(name.padding(toLength: 34, withPad: " ", startingAt: 0), kind.name.padding(toLength: 17, withPad: " ", startingAt: 0),
                      formatSeconds(r.costModelIterationSeconds).padding(toLength: 13, withPad: " ", startingAt: 0),
                      formatSeconds(r.iterationSeconds).padding(toLength: 12, withPad: " ", startingAt: 0),
                      formatFixed(r.iterationSeconds / r.costModelIterationSeconds, decimals: 3))
                let bottleneck = plan.stages.map { Double(m) * $0.computeSeconds }.max() ?? 0
                let serial = r.events.reduce(0) { $0 + $1.end - $1.start }
                #expect(r.iterationSeconds >= bottleneck * (1 - 1e-12), "\(name) \(kind.name)")
                #expect(r.iterationSeconds <= serial * (1 + 1e-12), "\(name) \(kind.name)")
                #expect(r.costModelIterationSeconds == plan.iterationSeconds)
            }
        }
    }

    @Test func exportersDescribeEveryEvent() throws {
        let (model, layout) = uniform(2, output: 4, policy: .swap)
        let r = try simulate(model, Fixtures.cluster(2, hostBandwidth: 100, linkBandwidth: 10), layout, .oneFOneB, m: 3)
        let json = TraceExport.chromeTrace(r)
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        let events = try #require(object?["traceEvents"] as? [[String: Any]])
        let complete = events.filter { $0["ph"] as? String == "X" }
        #expect(complete.count == r.events.count)
        #expect(complete.contains { $0["name"] as? String == "SO1" && $0["tid"] as? Int == 1 && $0["pid"] as? Int == 0 })
        #expect(events.contains { $0["ph"] as? String == "C" && $0["name"] as? String == "memory" })
        let svg = TraceExport.svg(r, title: "test <model>")
        #expect(svg.hasPrefix("<svg ") && svg.hasSuffix("</svg>\n"))
        #expect(svg.components(separatedBy: "<title>").count - 1 == r.events.count)
        #expect(svg.contains("test &lt;model&gt;") && svg.contains("stage 1 copy") && svg.contains("link 0-1"))
        if let dir = ProcessInfo.processInfo.environment["VPIPE_TRACE_DIR"] {
            try json.write(toFile: dir + "/simulator-test.json", atomically: true, encoding: .utf8)
            try svg.write(toFile: dir + "/simulator-test.svg", atomically: true, encoding: .utf8)
        }
    }
}
