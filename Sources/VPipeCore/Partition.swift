/// Exact min-max partitioning of a chain into contiguous, non-empty stages.
///
/// Dynamic programming over (stage, end): best[k][e] is the smallest bottleneck of stages
/// 0...k covering layers 0..<e. A cost closure gives a stage's contribution to the
/// bottleneck, or nil when that stage is not allowed (e.g. it does not fit in memory).
/// Ties on the bottleneck go to the smaller sum of contributions, then to the earliest
/// split, so the result is deterministic. O(p · L²) cost evaluations.
enum MinMaxPartition {
    struct Score: Comparable {
        var bottleneck: Double
        var total: Double
        static func < (a: Score, b: Score) -> Bool {
            a.bottleneck != b.bottleneck ? a.bottleneck < b.bottleneck : a.total < b.total
        }
        static let impossible = Score(bottleneck: .infinity, total: .infinity)
    }

    /// Stage start indices (one per stage, the first is 0) of the best partition of
    /// `layerCount` layers into `stageCount` stages, or nil when no stage assignment is
    /// allowed. `cost(k, s, e)` is stage k owning layers s..<e.
    static func solve(layerCount L: Int, stageCount p: Int, cost: (Int, Int, Int) -> Double?) -> [Int]? {
        guard p >= 1 && p <= L else { return nil }  // validation rejects these before planning
        // best[k][e], choice[k][e] = start of stage k in the best solution ending at e.
        var best = [[Score]](repeating: [Score](repeating: .impossible, count: L + 1), count: p)
        var choice = [[Int]](repeating: [Int](repeating: -1, count: L + 1), count: p)
        for e in 1...(L - p + 1) {
            if let c = cost(0, 0, e) {
                best[0][e] = Score(bottleneck: c, total: c)
                choice[0][e] = 0
            }
        }
        if p > 1 {
            for k in 1..<p {
                // Stage k ends at e; the stages after it need at least one layer each.
                for e in (k + 1)...(L - (p - 1 - k)) {
                    var bestHere = Score.impossible
                    var bestStart = -1
                    for s in k..<e {
                        let before = best[k - 1][s]
                        if before.bottleneck == .infinity { continue }
                        guard let c = cost(k, s, e) else { continue }
                        let candidate = Score(bottleneck: max(before.bottleneck, c), total: before.total + c)
                        if candidate < bestHere {
                            bestHere = candidate
                            bestStart = s
                        }
                    }
                    best[k][e] = bestHere
                    choice[k][e] = bestStart
                }
            }
        }
        guard best[p - 1][L].bottleneck < .infinity else { return nil }
        var starts = [Int](repeating: 0, count: p)
        var e = L
        for k in stride(from: p - 1, through: 0, by: -1) {
            let s = choice[k][e]
            starts[k] = s
            e = s
        }
        return starts
    }
}

/// Running sums over the layers, so any stage's totals cost O(1).
struct PrefixSums {
    let fwd: [Double], fwdBwd: [Double], stash: [Double], params: [Double]

    init(_ model: ModelSpec) {
        var f = [0.0], fb = [0.0], a = [0.0], w = [0.0]
        for layer in model.layers {
            let p = layer.profile
            f.append(f.last! + p.fwdSeconds)
            fb.append(fb.last! + p.fwdSeconds + p.bwdSeconds)
            a.append(a.last! + Double(p.stashBytes))
            w.append(w.last! + Double(p.paramBytes))
        }
        fwd = f; fwdBwd = fb; stash = a; params = w
    }
}
