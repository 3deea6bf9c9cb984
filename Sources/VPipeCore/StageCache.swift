/// `RunPolicySolver`'s answers for candidate stages, memoised so that stages that are the
/// same problem are solved once: same device (memory, speed, copy engine, reserve), same
/// in-flight count n_i and weight versions v_i, and the same layers up to a shift inside a
/// run of identical layers (a stage starting inside a transformer's blocks is the same
/// stage wherever it starts, as long as it holds as many blocks and ends at the same place
/// relative to the run).
final class StageCache {
    let cm: CostModel
    let solver: RunPolicySolver
    let stageCount: Int
    /// Stages with the same class id are interchangeable devices at interchangeable positions.
    let stageClass: [Int]
    /// runStart[l] / runEnd[l]: the run of identical layers (same profile, same input size)
    /// holding layer l, as [runStart, runEnd).
    let runStart: [Int], runEnd: [Int]
    private var memo: [Key: RunPolicySolver.Result] = [:]
    private var quickBounds: [Key: Double] = [:]
    private(set) var solves = 0
    /// Search nodes spent by all solves, so a caller can stop a search that grows too large.
    private(set) var nodes = 0

    struct Key: Hashable {
        let stageClass: Int, kind: Int, a: Int, b: Int, c: Int
    }

    init(_ cm: CostModel, stageCount p: Int, nodeBudget: Int = VPipePlanner.stageNodeBudget) {
        self.cm = cm
        self.stageCount = p
        self.solver = RunPolicySolver(costModel: cm, stageCount: p, nodeBudget: nodeBudget)
        struct DeviceKey: Hashable { let memory: Int, speed: Double, host: Double, reserved: Int, n: Int, v: Int }
        var classes: [DeviceKey: Int] = [:]
        var ids: [Int] = []
        for k in 0..<p {
            let d = cm.cluster.devices[k]
            let key = DeviceKey(memory: d.memoryBytes, speed: d.effectiveSpeed, host: d.hostBandwidth, reserved: d.reservedBytes,
                                n: cm.inFlight(stage: k, of: p), v: cm.weightVersions(stage: k, of: p))
            if classes[key] == nil { classes[key] = classes.count }
            ids.append(classes[key]!)
        }
        stageClass = ids
        let layers = cm.model.layers
        var starts: [Int] = []
        for l in layers.indices {
            let same = l > 0 && layers[l].profile == layers[l - 1].profile
                && cm.model.inputBytes(ofLayer: l) == cm.model.inputBytes(ofLayer: l - 1)
            starts.append(same ? starts[l - 1] : l)
        }
        var ends = [Int](repeating: layers.count, count: layers.count)
        for l in stride(from: layers.count - 2, through: 0, by: -1) { ends[l] = starts[l + 1] == starts[l] ? ends[l + 1] : l + 1 }
        runStart = starts
        runEnd = ends
    }

    func key(_ k: Int, _ s: Int, _ e: Int) -> Key {
        let r = runStart[s]
        if s > r {
            // Starts inside a run: only the blocks it holds of the run and where it ends matter.
            if e <= runEnd[s] { return Key(stageClass: stageClass[k], kind: 1, a: r, b: e - s, c: 0) }
            return Key(stageClass: stageClass[k], kind: 2, a: r, b: runEnd[s] - s, c: e)
        }
        return Key(stageClass: stageClass[k], kind: 0, a: s, b: e, c: 0)
    }

    /// Room for `count` more answers (the DP knows how many candidates it will ask for).
    func reserve(_ count: Int) { memo.reserveCapacity(memo.count + count) }

    /// A proven lower bound on the stage's time without searching: the solved answer's when
    /// there is one, else `RunPolicySolver.quickBound` (memoised apart, it is not an answer).
    func quickBound(_ k: Int, _ s: Int, _ e: Int) -> Double {
        let key = key(k, s, e)
        if let r = memo[key] { return r.lowerBound }
        if let b = quickBounds[key] { return b }
        let b = solver.quickBound(stage: k, layers: s..<e)
        quickBounds[key] = b
        return b
    }

    func result(_ k: Int, _ s: Int, _ e: Int) -> RunPolicySolver.Result {
        let key = key(k, s, e)
        if let r = memo[key] { return r }
        solves += 1
        let r = solver.solve(stage: k, layers: s..<e)
        nodes += r.nodes
        memo[key] = r
        return r
    }
}
