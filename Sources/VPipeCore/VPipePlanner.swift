/// PLANNER_VPIPE: swap, recompute and re-partition chosen jointly (the SRP problem).
///
/// On instances of realistic size (up to a few hundred layers) the plan is the optimum of
/// cost model v1, with a certificate:
/// 1. A feasible plan bounds the optimum from above: the best of the memory-blind balanced
///    partitions (all-KEEP and all-RECOMPUTE times) with each stage's policies solved, or,
///    when none of them fits, the local search below.
/// 2. `OptimalPartition` runs the Σ-minimising DP over candidate bottlenecks on every stage
///    that can be in a better plan (stage lengths capped by that bound and by memory), each
///    stage's policies from the exact `RunPolicySolver` (memoised in `StageCache`).
/// 3. When every stage solve ran to the end the result is proven optimal; otherwise the
///    same DP over the stages' proven lower bounds gives the reported lower bound.
/// Larger instances (more candidate stages than `maxCandidateStages`) use the paper's local
/// search, made cheaper by cost model v1's structure:
///  - start from balanced partitions: the minimum-bottleneck cut of the all-KEEP times and
///    of the all-RECOMPUTE times (memory-blind, by binary search on τ with a greedy fill);
///  - ask `StagePolicySolver` for each stage's fastest fitting policies;
///  - move layers between adjacent stages, the bottleneck stage's boundaries first (an unfit
///    stage counts as the worst bottleneck), one layer or a run of identical layers at a
///    time, and keep a move when the partition's score improves, until no move improves;
/// and report the relaxation bound of `LowerBound`.
/// Plans are ranked by the request's objective (`PlanObjective`): T_iter, then τ by default;
/// τ, then T_iter under THROUGHPUT. The window of step 2 holds for both: a plan's τ is at
/// most its T_iter / m, so the stages of the plan of smallest τ are inside it too.
/// Deterministic: every choice is taken in a fixed order, ties keep the earlier candidate.
public enum VPipePlanner {
    /// The DP's work limit: candidate stages (stage, first layer, last layer) it may solve
    /// (ResNet-101's 346 layers on 16 stages with ample memory need more than 60,000).
    static let maxCandidateStages = 250_000
    /// ... and the stage-search nodes it may spend in all (long stages of many distinct
    /// layers, e.g. a ResNet under tight memory, fall back to the local search instead of
    /// taking seconds).
    public static let maxStageNodes = 3_000_000
    /// Nodes one stage's `RunPolicySolver` may spend before it reports its proven bound.
    /// Chosen from `vpipe-bench proofs 240 <budget>` (docs/benchmarks.md): at 50,000 one
    /// 3-stage instance of 44 layers lost its proof (gap ≤ 18.5%); at 200,000 all 240 are
    /// proven, in the same time.
    public static let stageNodeBudget = 200_000

    /// The proven lower bounds VPIPE can quote for one stage's time (stage `i` of `request`'s
    /// cluster owning `layers`): `quick`, without searching (`RunPolicySolver.quickBound`), and
    /// `searched`, after a policy search of at most `nodeBudget` nodes. Both are +∞ when no
    /// policy fits. Public so that tests can hold them against an exhaustive search.
    public static func stageLowerBounds(_ request: PlanRequest, stage i: Int, layers: Range<Int>,
                                        nodeBudget: Int) -> (quick: Double, searched: Double) {
        let solver = RunPolicySolver(costModel: CostModel(request), stageCount: request.cluster.devices.count, nodeBudget: nodeBudget)
        return (solver.quickBound(stage: i, layers: layers), solver.solve(stage: i, layers: layers).lowerBound)
    }

    struct Certified {
        var layout: PlanLayout
        /// Proven lower bound on T_iter of any feasible plan.
        var lowerBound: Double
        var proven: Bool
    }

    /// `useExactPartition: false` keeps to the local search (the benchmark uses it to
    /// measure the heuristic on its own).
    static func layout(_ cm: CostModel, useExactPartition: Bool = true) throws -> PlanLayout {
        try certifiedLayout(cm, settings: .init(exactPartitionOnSmallInstances: useExactPartition)).layout
    }

    static func certifiedLayout(_ cm: CostModel, settings: Planning.Settings = .init()) throws -> Certified {
        typealias Times = (bottleneck: Double, iteration: Double)
        let found: Certified
        do { found = try searchedLayout(cm, settings: settings) } catch {
            // The local search found nothing that fits; a baseline's plan may still.
            guard settings.exactPartitionOnSmallInstances, let rescue = bestBaseline(cm, settings, over: nil) else { throw error }
            return Certified(layout: rescue, lowerBound: LowerBound.relaxation(cm), proven: false)
        }
        guard !found.proven, settings.exactPartitionOnSmallInstances else { return found }
        // Not proven: make sure no baseline's plan beats it.
        let layout = bestBaseline(cm, settings, over: try cm.evaluate(found.layout)) ?? found.layout
        return Certified(layout: layout, lowerBound: found.lowerBound, proven: false)
    }

    /// The best feasible baseline layout (each also with its stages' policies re-solved,
    /// which can only help) that the objective prefers over `current`; nil when none does.
    static func bestBaseline(_ cm: CostModel, _ settings: Planning.Settings, over current: Plan?) -> PlanLayout? {
        let cache = StageCache(cm, stageCount: cm.cluster.devices.count, nodeBudget: settings.stageNodeBudget)
        var best: (layout: PlanLayout, times: (bottleneck: Double, iteration: Double))?
        if let current { best = (current.layout, (current.bottleneckSeconds, current.iterationSeconds)) }
        var improved = false
        for layout in baselineLayouts(cm) {
            for candidate in [layout, Self.layout(layout.ranges.map(\.lowerBound), cache)].compactMap({ $0 }) {
                guard let plan = try? cm.evaluate(candidate), plan.isFeasible else { continue }
                let times = (bottleneck: plan.bottleneckSeconds, iteration: plan.iterationSeconds)
                if best == nil || cm.objective.prefers(times, over: best!.times) { best = (candidate, times); improved = true }
            }
        }
        return improved ? best?.layout : nil
    }

    /// Work limit of the baseline check: their min-bottleneck searches cost p·L² each.
    static let baselineCheckWork = 4_000_000

    /// The baselines' layouts (UNIFORM, PARAMETERS, PIPEDREAM, TIME_BALANCED, GPIPE), or
    /// none when their searches would cost more than `baselineCheckWork`.
    static func baselineLayouts(_ cm: CostModel) -> [PlanLayout] {
        let L = cm.model.layers.count, p = cm.cluster.devices.count
        guard p * L * L <= baselineCheckWork else { return [] }
        return [PlannerKind.uniform, .parameters, .pipedream, .timeBalanced, .gpipe].compactMap { try? Planning.baselineLayout($0, cm) }
    }

    /// The exact search when it fits its limits, else the local search (see the type's comment).
    static func searchedLayout(_ cm: CostModel, settings: Planning.Settings) throws -> Certified {
        let useExactPartition = settings.exactPartitionOnSmallInstances
        let p = cm.cluster.devices.count
        let cache = StageCache(cm, stageCount: p, nodeBudget: settings.stageNodeBudget)
        let starts = [balancedStarts(cm, recompute: false), balancedStarts(cm, recompute: true)]
        let objective = cm.objective
        typealias Times = (bottleneck: Double, iteration: Double)
        func measured(_ plan: Plan) -> Times { (plan.bottleneckSeconds, plan.iterationSeconds) }
        var upper: (starts: [Int], times: Times)?
        for s in starts {
            if let t = Self.times(s, cache), upper == nil || objective.prefers(t, over: upper!.times) { upper = (s, t) }
        }
        var local: (layout: PlanLayout, times: Times)?
        if upper == nil || !useExactPartition {
            // Nothing balanced fits: the local search walks towards a feasible partition.
            let oracle = StageOracle(cm, stageCount: p, nodeBudget: 20_000)
            if let found = try? localSearch(cm, oracle: oracle, useExactPartition: useExactPartition) {
                local = (found, measured(try cm.evaluate(found)))
            }
        }
        let upperBound = min(upper?.times.iteration ?? .infinity, local?.times.iteration ?? .infinity)
        var overBudgetBound = 0.0
        if useExactPartition, let exact = optimal(cm, cache: cache, upperBound: upperBound, nodeBudget: settings.planNodeBudget,
                                                  overBudgetBound: &overBudgetBound) {
            if let local, objective.prefers(local.times, over: exact.times) {
                return Certified(layout: local.layout, lowerBound: exact.lowerBound, proven: false)
            }
            if let upper, objective.prefers(upper.times, over: exact.times), let l = layout(upper.starts, cache) {
                return Certified(layout: l, lowerBound: exact.lowerBound, proven: false)
            }
            if let l = layout(exact.starts, cache) {
                return Certified(layout: l, lowerBound: exact.lowerBound, proven: exact.proven)
            }
        }
        // Too large for the DP (or it found nothing): the local search and the relaxation bound.
        if local == nil {
            let oracle = StageOracle(cm, stageCount: p, nodeBudget: 20_000)
            let found = try localSearch(cm, oracle: oracle, useExactPartition: useExactPartition)
            local = (found, measured(try cm.evaluate(found)))
        }
        var chosen = local!
        if let upper, objective.prefers(upper.times, over: chosen.times), let l = layout(upper.starts, cache) {
            chosen = (l, upper.times)
        }
        return Certified(layout: chosen.layout, lowerBound: max(LowerBound.relaxation(cm), overBudgetBound), proven: false)
    }

    /// τ and T_iter of a partition with each stage's policies solved, nil when a stage does not fit.
    static func times(_ starts: [Int], _ cache: StageCache) -> (bottleneck: Double, iteration: Double)? {
        let cm = cache.cm
        let L = cm.model.layers.count, p = starts.count
        var tau = 0.0, sum = 0.0
        for k in 0..<p {
            let e = k + 1 < p ? starts[k + 1] : L
            guard let c = cache.result(k, starts[k], e).choice else { return nil }
            let link = k < p - 1 ? cm.linkSeconds(after: k, lastLayer: e - 1) : 0
            tau = max(tau, c.stageSeconds, link)
            sum += c.stageSeconds + link
        }
        return (tau, Double(cm.microBatches - 1) * tau + sum)
    }

    static func layout(_ starts: [Int], _ cache: StageCache) -> PlanLayout? {
        let L = cache.cm.model.layers.count, p = starts.count
        var policies: [MemoryPolicy] = []
        policies.reserveCapacity(L)
        for k in 0..<p {
            guard let c = cache.result(k, starts[k], k + 1 < p ? starts[k + 1] : L).choice else { return nil }
            policies += c.policies
        }
        return PlanLayout(stageStarts: starts, layerCount: L, policies: policies)
    }

    /// The exact search (see the type's comment) for `cm.objective`; nil when the instance
    /// has more candidate stages than `maxCandidateStages` or no partition fits.
    /// `upperBound`: T_iter of a feasible plan. `lowerBound`: a proven bound on the T_iter of
    /// every feasible plan (whatever the objective); `proven`: the plan is the objective's optimum.
    /// When the stage searches run past `nodeBudget` the answer is nil and `overBudgetBound`
    /// is set to a proven bound on T_iter all the same: the DP over the proven stage bounds
    /// of the stages searched and `StageCache.quickBound` of the rest.
    static func optimal(_ cm: CostModel, cache: StageCache, upperBound: Double, nodeBudget: Int = maxStageNodes,
                        overBudgetBound: inout Double)
        -> (starts: [Int], times: (bottleneck: Double, iteration: Double), lowerBound: Double, proven: Bool)? {
        let L = cm.model.layers.count, p = cm.cluster.devices.count, m = cm.microBatches
        let sums = PrefixSums(cm.model)
        let tauCap = upperBound / Double(m) * (1 + 1e-9)  // rounding: the bound is a sum taken in another order
        // A stage can be in a plan of the window only if its all-KEEP compute time is within
        // tauCap and its weights fit (both only grow as the stage grows, at either end).
        func admissible(_ k: Int, _ s: Int, _ e: Int) -> Bool {
            let device = cm.cluster.devices[k]
            let stateFactor = cm.model.stateFactor + Double(cm.weightVersions(stage: k, of: p)) - 1
            return (sums.fwdBwd[e] - sums.fwdBwd[s]) / device.effectiveSpeed <= tauCap
                && (sums.params[e] - sums.params[s]) * stateFactor + Double(device.reservedBytes) <= Double(device.memoryBytes)
        }
        // Bands of stage starts: stages 0..<k cover at most front[k] layers (each taking the
        // longest admissible stage is the farthest any admissible stages reach, since a
        // stage starting later ends at least as far), and stages k..<p cover layers from
        // back[k] on at the earliest (the same argument from the end). So stage k starts in
        // back[k]...front[k]; on long chains this keeps the candidates near the balanced cuts.
        var front = [Int](repeating: 0, count: p + 1), back = [Int](repeating: L, count: p + 1)
        for k in 0..<p {
            var e = front[k]
            while e < L && admissible(k, front[k], e + 1) { e += 1 }
            front[k + 1] = e
        }
        for k in stride(from: p - 1, through: 0, by: -1) {
            var s = back[k + 1]
            while s > 0 && admissible(k, s - 1, back[k + 1]) { s -= 1 }
            back[k] = s
        }
        // Enumerate candidate stages first (cheap bounds only), then solve them.
        var triples: [(k: Int, s: Int, e: Int, link: Double)] = []
        for k in 0..<p {
            let firstStart = k == 0 ? 0 : max(k, back[k]), lastStart = k == 0 ? 0 : min(L - (p - k), front[k])
            guard firstStart <= lastStart else { return nil }
            for s in firstStart...lastStart {
                let lastEnd = L - (p - 1 - k)
                for e in (s + 1)...lastEnd {
                    if k == p - 1 && e != L { continue }
                    if k < p - 1 && e < back[k + 1] { continue }
                    if !admissible(k, s, e) { break }
                    let link = k < p - 1 ? cm.linkSeconds(after: k, lastLayer: e - 1) : 0
                    if link > tauCap { continue }
                    triples.append((k, s, e, link))
                    if triples.count > maxCandidateStages { return nil }
                }
            }
        }
        cache.reserve(triples.count)
        var upperItems = [[OptimalPartition.Item]](repeating: [], count: p)
        var lowerItems = [[OptimalPartition.Item]](repeating: [], count: p)
        var allExact = true
        var overBudget = false
        for t in triples {
            if overBudget {
                let bound = cache.quickBound(t.k, t.s, t.e)
                if bound <= tauCap { lowerItems[t.k].append(.init(start: t.s, end: t.e, seconds: bound, link: t.link, fill: 0, moved: 0)) }
                continue
            }
            let r = cache.result(t.k, t.s, t.e)
            overBudget = cache.nodes > nodeBudget  // this answer still counts; the rest only get bounds
            if r.lowerBound == .infinity || r.lowerBound > tauCap { continue }
            let capacity = Double(cm.cluster.devices[t.k].memoryBytes)
            if let c = r.choice {
                upperItems[t.k].append(.init(start: t.s, end: t.e, seconds: c.stageSeconds, link: t.link,
                                             fill: c.peakMemoryBytes / capacity, moved: c.movedLayers))
            }
            if !r.exact {
                allExact = false
                lowerItems[t.k].append(.init(start: t.s, end: t.e, seconds: r.lowerBound, link: t.link, fill: 0, moved: 0))
            } else if let c = r.choice {
                lowerItems[t.k].append(.init(start: t.s, end: t.e, seconds: c.stageSeconds, link: t.link, fill: 0, moved: 0))
            }
        }
        if overBudget {
            // Plans outside the window are no better than the upper bound, which is a plan.
            let bound = OptimalPartition.solve(items: lowerItems, layerCount: L, microBatches: m)?.iterationSeconds ?? .infinity
            if bound < .infinity { overBudgetBound = min(bound, upperBound) }
            return nil
        }
        let best = OptimalPartition.solve(items: upperItems, layerCount: L, microBatches: m, objective: cm.objective)
        var lowerBound: Double
        if allExact && cm.objective == .iterationTime {
            lowerBound = best?.iterationSeconds ?? .infinity
        } else {
            // The T_iter optimum over exact stage times (or their proven lower bounds).
            lowerBound = OptimalPartition.solve(items: allExact ? upperItems : lowerItems, layerCount: L, microBatches: m)?
                .iterationSeconds ?? .infinity
        }
        // Plans outside the window are no better than the upper bound, which is a plan.
        lowerBound = min(lowerBound, upperBound)
        guard let best else { return nil }
        return (best.starts, (best.bottleneckSeconds, best.iterationSeconds), min(lowerBound, best.iterationSeconds), allExact)
    }

    /// The paper's local search (see the type's comment).
    static func localSearch(_ cm: CostModel, oracle: StageOracle, useExactPartition: Bool) throws -> PlanLayout {
        var starts = [balancedStarts(cm, recompute: false), balancedStarts(cm, recompute: true)]
        if let s = bottleneckStarts(oracle) { starts.insert(s, at: 0) }
        if useExactPartition, let s = exactPartition(oracle) { starts.insert(s, at: 0) }
        var best: (starts: [Int], score: StageOracle.Score)?
        for start in starts where best?.starts != start {
            let improved = improve(start, oracle: oracle, runs: oracle.runStart)
            if best == nil || improved.score < best!.score { best = improved }
        }
        guard let best, best.score.unfit == 0, let layout = oracle.layout(best.starts) else {
            throw Infeasibility.explain(cm, planner: "VPIPE", starts: best?.starts ?? starts[0], oracle: oracle)
        }
        return layout
    }

    /// Hill climbing over boundary moves; the bottleneck stage's boundaries are tried first.
    static func improve(_ initial: [Int], oracle: StageOracle, runs: [Int]) -> (starts: [Int], score: StageOracle.Score) {
        let cm = oracle.cm
        let L = cm.model.layers.count, p = initial.count
        var starts = initial
        var score = oracle.score(starts)
        guard p > 1 else { return (starts, score) }
        let wide = p * L * L / 2 <= exactStartBudget
        var iterations = 0
        while iterations < 50 * L {
            iterations += 1
            var improved = false
            for b in boundaryOrder(starts, oracle: oracle) {
                // Boundary b is the start of stage b (1...p-1). Try moving it by one layer and
                // by the length of the identical run next to it, in both directions.
                let lo = starts[b - 1] + 1
                let hi = (b + 1 < p ? starts[b + 1] : L) - 1
                var candidates: [Int] = [starts[b] - 1, starts[b] + 1]
                let runBefore = starts[b] - runs[starts[b] - 1]  // layers of the run ending before the boundary
                if runBefore > 1 { candidates.append(starts[b] - runBefore / 2) }
                if starts[b] < L, runs[starts[b]] == starts[b] {
                    var e = starts[b]
                    while e < L && runs[e] == starts[b] { e += 1 }
                    if e - starts[b] > 1 { candidates.append(starts[b] + (e - starts[b]) / 2) }
                }
                // On small instances every position between the neighbouring boundaries is a
                // candidate (coordinate descent); large ones keep to the short moves above.
                if wide { candidates += Array(lo...max(lo, hi)) }
                for c in candidates where c >= lo && c <= hi && c != starts[b] {
                    var trial = starts
                    trial[b] = c
                    let s = oracle.score(trial)
                    if s < score {
                        starts = trial
                        score = s
                        improved = true
                        break
                    }
                }
                if improved { break }
            }
            // Shift a group of consecutive boundaries together by one layer: moves a whole
            // window of stages, which single-boundary moves cannot do without first making
            // the score worse.
            if !improved {
                let maxGroup = p <= 8 ? p - 1 : 4
                search: for size in 2...max(2, maxGroup) where size <= p - 1 {
                    for first in 1...(p - size) {
                        for delta in [-1, 1] {
                            var trial = starts
                            for b in first..<(first + size) { trial[b] += delta }
                            guard isValid(trial, L) else { continue }
                            let s = oracle.score(trial)
                            if s < score {
                                starts = trial
                                score = s
                                improved = true
                                break search
                            }
                        }
                    }
                }
            }
            if !improved { break }
        }
        return (starts, score)
    }

    static func isValid(_ starts: [Int], _ L: Int) -> Bool {
        guard starts.first == 0 else { return false }
        for k in 1..<starts.count where starts[k] <= starts[k - 1] { return false }
        return starts.last! < L
    }

    /// On small instances (p·L² ≤ `exactPartitionBudget`), the exact best partition given the
    /// per-stage solver: for every candidate bottleneck τ (each stage or link time that can
    /// occur), the dynamic program minimising Σ(T_i + K_i) with every term ≤ τ; the best
    /// (m−1)·τ + Σ wins. O((p·L²)²) stage look-ups, so only for small instances.
    static let exactPartitionBudget = 1_500

    static func exactPartition(_ oracle: StageOracle) -> [Int]? {
        let cm = oracle.cm
        let L = cm.model.layers.count, p = cm.cluster.devices.count
        guard p * L * L <= exactPartitionBudget else { return nil }
        var taus = Set<Double>()
        for k in 0..<p {
            for s in k..<L {
                for e in (s + 1)...L {
                    if let c = oracle.choice(k, s, e) { taus.insert(c.stageSeconds) }
                    if k < p - 1 { taus.insert(cm.linkSeconds(after: k, lastLayer: e - 1)) }
                }
            }
        }
        var best: (starts: [Int], time: Double)?
        for tau in taus.sorted() {
            // Σ-minimising DP with every stage and link time within τ.
            var cost = [[Double]](repeating: [Double](repeating: .infinity, count: L + 1), count: p)
            var from = [[Int]](repeating: [Int](repeating: -1, count: L + 1), count: p)
            func allowed(_ k: Int, _ s: Int, _ e: Int) -> Double? {
                guard let c = oracle.choice(k, s, e), c.stageSeconds <= tau else { return nil }
                let link = k < p - 1 ? cm.linkSeconds(after: k, lastLayer: e - 1) : 0
                return link <= tau ? c.stageSeconds + link : nil
            }
            for e in 1...L { if let t = allowed(0, 0, e) { cost[0][e] = t; from[0][e] = 0 } }
            if p > 1 {
                for k in 1..<p {
                    for e in (k + 1)...L {
                        for s in k..<e where cost[k - 1][s] < .infinity {
                            if let t = allowed(k, s, e), cost[k - 1][s] + t < cost[k][e] {
                                cost[k][e] = cost[k - 1][s] + t
                                from[k][e] = s
                            }
                        }
                    }
                }
            }
            guard cost[p - 1][L] < .infinity else { continue }
            let time = Double(cm.microBatches - 1) * tau + cost[p - 1][L]
            if best == nil || time < best!.time * (1 - 1e-12) {
                var starts = [Int](repeating: 0, count: p)
                var e = L
                for k in stride(from: p - 1, through: 0, by: -1) { starts[k] = from[k][e]; e = from[k][e] }
                best = (starts, time)
            }
        }
        return best?.starts
    }

    /// Boundaries (stage starts 1...p-1) ordered so that those of the worst stage come first:
    /// unfit stages, then by stage time, descending.
    static func boundaryOrder(_ starts: [Int], oracle: StageOracle) -> [Int] {
        let cm = oracle.cm
        let L = cm.model.layers.count, p = starts.count
        var badness: [(Double, Int)] = []
        for k in 0..<p {
            let e = k + 1 < p ? starts[k + 1] : L
            let t = oracle.choice(k, starts[k], e)?.stageSeconds ?? .infinity
            let link = k < p - 1 ? cm.linkSeconds(after: k, lastLayer: e - 1) : 0
            badness.append((max(t, link), k))
        }
        badness.sort { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 < $1.1 }
        var order: [Int] = []
        for (_, k) in badness {
            for b in [k, k + 1] where b >= 1 && b <= p - 1 && !order.contains(b) { order.append(b) }
        }
        return order
    }

    /// Budget of candidate stages for the exact bottleneck start: p·L²/2 stage solves.
    static let exactStartBudget = 4_000

    /// On instances small enough, the partition with the exact minimum bottleneck under the
    /// solver's per-stage times (memory included), by the min-max dynamic program; nil when
    /// the instance is too large or no partition fits.
    static func bottleneckStarts(_ oracle: StageOracle) -> [Int]? {
        let cm = oracle.cm
        let L = cm.model.layers.count, p = cm.cluster.devices.count
        guard p * L * L / 2 <= exactStartBudget else { return nil }
        return MinMaxPartition.solve(layerCount: L, stageCount: p) { k, s, e in
            guard let c = oracle.choice(k, s, e) else { return nil }
            return max(c.stageSeconds, k > 0 ? cm.linkSeconds(after: k - 1, lastLayer: s - 1) : 0)
        }
    }

    /// The memory-blind minimum-bottleneck cut of the all-KEEP (or all-RECOMPUTE) stage
    /// times and the link times: binary search on τ, each test a greedy fill that takes the
    /// farthest cut whose stage time and link time stay within τ (optimal for a chain).
    static func balancedStarts(_ cm: CostModel, recompute: Bool) -> [Int] {
        let L = cm.model.layers.count, p = cm.cluster.devices.count
        let sums = PrefixSums(cm.model)
        func time(_ k: Int, _ s: Int, _ e: Int) -> Double {
            (sums.fwdBwd[e] - sums.fwdBwd[s] + (recompute ? sums.fwd[e] - sums.fwd[s] : 0)) / cm.cluster.devices[k].effectiveSpeed
        }
        func fill(_ tau: Double) -> [Int]? {
            var starts: [Int] = []
            var s = 0
            for k in 0..<p {
                starts.append(s)
                if k == p - 1 { return time(k, s, L) <= tau ? starts : nil }
                let maxEnd = L - (p - 1 - k)
                var e = s + 1
                guard time(k, s, e) <= tau else { return nil }
                while e < maxEnd && time(k, s, e + 1) <= tau { e += 1 }
                while e > s && cm.linkSeconds(after: k, lastLayer: e - 1) > tau { e -= 1 }
                if e == s { return nil }
                s = e
            }
            return nil
        }
        // An upper bound on τ: all layers on the slowest device, the largest output on the slowest link.
        let largestOutput = Double(cm.model.layers.map(\.profile.outputBytes).max() ?? 0)
        var hi = 1e-9
        for k in 0..<p { hi = max(hi, time(k, 0, L)) }
        for link in cm.cluster.links { hi = max(hi, 2 * (link.latency + largestOutput / link.bandwidth)) }
        hi *= 2
        var best = fill(hi) ?? UniformPlanner.layout(cm).ranges.map(\.lowerBound)
        var lo = 0.0
        for _ in 0..<64 {
            let mid = (lo + hi) / 2
            if let s = fill(mid) { best = s; hi = mid } else { lo = mid }
        }
        return best
    }
}
