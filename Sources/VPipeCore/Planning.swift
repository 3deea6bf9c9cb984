/// The entry point of planning: validate the request, run the chosen planner, evaluate its
/// layout with cost model v1 and stamp the plan with the planner and the time it took.
public enum Planning {
    /// The layout of one of the baseline planners (UNIFORM, PARAMETERS, TIME_BALANCED, GPIPE,
    /// PIPEDREAM): what `plan` returns for it, and what VPIPE compares an unproven plan with.
    static func baselineLayout(_ kind: PlannerKind, _ cm: CostModel) throws -> PlanLayout {
        switch kind {
        case .uniform: return UniformPlanner.layout(cm)
        case .parameters: return ParametersPlanner.layout(cm)
        case .timeBalanced: return try BalancedPlanner.layout(cm, policy: .keep, plannerName: "TIME_BALANCED")
        case .gpipe: return try BalancedPlanner.layout(cm, policy: .recompute, plannerName: "GPIPE")
        case .pipedream: return PipeDreamPlanner.layout(cm)
        case .vpipe, .exact: throw VPipeError.invalidField(field: "options.planner", message: "\(kind.name) is not a baseline planner")
        }
    }

    /// Work limits, so that no valid request blocks a call for minutes: the exact
    /// min-bottleneck search of TIME_BALANCED/GPIPE/PIPEDREAM costs p·L²; VPIPE's local search grows
    /// faster than L. Real models (thousands of layers) are far inside both; larger chains
    /// should be grouped into blocks first.
    public static let maxBalancedWork = 400_000_000
    public static let maxVPipeLayers = 10_000

    static func checkWork(_ r: PlanRequest) throws {
        let L = r.model.layers.count, p = r.cluster.devices.count
        switch r.options.planner {
        case .timeBalanced, .gpipe, .pipedream:
            if p * L * L > maxBalancedWork {
                throw VPipeError.invalidField(field: "model.layers", message: "PLANNER_\(r.options.planner.name)'s exact search costs p·L² = \(p * L * L) steps, more than the \(maxBalancedWork) it allows; use PLANNER_VPIPE or group layers into blocks")
            }
        case .vpipe:
            if L > maxVPipeLayers {
                throw VPipeError.invalidField(field: "model.layers", message: "PLANNER_VPIPE plans at most \(maxVPipeLayers) layers, got \(L); group layers into blocks (a transformer block is one layer)")
            }
        default: break
        }
    }

    /// Knobs of the search planners that are not part of a request (benchmarks use them).
    public struct Settings: Sendable {
        /// VPIPE: on small instances, also start from the exact best partition given the
        /// per-stage solver. Off measures the local search on its own.
        public var exactPartitionOnSmallInstances = true
        /// VPIPE: search nodes one stage's policy solve may spend before it settles for its
        /// proven bound, and nodes all stage solves of a plan may spend before VPIPE falls
        /// back to the local search (docs/planners.md; `vpipe-bench proofs` measures them).
        public var stageNodeBudget = VPipePlanner.stageNodeBudget
        public var planNodeBudget = VPipePlanner.maxStageNodes
        public init(exactPartitionOnSmallInstances: Bool = true, stageNodeBudget: Int = VPipePlanner.stageNodeBudget,
                    planNodeBudget: Int = VPipePlanner.maxStageNodes) {
            self.exactPartitionOnSmallInstances = exactPartitionOnSmallInstances
            self.stageNodeBudget = stageNodeBudget
            self.planNodeBudget = planNodeBudget
        }
    }

    public static func plan(_ request: PlanRequest, settings: Settings = Settings()) throws -> Plan {
        let started = ContinuousClock.now
        try Validation.validate(request)
        try checkWork(request)
        let costModel = CostModel(request)
        let layout: PlanLayout
        var lowerBound = LowerBound.relaxation(costModel)
        var proven = false
        switch request.options.planner {
        case .uniform, .parameters, .timeBalanced, .gpipe, .pipedream:
            layout = try baselineLayout(request.options.planner, costModel)
        case .vpipe:
            let certified = try VPipePlanner.certifiedLayout(costModel, settings: settings)
            layout = certified.layout
            lowerBound = max(lowerBound, certified.lowerBound)
            proven = certified.proven
        case .exact:
            let exact = try ExactPlanner.solve(costModel)
            layout = exact.layout
            lowerBound = max(lowerBound, exact.optimalIterationSeconds)
            proven = true
        }
        var plan = try costModel.evaluate(layout)
        let violations = costModel.violations(plan)
        if !violations.isEmpty {
            throw VPipeError.infeasible(
                "the \(request.options.planner.name) plan does not fit: " + violations.joined(separator: "; "))
        }
        plan.planner = request.options.planner
        plan.objective = request.options.objective
        // The certificate. The bound is on T_iter whatever the objective; a plan that reaches
        // it is T_iter-optimal (the searches' sums are taken in another order than
        // `evaluate`'s, so they agree only to rounding).
        let reachesBound = lowerBound >= plan.iterationSeconds * (1 - 1e-9)
        switch request.options.objective {
        case .iterationTime:
            plan.provenOptimal = proven || reachesBound
            plan.lowerBoundSeconds = plan.provenOptimal ? plan.iterationSeconds : lowerBound
        case .throughput:
            // Smallest τ is only known from a search that proved it.
            plan.provenOptimal = proven
            plan.lowerBoundSeconds = reachesBound ? plan.iterationSeconds : lowerBound
        }
        let elapsed = ContinuousClock.now - started
        plan.planningSeconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        return plan
    }
}
