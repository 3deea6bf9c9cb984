/// PLANNER_EXACT: the exact optimum of T_iter under cost model v1, for small instances.
///
/// Every partition into p non-empty stages is enumerated; each candidate stage gets its
/// fastest fitting policies from an exhaustive `StagePolicySolver` search (3^len
/// assignments at worst, cut by exact bounds). Since T_iter grows with every stage time,
/// per-stage optima compose into the global optimum of each partition.
///
/// Limits (checked, with an error naming them): at most `maxLayers` layers and at most
/// `maxPartitions` partitions (C(L-1, p-1)). Ties between partitions with equal T_iter go
/// to the lower largest memory fill Mem_i/M_i, then to fewer SWAP/RECOMPUTE layers.
enum ExactPlanner {
    static let maxLayers = 16
    static let maxPartitions = 50_000

    static func layout(_ cm: CostModel) throws -> PlanLayout {
        let L = cm.model.layers.count, p = cm.cluster.devices.count
        if L > maxLayers {
            throw VPipeError.invalidField(
                field: "model.layers",
                message: "PLANNER_EXACT handles at most \(maxLayers) layers (its search is exponential in the stage length), got \(L); use PLANNER_VPIPE")
        }
        let partitions = binomial(L - 1, p - 1)
        if partitions > maxPartitions {
            throw VPipeError.invalidField(
                field: "cluster.devices",
                message: "PLANNER_EXACT handles at most \(maxPartitions) partitions, \(L) layers on \(p) devices have \(partitions); use PLANNER_VPIPE")
        }
        let oracle = StageOracle(cm, stageCount: p, nodeBudget: nil)
        var best: (starts: [Int], time: Double, fill: Double, moved: Int)?
        var starts = [Int](repeating: 0, count: p)
        func enumerate(_ k: Int) {
            if k == p {
                guard let r = evaluate(starts, oracle) else { return }
                if let b = best {
                    let tol = 1e-12 * b.time
                    if r.time > b.time + tol { return }
                    if abs(r.time - b.time) <= tol && (r.fill, r.moved) >= (b.fill, b.moved) { return }
                }
                best = (starts, r.time, r.fill, r.moved)
                return
            }
            for s in (starts[k - 1] + 1)...(L - (p - k)) {
                starts[k] = s
                enumerate(k + 1)
            }
        }
        if p == 1 { if let r = evaluate(starts, oracle) { best = (starts, r.time, r.fill, r.moved) } } else { enumerate(1) }
        guard let best, let layout = oracle.layout(best.starts) else {
            throw Infeasibility.explain(cm, planner: "EXACT", starts: VPipePlanner.balancedStarts(cm, recompute: false), oracle: oracle)
        }
        return layout
    }

    /// T_iter, the largest memory fill and the moved-layer count of a partition, or nil if a
    /// stage cannot fit.
    static func evaluate(_ starts: [Int], _ oracle: StageOracle) -> (time: Double, fill: Double, moved: Int)? {
        let cm = oracle.cm
        let L = cm.model.layers.count, p = starts.count
        var tau = 0.0, sum = 0.0, fill = 0.0, moved = 0
        for k in 0..<p {
            let e = k + 1 < p ? starts[k + 1] : L
            guard let c = oracle.choice(k, starts[k], e) else { return nil }
            let link = k < p - 1 ? cm.linkSeconds(after: k, lastLayer: e - 1) : 0
            tau = max(tau, c.stageSeconds, link)
            sum += c.stageSeconds + link
            fill = max(fill, c.peakMemoryBytes / Double(cm.cluster.devices[k].memoryBytes))
            moved += c.movedLayers
        }
        return (Double(cm.microBatches - 1) * tau + sum, fill, moved)
    }

    static func binomial(_ n: Int, _ k: Int) -> Int {
        if k < 0 || k > n { return 0 }
        var r = 1.0
        for i in 0..<min(k, n - k) { r = r * Double(n - i) / Double(i + 1) }
        return r > Double(Int.max / 2) ? Int.max / 2 : Int(r.rounded())
    }
}
