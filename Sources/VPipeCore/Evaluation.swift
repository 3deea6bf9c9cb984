/// What `vp_evaluate` / `vp_simulate` and the `vpipe` tool answer for a layout a caller
/// brings: the request is validated (every field's meaning, naming it), then cost model v1
/// evaluates the layout, or the discrete-event simulator plays it. The ABI and the CLI call
/// these; neither repeats the checks.
public enum Evaluation {
    /// Cost model v1 on `layout`: the plan with every number, and the constraints it
    /// violates (empty: feasible).
    public static func evaluate(model: ModelSpec, cluster: ClusterSpec, layout: PlanLayout, schedule: Schedule,
                                microBatches: Int) throws -> (plan: Plan, violations: [String]) {
        try Validation.validate(model)
        try Validation.validate(cluster)
        let costModel = CostModel(model: model, cluster: cluster, schedule: schedule, microBatches: microBatches)
        let plan = try costModel.evaluate(layout)
        return (plan, costModel.violations(plan))
    }

    /// The simulator's iteration of `layout`.
    public static func simulate(model: ModelSpec, cluster: ClusterSpec, layout: PlanLayout, schedule: Schedule,
                                microBatches: Int) throws -> SimulationReport {
        try Validation.validate(model)
        try Validation.validate(cluster)
        return try Simulator(model: model, cluster: cluster).simulate(layout, schedule: schedule, microBatches: microBatches)
    }
}
