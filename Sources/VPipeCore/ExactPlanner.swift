/// PLANNER_EXACT: the exact optimum of T_iter under cost model v1, written to be the
/// independent reference VPIPE is measured against: it shares only `CostModel` and the
/// layer-by-layer branch-and-bound of `StagePolicySolver` with the rest of the planner, not
/// VPIPE's run-based stage solver, stage cache or partition DP.
///
/// - Each candidate stage gets its fastest fitting policies from an exhaustive search over
///   K/S/R per layer (`StagePolicySolver.search` without a node budget; its cuts are exact:
///   time and memory only grow as layers are assigned). Stages with the same device, n_i,
///   v_i, input size and layer profiles are solved once.
/// - Stage lengths are capped without losing the optimum: a feasible plan (the best of the
///   GPIPE and TIME_BALANCED baselines and the memory-blind balanced partitions) bounds
///   T_iter from above by U; a stage of the optimum has T_i ≤ τ ≤ T_iter/m ≤ U/m, so any
///   stage whose all-KEEP compute time exceeds U/m, or whose weights alone exceed its
///   device, is never offered.
/// - For every distinct value τ a stage or link time can take, in increasing order, a
///   dynamic program over (stage, end layer) finds the partition of smallest Σ(T_i + K_i)
///   with every term ≤ τ; (m−1)·τ + Σ is a candidate. Since Σ ≥ τ, the scan stops once
///   m·τ exceeds the best found.
/// Ties between equal T_iter go to the lower largest memory fill Mem_i/M_i, then to fewer
/// SWAP/RECOMPUTE layers, then to the lower τ. Under the THROUGHPUT objective the answer is
/// the DP at the first τ that admits a partition (smallest τ, then smallest Σ); the scan
/// still runs to the end to report the optimum T_iter as the certificate's bound. Work limits (checked, with errors naming them): at most
/// `maxLayers` layers, `maxCandidateStages` candidate stages and `maxNodes` search nodes.
enum ExactPlanner {
    static let maxLayers = 256
    static let maxCandidateStages = 200_000
    static let maxNodes = 200_000_000

    struct StageKey: Hashable {
        let memory: Int, speed: Double, host: Double, reserved: Int, n: Int, v: Int
        let input: Int, profiles: [Double]
    }

    /// The optimal layout for `cm.objective`, and the optimum T_iter over all feasible plans.
    static func solve(_ cm: CostModel) throws -> (layout: PlanLayout, optimalIterationSeconds: Double) {
        let L = cm.model.layers.count, p = cm.cluster.devices.count, m = cm.microBatches
        if L > maxLayers {
            throw VPipeError.invalidField(
                field: "model.layers",
                message: "PLANNER_EXACT handles at most \(maxLayers) layers (its per-stage search is exponential in the stage length), got \(L); use PLANNER_VPIPE")
        }
        let solver = StagePolicySolver(costModel: cm, stageCount: p)
        var memo: [StageKey: StagePolicySolver.Choice?] = [:]
        var nodes = 0
        func solve(_ k: Int, _ s: Int, _ e: Int) throws -> StagePolicySolver.Choice? {
            let d = cm.cluster.devices[k]
            var profiles: [Double] = []
            for l in s..<e {
                let q = cm.model.layers[l].profile
                profiles += [q.fwdSeconds, q.bwdSeconds, Double(q.stashBytes), Double(q.outputBytes), Double(q.paramBytes)]
            }
            let key = StageKey(memory: d.memoryBytes, speed: d.effectiveSpeed, host: d.hostBandwidth, reserved: d.reservedBytes,
                               n: cm.inFlight(stage: k, of: p), v: cm.weightVersions(stage: k, of: p),
                               input: cm.model.inputBytes(ofLayer: s), profiles: profiles)
            if let c = memo[key] { return c }
            let stage = solver.describe(k, s..<e)
            let keep = solver.choice(Array(repeating: .keep, count: e - s), stage)
            var best: StagePolicySolver.Choice? = keep.peakMemoryBytes <= stage.capacity ? keep : nil
            if best == nil {
                guard let used = solver.search(stage, incumbent: &best, budget: maxNodes - nodes) else {
                    throw VPipeError.invalidField(
                        field: "model.layers",
                        message: "PLANNER_EXACT stopped after \(maxNodes) search nodes without a proof (stage \(k), layers \(s)-\(e - 1)); use PLANNER_VPIPE, whose plan carries a proven bound")
                }
                nodes += used
            }
            memo[key] = best
            return best
        }

        // An upper bound from plans that fit.
        var upper = Double.infinity
        for (policy, name) in [(MemoryPolicy.keep, "TIME_BALANCED"), (.recompute, "GPIPE")] {
            if let l = try? BalancedPlanner.layout(cm, policy: policy, plannerName: name), let plan = try? cm.evaluate(l), plan.isFeasible {
                upper = min(upper, plan.iterationSeconds)
            }
        }
        for starts in [VPipePlanner.balancedStarts(cm, recompute: false), VPipePlanner.balancedStarts(cm, recompute: true)] {
            var tau = 0.0, sum = 0.0, fits = true
            for k in 0..<p {
                let e = k + 1 < p ? starts[k + 1] : L
                guard let c = try solve(k, starts[k], e) else { fits = false; break }
                let link = k < p - 1 ? cm.linkSeconds(after: k, lastLayer: e - 1) : 0
                tau = max(tau, c.stageSeconds, link)
                sum += c.stageSeconds + link
            }
            if fits { upper = min(upper, Double(m - 1) * tau + sum) }
        }
        let cap = upper / Double(m) * (1 + 1e-9)  // rounding: U is a sum taken in another order

        // Candidate stages: (stage, start, end) → (T_i, K_i, fill, moved).
        struct Candidate { let s: Int, e: Int, time: Double, link: Double, fill: Double, moved: Int }
        var candidates = [[Candidate]](repeating: [], count: p)
        var count = 0
        var fwdBwd = [0.0], params = [0.0]
        for layer in cm.model.layers {
            fwdBwd.append(fwdBwd.last! + layer.profile.fwdSeconds + layer.profile.bwdSeconds)
            params.append(params.last! + Double(layer.profile.paramBytes))
        }
        for k in 0..<p {
            let d = cm.cluster.devices[k]
            let state = cm.model.stateFactor + Double(cm.weightVersions(stage: k, of: p)) - 1
            for s in (k == 0 ? 0 : k)...(k == 0 ? 0 : L - (p - k)) {
                for e in (s + 1)...(L - (p - 1 - k)) {
                    if k == p - 1 && e != L { continue }
                    if (fwdBwd[e] - fwdBwd[s]) / d.effectiveSpeed > cap { break }
                    if (params[e] - params[s]) * state + Double(d.reservedBytes) > Double(d.memoryBytes) { break }
                    count += 1
                    if count > maxCandidateStages {
                        throw VPipeError.invalidField(
                            field: "model.layers",
                            message: "PLANNER_EXACT would examine more than \(maxCandidateStages) candidate stages; use PLANNER_VPIPE")
                    }
                    guard let c = try solve(k, s, e) else { continue }
                    let link = k < p - 1 ? cm.linkSeconds(after: k, lastLayer: e - 1) : 0
                    candidates[k].append(Candidate(s: s, e: e, time: c.stageSeconds, link: link,
                                                   fill: c.peakMemoryBytes / Double(d.memoryBytes), moved: c.movedLayers))
                }
            }
        }

        // The scan over τ.
        var taus = Set<Double>()
        for list in candidates { for c in list { taus.insert(max(c.time, c.link)) } }
        var best: (starts: [Int], time: Double, fill: Double, moved: Int, tau: Double)?
        var smallestTau: (starts: [Int], time: Double, fill: Double, moved: Int, tau: Double)?
        for tau in taus.sorted() {
            if let b = best, Double(m) * tau > b.time * (1 + 1e-12) { break }
            // sum[k][e], fill, moved, from: best stages 0...k covering layers 0..<e.
            var sum = [[Double]](repeating: [Double](repeating: .infinity, count: L + 1), count: p)
            var fill = [[Double]](repeating: [Double](repeating: .infinity, count: L + 1), count: p)
            var moved = [[Int]](repeating: [Int](repeating: 0, count: L + 1), count: p)
            var from = [[Int]](repeating: [Int](repeating: -1, count: L + 1), count: p)
            var top = [[Double]](repeating: [Double](repeating: 0, count: L + 1), count: p)
            for k in 0..<p {
                for c in candidates[k] where c.time <= tau && c.link <= tau {
                    let prevSum = k == 0 ? 0 : sum[k - 1][c.s]
                    if prevSum == .infinity { continue }
                    let total = prevSum + c.time + c.link
                    let f = max(k == 0 ? 0 : fill[k - 1][c.s], c.fill)
                    let mv = (k == 0 ? 0 : moved[k - 1][c.s]) + c.moved
                    let tol = 1e-12 * total
                    let current = sum[k][c.e]
                    let t = max(k == 0 ? 0 : top[k - 1][c.s], c.time, c.link)
                    if total < current - tol || (total <= current + tol && (f, mv, t) < (fill[k][c.e], moved[k][c.e], top[k][c.e])) {
                        sum[k][c.e] = total; fill[k][c.e] = f; moved[k][c.e] = mv; from[k][c.e] = c.s
                        top[k][c.e] = t
                    }
                }
            }
            guard sum[p - 1][L] < .infinity else { continue }
            let time = Double(m - 1) * top[p - 1][L] + sum[p - 1][L]
            let f = fill[p - 1][L], mv = moved[p - 1][L], t = top[p - 1][L]
            func starts() -> [Int] {
                var starts = [Int](repeating: 0, count: p)
                var e = L
                for k in stride(from: p - 1, through: 0, by: -1) { starts[k] = from[k][e]; e = starts[k] }
                return starts
            }
            if smallestTau == nil { smallestTau = (starts(), time, f, mv, t) }
            if let b = best {
                let tol = 1e-12 * b.time
                if time > b.time + tol { continue }
                if time >= b.time - tol && (f, mv, t) >= (b.fill, b.moved, b.tau) { continue }
            }
            best = (starts(), time, f, mv, t)
        }
        guard let optimum = best, let best = cm.objective == .throughput ? smallestTau : best else {
            let oracle = StageOracle(cm, stageCount: p, nodeBudget: 20_000)
            throw Infeasibility.explain(cm, planner: "EXACT", starts: VPipePlanner.balancedStarts(cm, recompute: false), oracle: oracle)
        }
        var policies: [MemoryPolicy] = []
        for k in 0..<p {
            let e = k + 1 < p ? best.starts[k + 1] : L
            policies += try solve(k, best.starts[k], e)!.policies
        }
        return (PlanLayout(stageStarts: best.starts, layerCount: L, policies: policies), optimum.time)
    }
}
