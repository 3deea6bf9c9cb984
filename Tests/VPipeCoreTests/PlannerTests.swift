import Testing
import VPipeCore

/// The baseline planners on small cases with known answers, and against brute force.
@Suite struct PlannerTests {
    func request(_ model: ModelSpec, _ cluster: ClusterSpec, _ planner: PlannerKind,
                 schedule: Schedule = .oneFOneB, m: Int = 4) -> PlanRequest {
        PlanRequest(model: model, cluster: cluster, options: PlanOptions(schedule: schedule, microBatches: m, planner: planner))
    }

    func starts(_ plan: Plan) -> [Int] { plan.stages.map(\.layers.lowerBound) }

    @Test func uniformGivesExtraLayersToTheLastStages() throws {
        let model = Fixtures.model(Array(repeating: (3, 10, 10, 10), count: 7))
        let plan = try Planning.plan(request(model, Fixtures.cluster(3), .uniform))
        // 7 = 2 + 2 + 3... the last 7 mod 3 = 1 stage gets the extra layer.
        #expect(starts(plan) == [0, 2, 4], "got stage starts \(starts(plan))")
        #expect(plan.stages.allSatisfy { $0.policies.allSatisfy { $0 == .keep } })
        #expect(plan.planner == .uniform)
    }

    @Test func parametersBalancesParamBytes() throws {
        // params 40, 0, 0, 0, 20, 20: the min-max split into 2 is [0] | [1..5] (40 vs 40).
        let model = Fixtures.model([(1, 1, 1, 40), (1, 1, 1, 0), (1, 1, 1, 0), (1, 1, 1, 0), (1, 1, 1, 20), (1, 1, 1, 20)])
        let plan = try Planning.plan(request(model, Fixtures.cluster(2), .parameters))
        let perStage = plan.stages.map { s in s.layers.reduce(0) { $0 + model.layers[$1].profile.paramBytes } }
        #expect(perStage.max() == 40, "per-stage params \(perStage)")
    }

    /// PARAMETERS is exact: on random small instances its largest stage equals the best
    /// over every partition (brute force), and every stage has a layer.
    @Test func parametersMatchesBruteForce() throws {
        var rng = Fixtures.Random(seed: 7)
        for _ in 0..<400 {
            let L = rng.int(1...9), p = rng.int(1...L)
            let params = (0..<L).map { _ in rng.int(0...3) == 0 ? 0 : rng.int(1...1000) }
            let model = Fixtures.model(params.map { (1, 1, 1, $0) })
            let plan = try Planning.plan(request(model, Fixtures.cluster(p), .parameters))
            func largest(_ starts: [Int]) -> Int {
                (0..<p).map { k in params[starts[k]..<(k + 1 < p ? starts[k + 1] : L)].reduce(0, +) }.max()!
            }
            let best = Fixtures.allPartitions(L, p).map(largest).min()!
            #expect(plan.stages.count == p && plan.stages.allSatisfy { !$0.layers.isEmpty }, "params \(params) on \(p) stages: \(starts(plan))")
            #expect(largest(starts(plan)) == best, "params \(params) on \(p) stages: largest stage \(largest(starts(plan))), brute force \(best)")
        }
    }

    /// The largest request validation accepts (2^20 layers, 4,096 devices) gets an answer:
    /// PARAMETERS used to run a p·L² search with no work limit and never answered.
    @Test func parametersAnswersTheLargestRequest() throws {
        let L = Validation.maxLayers, p = Validation.maxDevices
        var rng = Fixtures.Random(seed: 3)
        let model = Fixtures.model((0..<L).map { _ in (1e-6, 8, 8, rng.int(1...1 << 20)) })
        let plan = try Planning.plan(request(model, Fixtures.cluster(p), .parameters))
        #expect(plan.stages.count == p)
        #expect(plan.stages.allSatisfy { !$0.layers.isEmpty })
    }

    @Test func timeBalancedMinimisesTheBottleneck() throws {
        // f+b: 1, 1, 1, 1, 4 on 2 stages: the best cut is [0..3] | [4], τ = 4.
        let model = Fixtures.model([(1, 1, 1, 0), (1, 1, 1, 0), (1, 1, 1, 0), (1, 1, 1, 0), (4, 1, 1, 0)])
        let plan = try Planning.plan(request(model, Fixtures.cluster(2), .timeBalanced))
        #expect(starts(plan) == [0, 4], "got \(starts(plan))")
        #expect(abs(plan.bottleneckSeconds - 4) < 1e-12)
    }

    @Test func timeBalancedRespectsMemory() throws {
        // Layer 0 stashes 1000 bytes and stage 0 holds n0 = 2 micro-batches under 1F1B, so
        // whatever stage 0 is, it needs > 2000 bytes of a 1500-byte device: no KEEP plan exists.
        let model = Fixtures.model([(1, 1000, 1, 0), (1, 1, 1, 0), (1, 1, 1, 0), (1, 1, 1, 0), (4, 1, 1, 0)])
        let r = request(model, Fixtures.cluster(2, memory: 1500), .timeBalanced)
        #expect(throws: VPipeError.self) { try Planning.plan(r) }
        do { _ = try Planning.plan(r) } catch let VPipeError.infeasible(message) {
            #expect(message.contains("stage 0") && message.contains("bytes"), "message: \(message)")
        } catch { Issue.record("expected infeasible, got \(error)") }
        // GPIPE recomputes: stage 0 keeps only its input (8 B) per micro-batch and fits.
        let gpipe = try Planning.plan(request(model, Fixtures.cluster(2, memory: 1500), .gpipe))
        #expect(gpipe.isFeasible)
        #expect(gpipe.stages.allSatisfy { $0.policies.allSatisfy { $0 == .recompute } })
    }

    @Test func memoryMovesTheCut() throws {
        // Equal layers; stage 0 (n0 = 2 under 1F1B) can hold only 2 layers' stashes, so the
        // unconstrained best cut 3|3 becomes 2|4.
        let model = Fixtures.model(Array(repeating: (1, 100, 1, 0), count: 6))
        let plan = try Planning.plan(request(model, Fixtures.cluster(2, memory: 2 * 2 * 100 + 50), .timeBalanced))
        #expect(starts(plan) == [0, 2], "got \(starts(plan)), memory \(plan.stages.map(\.peakMemoryBytes))")
        #expect(plan.isFeasible)
    }

    @Test func reportedNumbersEqualTheCostModel() throws {
        for kind in [PlannerKind.uniform, .parameters, .timeBalanced, .gpipe] {
            let r = request(Fixtures.handModel, Fixtures.handCluster, kind)
            let plan = try Planning.plan(r)
            var again = try CostModel(r).evaluate(plan.layout)
            again.planner = plan.planner
            again.planningSeconds = plan.planningSeconds
            again.lowerBoundSeconds = plan.lowerBoundSeconds
            again.provenOptimal = plan.provenOptimal
            again.objective = plan.objective
            #expect(again == plan, "\(kind.name) reported numbers that cost model v1 does not reproduce")
        }
    }

    /// TIME_BALANCED and GPIPE are exact: on random small instances their bottleneck equals
    /// the best over every partition that fits (brute force with `CostModel.evaluate`).
    @Test func balancedPlannersMatchBruteForce() throws {
        var rng = Fixtures.Random(seed: 42)
        var checked = 0
        for _ in 0..<300 {
            let L = rng.int(2...9), p = rng.int(1...min(4, L))
            let model = Fixtures.model((0..<L).map { _ in
                (rng.double(0.1...5), rng.int(0...1000), rng.int(0...500), rng.int(0...800))
            })
            let schedule = Schedule.allCases[rng.int(0...2)]
            let cluster = ClusterSpec(
                devices: (0..<p).map { i in
                    DeviceSpec(name: "d\(i)", memoryBytes: rng.int(2000...12000), speed: rng.double(0.5...2),
                               hostBandwidth: 1e3, reservedBytes: rng.int(0...100))
                },
                links: (0..<max(0, p - 1)).map { _ in LinkSpec(bandwidth: rng.double(100...10000), latency: rng.double(0...0.5)) })
            let m = rng.int(1...6)
            for (kind, policy) in [(PlannerKind.timeBalanced, MemoryPolicy.keep), (.gpipe, .recompute)] {
                let r = request(model, cluster, kind, schedule: schedule, m: m)
                let cm = CostModel(r)
                var best = Double.infinity
                for s in Fixtures.allPartitions(L, p) {
                    let plan = try cm.evaluate(PlanLayout(stageStarts: s, layerCount: L, policies: Array(repeating: policy, count: L)))
                    if plan.isFeasible { best = min(best, plan.bottleneckSeconds) }
                }
                do {
                    let plan = try Planning.plan(r)
                    #expect(plan.isFeasible)
                    #expect(abs(plan.bottleneckSeconds - best) <= 1e-12 * best,
                            "\(kind.name): planner τ \(plan.bottleneckSeconds), brute force τ \(best)")
                    checked += 1
                } catch VPipeError.infeasible {
                    #expect(best == .infinity, "\(kind.name) said infeasible but brute force found τ \(best)")
                }
            }
        }
        #expect(checked > 200, "too few feasible instances (\(checked)) to mean anything")
    }

    @Test func plansAreDeterministic() throws {
        let model = TransformerShape.bertLarge().model()
        let r = request(model, Fixtures.cluster(4, memory: 16 << 30), .timeBalanced)
        let a = try Planning.plan(r), b = try Planning.plan(r)
        #expect(a.layout == b.layout)
    }
}
