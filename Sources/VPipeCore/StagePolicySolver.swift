/// Chooses the memory policy of every layer of ONE stage: the smallest stage time
/// T_i = max(C_i, S_i) whose peak memory fits the device.
///
/// Why per stage: under cost model v1 a stage's time and memory depend only on its own
/// layers, its device and its position (n_i, v_i). T_iter grows with every T_i, so for a
/// fixed partition the best plan takes the fastest fitting policies of each stage
/// independently. The joint search (`VPipePlanner`, `ExactPlanner`) therefore only has to
/// search partitions, asking this solver about each candidate stage.
///
/// How: all-KEEP is optimal when it fits (no swap, no recompute). Otherwise a greedy pass
/// (the paper's rule: swaps first while they hide behind compute, then recompute the
/// layers that save the most bytes per second spent) gives an incumbent, and a
/// branch-and-bound over K/S/R per layer improves it. Both bounds are exact: time and
/// memory only grow as layers are assigned, so a partial assignment over the incumbent's
/// time or the device's memory is cut. With `nodeBudget == nil` the search is exhaustive
/// (exact); with a budget it stops early and keeps the best found.
///
/// Ties on T_i go to fewer SWAP/RECOMPUTE layers, then to lower memory: a swap that hides
/// behind compute is free in the cost model but not on a real copy engine shared with
/// other traffic, so layers that need not move stay.
public struct StagePolicySolver: Sendable {
    public struct Choice: Sendable, Equatable {
        /// One policy per layer of the stage, in order.
        public var policies: [MemoryPolicy]
        public var stageSeconds: Double
        public var peakMemoryBytes: Double
        public var movedLayers: Int
    }

    let cm: CostModel
    let stageCount: Int

    public init(costModel: CostModel, stageCount: Int) {
        self.cm = costModel
        self.stageCount = stageCount
    }

    /// Fixed quantities of one candidate stage.
    struct Stage {
        let index: Int
        let layers: Range<Int>
        let fwd: [Double], stash: [Double], input: [Double]
        let fwdBwd: Double, params: Double
        let speed: Double, hostBandwidth: Double, capacity: Double
        /// The policies other than KEEP the device allows (DeviceSpec.allowedPolicies).
        let moves: [MemoryPolicy]
    }

    func describe(_ i: Int, _ layers: Range<Int>) -> Stage {
        var fwd: [Double] = [], stash: [Double] = [], input: [Double] = []
        var fwdBwd = 0.0, params = 0.0
        for l in layers {
            let p = cm.model.layers[l].profile
            fwd.append(p.fwdSeconds)
            stash.append(Double(p.stashBytes))
            input.append(Double(cm.model.inputBytes(ofLayer: l)))
            fwdBwd += p.fwdSeconds + p.bwdSeconds
            params += Double(p.paramBytes)
        }
        let d = cm.cluster.devices[i]
        return Stage(index: i, layers: layers, fwd: fwd, stash: stash, input: input, fwdBwd: fwdBwd, params: params,
                     speed: d.effectiveSpeed, hostBandwidth: d.hostBandwidth, capacity: Double(d.memoryBytes),
                     moves: [MemoryPolicy.swap, .recompute].filter { d.allows($0) })
    }

    /// Running totals of a (partial) policy assignment, in the cost model's terms.
    struct Totals {
        var recomputeFwd = 0.0, swapped = 0.0, retained = 0.0
        var largestSegment = 0.0, currentSegment = 0.0, largestSwap = 0.0
        var inSegment = false
        var moved = 0

        mutating func add(_ policy: MemoryPolicy, at j: Int, _ s: Stage) {
            switch policy {
            case .keep:
                retained += s.stash[j]
                inSegment = false
            case .swap:
                swapped += s.stash[j]
                largestSwap = max(largestSwap, s.stash[j])
                inSegment = false
                moved += 1
            case .recompute:
                recomputeFwd += s.fwd[j]
                if !inSegment {
                    retained += s.input[j]  // a segment keeps only its first layer's input
                    currentSegment = 0
                    inSegment = true
                }
                currentSegment += s.stash[j]
                largestSegment = max(largestSegment, currentSegment)
                moved += 1
            }
        }

        func seconds(_ s: Stage) -> Double {
            let compute = (s.fwdBwd + recomputeFwd) / s.speed
            return swapped > 0 ? max(compute, 2 * swapped / s.hostBandwidth) : compute
        }
    }

    func memory(_ t: Totals, _ s: Stage) -> Double {
        cm.peakMemory(stage: s.index, of: stageCount, layers: s.layers, params: s.params, retainedPerMicroBatch: t.retained,
                      largestSegment: t.largestSegment, largestSwap: t.largestSwap)
    }

    func totals(_ policies: [MemoryPolicy], _ s: Stage) -> Totals {
        var t = Totals()
        for (j, p) in policies.enumerated() { t.add(p, at: j, s) }
        return t
    }

    func choice(_ policies: [MemoryPolicy], _ s: Stage) -> Choice {
        let t = totals(policies, s)
        return Choice(policies: policies, stageSeconds: t.seconds(s), peakMemoryBytes: memory(t, s), movedLayers: t.moved)
    }

    /// (time, moved layers, memory) lexicographic, with a relative tolerance on time so that
    /// sums taken in different orders compare equal.
    static func better(_ a: Choice, than b: Choice) -> Bool {
        let tol = 1e-12 * max(a.stageSeconds, b.stageSeconds)
        if a.stageSeconds < b.stageSeconds - tol { return true }
        if a.stageSeconds > b.stageSeconds + tol { return false }
        if a.movedLayers != b.movedLayers { return a.movedLayers < b.movedLayers }
        return a.peakMemoryBytes < b.peakMemoryBytes
    }

    /// The best fitting policies for stage `i` owning `layers`, or nil when no assignment
    /// fits (exact when `nodeBudget` is nil; otherwise nil means none was found).
    public func solve(stage i: Int, layers: Range<Int>, nodeBudget: Int? = 20_000) -> Choice? {
        let s = describe(i, layers)
        let keep = choice(Array(repeating: .keep, count: layers.count), s)
        if keep.peakMemoryBytes <= s.capacity { return keep }
        var best = greedy(s)
        search(s, incumbent: &best, budget: nodeBudget)
        return best
    }

    /// The smallest peak memory any assignment can reach, approximately (the best of
    /// all-SWAP, all-RECOMPUTE and the greedy's memory-first pass); for explanations.
    func leastMemory(stage i: Int, layers: Range<Int>) -> Double {
        let s = describe(i, layers)
        let n = layers.count
        var least = s.moves.map { choice(Array(repeating: $0, count: n), s).peakMemoryBytes }.min()
            ?? choice(Array(repeating: .keep, count: n), s).peakMemoryBytes
        var policies = Array(repeating: MemoryPolicy.keep, count: n)
        // Memory-first greedy: move the layer that saves the most bytes until nothing helps.
        while true {
            let current = memory(totals(policies, s), s)
            var bestJ = -1, bestP = MemoryPolicy.keep, bestM = current
            for j in 0..<n {
                for p in s.moves where p != policies[j] {
                    var trial = policies
                    trial[j] = p
                    let m = memory(totals(trial, s), s)
                    if m < bestM { bestM = m; bestJ = j; bestP = p }
                }
            }
            if bestJ < 0 { break }
            policies[bestJ] = bestP
            least = min(least, bestM)
        }
        return least
    }

    /// The paper's rule as a greedy: from all-KEEP, repeatedly apply the single-layer change
    /// (KEEP→SWAP, KEEP→RECOMPUTE, SWAP→RECOMPUTE) with the most bytes saved per second of
    /// stage time added (a change that adds no time, such as a swap that still hides behind
    /// compute, wins by bytes saved), until the stage fits.
    func greedy(_ s: Stage) -> Choice? {
        let n = s.layers.count
        var policies = Array(repeating: MemoryPolicy.keep, count: n)
        var current = choice(policies, s)
        while current.peakMemoryBytes > s.capacity {
            var bestTrial: Choice?
            var bestFree = false
            var bestScore = -Double.infinity
            for j in 0..<n {
                let options: [MemoryPolicy] = policies[j] == .keep ? [.swap, .recompute] : policies[j] == .swap ? [.recompute] : []
                for p in options where s.moves.contains(p) {
                    var trial = policies
                    trial[j] = p
                    let c = choice(trial, s)
                    let saved = current.peakMemoryBytes - c.peakMemoryBytes
                    if saved <= 0 { continue }
                    let added = c.stageSeconds - current.stageSeconds
                    let free = added <= 1e-15 * max(1, current.stageSeconds)
                    let score = free ? saved : saved / added
                    if (free && !bestFree) || (free == bestFree && score > bestScore) {
                        bestTrial = c
                        bestFree = free
                        bestScore = score
                    }
                }
            }
            guard let next = bestTrial else { return nil }
            policies = next.policies
            current = next
        }
        return current
    }

    /// Branch-and-bound over K/S/R per layer, in layer order, trying KEEP first. Returns
    /// the nodes visited, or nil when the budget ran out before the search ended.
    @discardableResult
    func search(_ s: Stage, incumbent: inout Choice?, budget: Int?) -> Int? {
        let n = s.layers.count
        var policies = Array(repeating: MemoryPolicy.keep, count: n)
        var nodes = 0
        var stopped = false
        let limit = budget ?? Int.max
        func visit(_ j: Int, _ t: Totals) {
            if nodes >= limit { stopped = true; return }
            nodes += 1
            let seconds = t.seconds(s)
            if let inc = incumbent, seconds > inc.stageSeconds * (1 + 1e-12) { return }
            let mem = memory(t, s)
            if mem > s.capacity { return }
            if let inc = incumbent, seconds >= inc.stageSeconds * (1 - 1e-12), t.moved > inc.movedLayers { return }
            if j == n {
                let c = Choice(policies: policies, stageSeconds: seconds, peakMemoryBytes: mem, movedLayers: t.moved)
                if incumbent.map({ Self.better(c, than: $0) }) ?? true { incumbent = c }
                return
            }
            for p in [MemoryPolicy.keep] + s.moves {
                var next = t
                next.add(p, at: j, s)
                policies[j] = p
                visit(j + 1, next)
            }
            policies[j] = .keep
        }
        visit(0, Totals())
        return stopped ? nil : nodes
    }
}
