import Testing
import VPipeCore

/// Cost model v1 against numbers worked out by hand from docs/cost-model.md.
@Suite struct CostModelTests {
    // Stage 0 = L0 (SWAP), L1 (RECOMPUTE) on d0; stage 1 = L2 (RECOMPUTE), L3 (KEEP) on d1.
    let layout = PlanLayout(ranges: [0..<2, 2..<4], policies: [.swap, .recompute, .recompute, .keep])

    func evaluate(_ schedule: Schedule, m: Int = 4) throws -> Plan {
        try CostModel(model: Fixtures.handModel, cluster: Fixtures.handCluster, schedule: schedule, microBatches: m)
            .evaluate(layout)
    }

    @Test func oneFOneBByHand() throws {
        let plan = try evaluate(.oneFOneB)
        let s0 = plan.stages[0], s1 = plan.stages[1]
        // C0 = (1+2 + 2+4 + f1=2) / 1 = 11; S0 = 2·10/10 = 2; T0 = 11.
        #expect(s0.computeSeconds == 11)
        #expect(s0.swapSeconds == 2)
        #expect(s0.stageSeconds == 11)
        // Mem0 = w 5·(2+1-1) + n 2·(x1 = 20) + segment 30 + 2·swap 10 + x0 100 + o1 40 + R 7 = 247.
        #expect(s0.peakMemoryBytes == 247)
        // K0 = 2·(0.5 + 40/10) = 9.
        #expect(s0.linkSeconds == 9)
        // C1 = (1+1 + 3+3 + f2=1) / 2 = 4.5; Mem1 = 101·2 + 1·(5 + x2 40) + 50 + 40 + 8 = 345.
        #expect(s1.computeSeconds == 4.5)
        #expect(s1.swapSeconds == 0)
        #expect(s1.peakMemoryBytes == 345)
        #expect(s1.linkSeconds == 0)
        // τ = max(11, 4.5, 9) = 11; T_iter = 3·11 + 11 + 4.5 + 9 = 57.5.
        #expect(plan.bottleneckSeconds == 11)
        #expect(plan.iterationSeconds == 57.5)
        #expect(plan.costModelVersion == 1)
        #expect(plan.isFeasible)
    }

    @Test func gpipeHoldsEveryMicroBatch() throws {
        let plan = try evaluate(.gpipe)
        // n = m = 4 on both stages: Mem0 = 10 + 4·20 + 30 + 20 + 100 + 40 + 7, Mem1 = 202 + 4·45 + 50 + 48.
        #expect(plan.stages[0].peakMemoryBytes == 287)
        #expect(plan.stages[1].peakMemoryBytes == 480)
    }

    @Test func asyncStashesWeightVersions() throws {
        let plan = try evaluate(.pipedreamAsync)
        // v0 = min(4, 2) = 2: weights term 5·(2+2-1) = 15 instead of 10.
        #expect(plan.stages[0].peakMemoryBytes == 252)
        #expect(plan.stages[1].peakMemoryBytes == 345)
    }

    @Test func inFlightShrinksWithFewMicroBatches() throws {
        let plan = try evaluate(.oneFOneB, m: 1)
        // n0 = min(1, 2) = 1; T_iter = 0·τ + 11 + 4.5 + 9.
        #expect(plan.stages[0].peakMemoryBytes == 227)
        #expect(plan.iterationSeconds == 24.5)
    }

    @Test func swapThatCannotHideSetsTheStageTime() throws {
        var cluster = Fixtures.handCluster
        cluster.devices[0].hostBandwidth = 1  // S0 = 2·10/1 = 20 > C0 = 11
        let plan = try CostModel(model: Fixtures.handModel, cluster: cluster, schedule: .oneFOneB, microBatches: 4)
            .evaluate(layout)
        #expect(plan.stages[0].swapSeconds == 20)
        #expect(plan.stages[0].stageSeconds == 20)
        #expect(plan.bottleneckSeconds == 20)
    }

    @Test func twoSegmentsKeepTwoInputsAndRematerialiseTheLargest() throws {
        // One stage, policies R R K R: segments {0,1} (input x0 = 100, stash 40) and {3} (input x3 = 10, stash 5).
        let cm = CostModel(model: Fixtures.handModel, cluster: ClusterSpec(devices: [Fixtures.handCluster.devices[0]], links: []),
                           schedule: .gpipe, microBatches: 2)
        let plan = try cm.evaluate(PlanLayout(ranges: [0..<4], policies: [.recompute, .recompute, .keep, .recompute]))
        // w 106·2 + n 2·(kept 50 + inputs 110) + largest segment 40 + x0 100 + o3 8 + R 7 = 212 + 320 + 40 + 115 = 687.
        #expect(plan.stages[0].peakMemoryBytes == 687)
        // C = Σ(f+b) 17 + recomputed f (1 + 2 + 3) = 23.
        #expect(plan.stages[0].computeSeconds == 23)
    }

    @Test func violationsNameStageDeviceAndBytesOver() throws {
        var cluster = Fixtures.handCluster
        cluster.devices[1].memoryBytes = 300
        let cm = CostModel(model: Fixtures.handModel, cluster: cluster, schedule: .oneFOneB, microBatches: 4)
        let plan = try cm.evaluate(layout)
        let v = cm.violations(plan)
        #expect(v.count == 1, "expected only stage 1 over memory, got \(v)")
        #expect(v.first?.contains("stage 1") == true && v.first?.contains("45 bytes") == true
                && v.first?.contains("\"d1\"") == true, "message was: \(v)")
    }

    @Test(arguments: [
        (PlanLayout(ranges: [0..<2, 3..<4], policies: [.keep, .keep, .keep, .keep]), "plan.stages[1].first_layer"),
        (PlanLayout(ranges: [0..<2, 2..<3], policies: [.keep, .keep, .keep, .keep]), "plan.stages[1].last_layer"),
        (PlanLayout(ranges: [0..<2, 2..<2, 2..<4], policies: [.keep, .keep, .keep, .keep]), "plan.stages"),
        (PlanLayout(ranges: [0..<4], policies: [.keep]), "plan.stages[].policy"),
        (PlanLayout(ranges: [], policies: []), "plan.stages"),
    ])
    func malformedLayoutsNameTheField(layout: PlanLayout, field: String) {
        let cm = CostModel(model: Fixtures.handModel, cluster: Fixtures.handCluster, schedule: .oneFOneB, microBatches: 2)
        do {
            _ = try cm.evaluate(layout)
            Issue.record("expected an error naming \(field), got a plan")
        } catch let VPipeError.invalidField(f, message) {
            #expect(f == field, "message: \(message)")
        } catch {
            Issue.record("expected invalidField(\(field)), got \(error)")
        }
    }
}
