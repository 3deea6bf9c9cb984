/// The entry point of planning: validate the request, run the chosen planner, evaluate its
/// layout with cost model v1 and stamp the plan with the planner and the time it took.
public enum Planning {
    /// Knobs of the search planners that are not part of a request (benchmarks use them).
    public struct Settings: Sendable {
        /// VPIPE: on small instances, also start from the exact best partition given the
        /// per-stage solver. Off measures the local search on its own.
        public var exactPartitionOnSmallInstances = true
        public init(exactPartitionOnSmallInstances: Bool = true) {
            self.exactPartitionOnSmallInstances = exactPartitionOnSmallInstances
        }
    }

    public static func plan(_ request: PlanRequest, settings: Settings = Settings()) throws -> Plan {
        let started = ContinuousClock.now
        try Validation.validate(request)
        let costModel = CostModel(request)
        let layout: PlanLayout
        switch request.options.planner {
        case .uniform:
            layout = UniformPlanner.layout(costModel)
        case .parameters:
            layout = ParametersPlanner.layout(costModel)
        case .timeBalanced:
            layout = try BalancedPlanner.layout(costModel, policy: .keep, plannerName: "TIME_BALANCED")
        case .gpipe:
            layout = try BalancedPlanner.layout(costModel, policy: .recompute, plannerName: "GPIPE")
        case .vpipe:
            layout = try VPipePlanner.layout(costModel, useExactPartition: settings.exactPartitionOnSmallInstances)
        case .exact:
            layout = try ExactPlanner.layout(costModel)
        }
        var plan = try costModel.evaluate(layout)
        let violations = costModel.violations(plan)
        if !violations.isEmpty {
            throw VPipeError.infeasible(
                "the \(request.options.planner.name) plan does not fit: " + violations.joined(separator: "; "))
        }
        plan.planner = request.options.planner
        let elapsed = ContinuousClock.now - started
        plan.planningSeconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        return plan
    }
}
