/// A proven lower bound on T_iter that any planner can quote in O(L·log): the optimum of a
/// relaxation that keeps the partition but forgets memory (and therefore swap and recompute,
/// which only add time).
///
/// Every stage's time is at least its all-KEEP compute time Σ(f+b)/σ_i, so
///  - τ is at least the smallest bottleneck of those times over partitions in device order.
///    The greedy fill (each stage takes the longest prefix within τ; allowing empty stages
///    only relaxes further) reaches the end exactly when some partition does, because a
///    stage starting later reaches at least as far; a binary search on τ finds the largest
///    τ it fails at, which is below the true minimum;
///  - every one of the p−1 links carries some layer's output, so τ ≥ 2(λ_i + o_min/B_i) and
///    Σ ≥ Σ_i 2(λ_i + o_min/B_i);
///  - Σ_i T_i ≥ Σ_l (f_l + b_l) / σ_max.
/// So T_iter ≥ (m−1)·τ_lb + Σ_lb.
enum LowerBound {
    static func relaxation(_ cm: CostModel) -> Double {
        let L = cm.model.layers.count, p = cm.cluster.devices.count
        let sums = PrefixSums(cm.model)
        let speeds = cm.cluster.devices.map(\.effectiveSpeed)
        func covers(_ tau: Double) -> Bool {
            var s = 0
            for k in 0..<p {
                var e = s
                while e < L && (sums.fwdBwd[e + 1] - sums.fwdBwd[s]) / speeds[k] <= tau { e += 1 }
                s = e
                if s == L { return true }
            }
            return false
        }
        var lo = 0.0, hi = sums.fwdBwd[L] / (speeds.min() ?? 1) + 1
        for _ in 0..<100 {
            let mid = (lo + hi) / 2
            if covers(mid) { hi = mid } else { lo = mid }
        }
        let smallestOutput = Double(cm.model.layers.dropLast().map(\.profile.outputBytes).min() ?? 0)
        var tau = lo, sum = sums.fwdBwd[L] / (speeds.max() ?? 1)
        for link in cm.cluster.links.prefix(p - 1) {
            let k = 2 * (link.latency + smallestOutput / link.bandwidth)
            tau = max(tau, k)
            sum += k
        }
        return Double(cm.microBatches - 1) * tau + max(sum, tau)  // τ is one of Σ's terms
    }
}
