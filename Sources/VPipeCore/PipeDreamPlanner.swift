/// PIPEDREAM: PipeDream's straight-pipeline partitioner (Narayanan et al., SOSP 2019,
/// `optimizer/optimizer_graph_hierarchical.py` run with `--straight_pipeline` and
/// `--activation_compression_ratio 1`), as a baseline.
///
/// Its dynamic program minimises the bottleneck over the states of the linearised graph:
/// a stage costs its forward+backward compute, and every boundary costs 2 × the bytes
/// crossing it / the link's bandwidth (activations forward, their gradients back), taken
/// as a separate term of the max, not added to the compute. It never looks at memory, as
/// published (its `--use_memory_constraint` is off by default and models no stash policy),
/// and every layer is KEEP. On a chain imported by `PipeDreamGraph` each prefix of the
/// linear order is a down-closed set of nodes, a cut PipeDream's states can make, so the DP
/// below is PipeDream's over the states the chain expresses (docs/pipedream-import.md
/// measures how many that is, and where it matters). The link term is cost model v1's
/// `2 · (latency + bytes / bandwidth)`: with latency 0 it is PipeDream's number exactly.
///
/// The plan is then evaluated by cost model v1 like every other; when a stage does not fit
/// its device, `Planning` reports the plan as infeasible with that stage and its bytes.
enum PipeDreamPlanner {
    static func layout(_ cm: CostModel) -> PlanLayout {
        let L = cm.model.layers.count, p = cm.cluster.devices.count
        let sums = PrefixSums(cm.model)
        let starts = MinMaxPartition.solve(layerCount: L, stageCount: p) { k, s, e in
            let compute = (sums.fwdBwd[e] - sums.fwdBwd[s]) / cm.cluster.devices[k].effectiveSpeed
            return max(compute, k > 0 ? cm.linkSeconds(after: k - 1, lastLayer: s - 1) : 0)
        } ?? UniformPlanner.layout(cm).ranges.map(\.lowerBound)  // unreachable: every stage is allowed
        return PlanLayout(stageStarts: starts, layerCount: L, policies: Array(repeating: .keep, count: L))
    }
}
