/// VPIPE's exact search over partitions: minimise T_iter = (m−1)·τ + Σ_i (T_i + K_i).
///
/// For a fixed bound τ on every stage and link time, the best partition minimises Σ, a
/// shortest path over (stage index, first layer) that a dynamic program solves exactly.
/// The optimum is at one of the finitely many values τ can take (a stage or link time), so
/// trying them in increasing order finds it; Σ never grows as τ grows, so once
/// (m−1)·τ + Σ_min (the unconstrained minimum of Σ) reaches the best T_iter found, no larger
/// τ can win and the search stops. Candidates below the min-max bottleneck are skipped.
///
/// Under the THROUGHPUT objective (smallest τ, then smallest T_iter) the answer is the first
/// step of the same scan: the DP at the min-max bottleneck gives the smallest Σ, hence the
/// smallest T_iter, among the plans of smallest τ.
///
/// Ties between equal T_iter (ITERATION_TIME) go to the lower largest memory fill, then to
/// fewer moved layers (the cost model's rules), then to the lower τ.
///
/// Only stages that can be in a plan better than a known feasible one (`upperBound`) are
/// offered: a stage of the optimum has T_i ≤ τ ≤ T_iter / m (Σ ≥ τ, because τ is one of Σ's
/// terms), so a stage whose all-KEEP compute time (a lower bound on T_i) exceeds
/// upperBound / m, or whose weights alone exceed its device, is left out. That caps stage
/// lengths without losing the optimum.
enum OptimalPartition {
    /// One candidate stage: stage `stage` owning layers start..<end.
    struct Item {
        var start: Int, end: Int
        var seconds: Double
        var link: Double
        var fill: Double
        var moved: Int
        var top: Double { max(seconds, link) }
    }

    /// Cells of the Σ DP: smallest Σ, then smallest largest memory fill, then fewest moved
    /// layers (the cost model's tie rules), then the lower τ so far.
    struct Cell {
        var sum = Double.infinity, fill = Double.infinity, moved = Int.max, from = -1, top = 0.0
        func better(_ sum: Double, _ fill: Double, _ moved: Int, _ top: Double) -> Bool {
            let tol = 1e-12 * max(abs(sum), abs(self.sum == .infinity ? 0 : self.sum))
            if sum < self.sum - tol { return true }
            if sum > self.sum + tol { return false }
            if fill != self.fill { return fill < self.fill }
            if moved != self.moved { return moved < self.moved }
            return top < self.top
        }
    }

    struct Solution {
        var starts: [Int]
        var iterationSeconds: Double
        /// τ of the partition.
        var bottleneckSeconds: Double
        var fill: Double
        var moved: Int
    }

    /// The best partition over `items` (items[k]: the candidates for stage k) under
    /// `objective`, or nil when no partition can be built from them.
    static func solve(items: [[Item]], layerCount L: Int, microBatches m: Int,
                      objective: PlanObjective = .iterationTime) -> Solution? {
        let p = items.count
        guard p >= 1 else { return nil }
        var table = [[Cell]](repeating: [Cell](repeating: Cell(), count: L + 1), count: p)

        func run(_ tau: Double) -> Solution? {
            for k in 0..<p {
                for e in 0...L { table[k][e] = Cell() }
                for it in items[k] where it.top <= tau {
                    let sum: Double, fill: Double, moved: Int, top: Double
                    if k == 0 {
                        guard it.start == 0 else { continue }
                        sum = it.seconds + it.link; fill = it.fill; moved = it.moved; top = it.top
                    } else {
                        let before = table[k - 1][it.start]
                        guard before.sum < .infinity else { continue }
                        sum = before.sum + it.seconds + it.link
                        fill = max(before.fill, it.fill)
                        moved = before.moved + it.moved
                        top = max(before.top, it.top)
                    }
                    if table[k][it.end].better(sum, fill, moved, top) {
                        table[k][it.end] = Cell(sum: sum, fill: fill, moved: moved, from: it.start, top: top)
                    }
                }
            }
            let last = table[p - 1][L]
            guard last.sum < .infinity else { return nil }
            var starts = [Int](repeating: 0, count: p)
            var e = L
            for k in stride(from: p - 1, through: 0, by: -1) { starts[k] = table[k][e].from; e = starts[k] }
            // τ of the partition itself (it may be below the bound tried).
            return Solution(starts: starts, iterationSeconds: Double(m - 1) * last.top + last.sum,
                            bottleneckSeconds: last.top, fill: last.fill, moved: last.moved)
        }

        let tauFloor = minMaxBottleneck(items, layerCount: L)
        guard tauFloor < .infinity else { return nil }
        if objective == .throughput { return run(tauFloor) }
        guard let free = run(.infinity) else { return nil }
        if m == 1 { return free }
        let sigmaFloor = table[p - 1][L].sum  // Σ_min: no partition has a smaller Σ
        var candidates = Set<Double>()
        for list in items { for it in list where it.top >= tauFloor { candidates.insert(it.top) } }
        var best = free
        for tau in candidates.sorted() {
            if Double(m - 1) * tau + sigmaFloor > best.iterationSeconds * (1 + 1e-12) { break }
            guard let s = run(tau) else { continue }
            let tol = 1e-12 * best.iterationSeconds
            if s.iterationSeconds < best.iterationSeconds - tol
                || (s.iterationSeconds <= best.iterationSeconds + tol
                    && (s.fill, s.moved, s.bottleneckSeconds) < (best.fill, best.moved, best.bottleneckSeconds)) {
                best = s
            }
        }
        return best
    }

    /// The smallest τ any partition built from `items` can have (min-max DP).
    static func minMaxBottleneck(_ items: [[Item]], layerCount L: Int) -> Double {
        let p = items.count
        var prev = [Double](repeating: .infinity, count: L + 1)
        for k in 0..<p {
            var cur = [Double](repeating: .infinity, count: L + 1)
            for it in items[k] {
                let before = k == 0 ? (it.start == 0 ? 0 : .infinity) : prev[it.start]
                cur[it.end] = min(cur[it.end], max(before, it.top))
            }
            prev = cur
        }
        return prev[L]
    }
}
