/// What the partition searches share: the per-stage answers of `StagePolicySolver`, cached
/// by (stage, first layer, end), and the score of a whole partition.
final class StageOracle {
    let cm: CostModel
    let solver: StagePolicySolver
    let stageCount: Int
    let nodeBudget: Int?
    private var cache: [Key: StagePolicySolver.Choice?] = [:]

    struct Key: Hashable {
        let stage: Int, start: Int, end: Int
    }

    /// runStart[l]: the first layer of the run of identical layers containing l.
    let runStart: [Int]

    /// Stages whose layers lie inside one run of identical layers and whose input is the
    /// output of the same run (so the stage is the same whatever its offset) share a key:
    /// a transformer's blocks are solved once per (stage, length), not once per position.
    func key(_ stage: Int, _ start: Int, _ end: Int) -> Key {
        let run = runStart[start]
        if start > run && runStart[end - 1] == run {
            return Key(stage: stage, start: run + 1, end: run + 1 + (end - start))
        }
        return Key(stage: stage, start: start, end: end)
    }

    init(_ cm: CostModel, stageCount: Int, nodeBudget: Int?) {
        self.cm = cm
        self.stageCount = stageCount
        self.nodeBudget = nodeBudget
        self.solver = StagePolicySolver(costModel: cm, stageCount: stageCount)
        var runs: [Int] = []
        for (l, layer) in cm.model.layers.enumerated() {
            runs.append(l > 0 && layer.profile == cm.model.layers[l - 1].profile ? runs[l - 1] : l)
        }
        self.runStart = runs
    }

    func choice(_ stage: Int, _ start: Int, _ end: Int) -> StagePolicySolver.Choice? {
        let key = key(stage, start, end)
        if let cached = cache[key] { return cached }
        let c = solver.solve(stage: stage, layers: key.start..<key.end, nodeBudget: nodeBudget)
        cache[key] = c
        return c
    }

    /// Partitions compare by: fewer stages that cannot fit, then less memory over (so a
    /// search starting from an infeasible partition walks towards feasibility), then T_iter.
    /// Fewer unfit stages, then fewer bytes over, then the request's objective.
    struct Score: Comparable {
        var unfit: Int
        var overBytes: Double
        var bottleneckSeconds: Double
        var iterationSeconds: Double
        var objective: PlanObjective

        static func < (a: Score, b: Score) -> Bool {
            if a.unfit != b.unfit { return a.unfit < b.unfit }
            if a.overBytes != b.overBytes { return a.overBytes < b.overBytes }
            return a.objective.prefers((a.bottleneckSeconds, a.iterationSeconds), over: (b.bottleneckSeconds, b.iterationSeconds))
        }
    }

    /// Score of the partition with stage starts `starts` (first is 0).
    func score(_ starts: [Int]) -> Score {
        let L = cm.model.layers.count, p = starts.count
        var tau = 0.0, sum = 0.0, unfit = 0, over = 0.0
        for k in 0..<p {
            let s = starts[k], e = k + 1 < p ? starts[k + 1] : L
            let t: Double
            if let c = choice(k, s, e) {
                t = c.stageSeconds
            } else {
                unfit += 1
                over += max(0, solver.leastMemory(stage: k, layers: s..<e) - Double(cm.cluster.devices[k].memoryBytes))
                t = cm.stage(k, of: p, layers: s..<e, policies: Array(repeating: .keep, count: L)).stageSeconds
            }
            let link = k < p - 1 ? cm.linkSeconds(after: k, lastLayer: e - 1) : 0
            tau = max(tau, t, link)
            sum += t + link
        }
        return Score(unfit: unfit, overBytes: over, bottleneckSeconds: tau,
                     iterationSeconds: Double(cm.microBatches - 1) * tau + sum, objective: cm.objective)
    }

    /// The layout of a partition whose every stage fits.
    func layout(_ starts: [Int]) -> PlanLayout? {
        let L = cm.model.layers.count, p = starts.count
        var policies: [MemoryPolicy] = []
        policies.reserveCapacity(L)
        for k in 0..<p {
            guard let c = choice(k, starts[k], k + 1 < p ? starts[k + 1] : L) else { return nil }
            policies += c.policies
        }
        return PlanLayout(stageStarts: starts, layerCount: L, policies: policies)
    }
}
