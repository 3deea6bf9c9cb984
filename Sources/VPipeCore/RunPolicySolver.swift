/// VPIPE's per-stage policy solver: the exact fastest fitting KEEP/SWAP/RECOMPUTE choice for
/// ONE stage, searched over runs of identical layers instead of over single layers.
///
/// Why it is exact. Split the stage into *units*: maximal runs of consecutive layers with the
/// same profile and the same input size (a transformer's blocks are one unit). Inside a unit
/// every layer costs the same, so a policy string matters to cost model v1 only through
///   - how many layers SWAP (nS) and RECOMPUTE (nR): C_i, S_i and the kept stash,
///   - its recompute segments: their count (each retains one input x) and their longest
///     one (the rematerialisation peak), and
///   - the segment touching the unit's start (it merges with a segment the previous unit
///     leaves open) and the one touching its end (it stays open into the next unit).
/// For a given count of interior segments, equal lengths (differing by at most one) give the
/// smallest longest segment, and a segment touching the start of a unit with nothing open
/// before it (or the end of the stage's last unit) is just an interior segment that needs no
/// separator. So the options of a unit are (nR, leading length ℓ when a segment is open,
/// trailing length t unless the unit is last, interior count g, edge flags, nS): every policy
/// string is matched or beaten by one of them. A branch-and-bound over units visits them;
/// time and memory only grow as units are added, so cutting a partial choice over the
/// incumbent's time or the device's memory loses nothing.
///
/// Work: O(k⁴)-ish options for a unit of k layers (g only takes the values where ⌈r/g⌉
/// changes), so a stage of 40 identical blocks is a few thousand options. A node budget
/// bounds pathological stages (dozens of distinct layers); when it runs out the answer is
/// the best found, not proven, and `lowerBound` is the fractional relaxation below.
struct RunPolicySolver {
    let cm: CostModel
    let stageCount: Int
    let nodeBudget: Int

    struct Result {
        /// The best fitting policies found; nil when none fits (proven when `exact`).
        var choice: StagePolicySolver.Choice?
        /// A proven lower bound on the stage time of every fitting choice (+∞: none fits).
        var lowerBound: Double
        /// The search ran to the end: `choice` is optimal (or proven absent).
        var exact: Bool
        /// Search nodes spent.
        var nodes = 0
    }

    struct Unit {
        let first: Int, count: Int
        let f: Double, a: Double, x: Double
        let last: Bool
    }

    /// One unit's choice; enough to write its policy string back.
    struct Option {
        var full = false
        var nR = 0, nS = 0, lead = 0, trail = 0, interior = 0, interiorLayers = 0
        var edgeStart = false, edgeEnd = false
    }

    /// Running totals of the units chosen so far.
    struct Acc {
        var recompute = 0.0, swapped = 0.0, retained = 0.0
        var largestSegment = 0.0, largestSwap = 0.0
        var open = -1.0  // stash of the segment left open by the previous unit; -1 when none
        var moved = 0
    }

    init(costModel: CostModel, stageCount: Int, nodeBudget: Int = VPipePlanner.stageNodeBudget) {
        self.cm = costModel
        self.stageCount = stageCount
        self.nodeBudget = nodeBudget
    }

    func solve(stage i: Int, layers: Range<Int>) -> Result {
        let legacy = StagePolicySolver(costModel: cm, stageCount: stageCount)
        let s = legacy.describe(i, layers)
        let keep = legacy.choice(Array(repeating: .keep, count: layers.count), s)
        if keep.peakMemoryBytes <= s.capacity {
            return Result(choice: keep, lowerBound: keep.stageSeconds, exact: true)
        }
        let bound = relaxationBound(s)
        if bound == .infinity { return Result(choice: nil, lowerBound: .infinity, exact: true) }

        var units: [Unit] = []
        var j = 0
        while j < s.layers.count {
            var k = j + 1
            let pj = cm.model.layers[s.layers.lowerBound + j].profile
            while k < s.layers.count && cm.model.layers[s.layers.lowerBound + k].profile == pj && s.input[k] == s.input[j] { k += 1 }
            units.append(Unit(first: j, count: k - j, f: s.fwd[j], a: s.stash[j], x: s.input[j], last: k == s.layers.count))
            j = k
        }

        let n = Double(cm.inFlight(stage: i, of: stageCount))
        let fixed = cm.peakMemory(stage: i, of: stageCount, layers: layers, params: s.params, retainedPerMicroBatch: 0,
                                  largestSegment: 0, largestSwap: 0)
        let slack = 1e-9 * max(1, s.capacity)
        func memory(_ t: Acc) -> Double { fixed + n * t.retained + t.largestSegment + 2 * t.largestSwap }
        func seconds(_ t: Acc) -> Double {
            let c = (s.fwdBwd + t.recompute) / s.speed
            return t.swapped > 0 ? max(c, 2 * t.swapped / s.hostBandwidth) : c
        }

        var best: StagePolicySolver.Choice?
        var bestSeconds = Double.infinity, bestMoved = Int.max
        var options = [Option](repeating: Option(), count: units.count)
        var nodes = 0
        var exhausted = false

        func policies() -> [MemoryPolicy] {
            var out: [MemoryPolicy] = []
            out.reserveCapacity(s.layers.count)
            for (u, o) in zip(units, options) { out += Self.policyString(u, o) }
            return out
        }

        func visit(_ u: Int, _ acc: Acc) {
            if u == units.count {
                let c = legacy.choice(policies(), s)
                guard c.peakMemoryBytes <= s.capacity else { return }
                if best.map({ StagePolicySolver.better(c, than: $0) }) ?? true {
                    best = c
                    bestSeconds = c.stageSeconds
                    bestMoved = c.movedLayers
                }
                return
            }
            let unit = units[u]
            let k = unit.count
            // Over the incumbent's time (or equal time with more moved layers): cut.
            func cut(_ t: Acc) -> Bool {
                let sec = seconds(t)
                if sec > bestSeconds * (1 + 1e-12) { return true }
                if sec >= bestSeconds * (1 - 1e-12) && t.moved > bestMoved { return true }
                return memory(t) > s.capacity + slack
            }
            // Adds nS swaps among the unit's nN non-recomputed layers and recurses, nS
            // ascending (time grows, memory falls after the first swap).
            func finish(_ base: Acc, _ option: Option, nonRecomputed nN: Int) {
                for nS in 0...(s.moves.contains(.swap) ? nN : 0) {  // DeviceSpec.allowedPolicies
                    nodes += 1
                    if nodes > nodeBudget { exhausted = true; return }
                    var t = base
                    t.swapped += Double(nS) * unit.a
                    if nS > 0 { t.largestSwap = max(t.largestSwap, unit.a) }
                    t.retained += Double(nN - nS) * unit.a
                    t.moved += nS
                    let sec = seconds(t)
                    if sec > bestSeconds * (1 + 1e-12) { return }  // more swaps only add time
                    if cut(t) { continue }
                    var o = option
                    o.nS = nS
                    options[u] = o
                    visit(u + 1, t)
                    if exhausted { return }
                }
            }
            let open = acc.open >= 0
            for nR in 0...(s.moves.contains(.recompute) ? k : 0) {
                var base = acc
                base.recompute += Double(nR) * unit.f
                base.moved += nR
                if (s.fwdBwd + base.recompute) / s.speed > bestSeconds * (1 + 1e-12) { break }
                if nR == k {
                    // The whole unit recomputes: one segment, merged with an open one.
                    var t = base
                    if open { t.open = acc.open + Double(k) * unit.a } else { t.open = Double(k) * unit.a; t.retained += unit.x }
                    t.largestSegment = max(t.largestSegment, t.open)
                    if cut(t) { continue }
                    options[u] = Option(full: true, nR: k)
                    nodes += 1
                    if nodes > nodeBudget { exhausted = true; return }
                    visit(u + 1, t)
                    if exhausted { return }
                    continue
                }
                let nN = k - nR
                let leads = open ? Array(0...nR) : [0]
                for lead in leads {
                    let trails = unit.last ? [0] : Array(0...(nR - lead))
                    for trail in trails {
                        let rInt = nR - lead - trail
                        var t = base
                        if open && lead > 0 {
                            t.largestSegment = max(t.largestSegment, acc.open + Double(lead) * unit.a)
                        }
                        t.open = -1
                        if trail > 0 {
                            t.retained += unit.x
                            t.largestSegment = max(t.largestSegment, Double(trail) * unit.a)
                            t.open = Double(trail) * unit.a
                        }
                        if rInt == 0 {
                            let blocks = (lead > 0 ? 1 : 0) + (trail > 0 ? 1 : 0)
                            let gaps = blocks == 0 ? 1 : blocks - 1 + (lead > 0 ? 0 : 1) + (trail > 0 ? 0 : 1)
                            guard gaps >= 1 && gaps <= nN else { continue }
                            finish(t, Option(nR: nR, lead: lead, trail: trail), nonRecomputed: nN)
                            if exhausted { return }
                            continue
                        }
                        var previousLongest = -1
                        for g in 1...rInt {
                            let longest = (rInt + g - 1) / g
                            if longest == previousLongest { continue }  // same peak, one more input kept
                            previousLongest = longest
                            var ti = t
                            ti.retained += Double(g) * unit.x
                            ti.largestSegment = max(ti.largestSegment, Double(longest) * unit.a)
                            let edgeStarts = lead > 0 ? [false] : [false, true]
                            let edgeEnds = trail > 0 || !unit.last ? [false] : [false, true]
                            for es in edgeStarts {
                                for ee in edgeEnds {
                                    let blocks = (lead > 0 ? 1 : 0) + g + (trail > 0 ? 1 : 0)
                                    let startTouched = lead > 0 || es, endTouched = trail > 0 || ee
                                    let gaps = blocks - 1 + (startTouched ? 0 : 1) + (endTouched ? 0 : 1)
                                    guard gaps >= 1 && gaps <= nN else { continue }
                                    finish(ti, Option(nR: nR, lead: lead, trail: trail, interior: g, interiorLayers: rInt,
                                                      edgeStart: es, edgeEnd: ee), nonRecomputed: nN)
                                    if exhausted { return }
                                }
                            }
                        }
                    }
                }
            }
        }
        visit(0, Acc())
        if exhausted {
            return Result(choice: best, lowerBound: min(bound, best?.stageSeconds ?? .infinity), exact: false, nodes: nodes)
        }
        return Result(choice: best, lowerBound: best?.stageSeconds ?? .infinity, exact: true, nodes: nodes)
    }

    /// The policy string of one unit's option: R-blocks separated by the non-recomputed
    /// layers (KEEP first, then SWAP), extra separators in the first gap.
    static func policyString(_ u: Unit, _ o: Option) -> [MemoryPolicy] {
        if o.full { return Array(repeating: .recompute, count: u.count) }
        let nN = u.count - o.nR
        var nonR = Array(repeating: MemoryPolicy.keep, count: nN - o.nS) + Array(repeating: MemoryPolicy.swap, count: o.nS)
        var blocks: [Int] = []
        if o.lead > 0 { blocks.append(o.lead) }
        if o.interior > 0 {
            let base = o.interiorLayers / o.interior, extra = o.interiorLayers % o.interior
            for b in 0..<o.interior { blocks.append(base + (b < extra ? 1 : 0)) }
        }
        if o.trail > 0 { blocks.append(o.trail) }
        let startTouched = o.lead > 0 || (o.edgeStart && o.interior > 0)
        let endTouched = o.trail > 0 || (o.edgeEnd && o.interior > 0)
        // Gap sizes: one separator where one is required, the rest in the first gap.
        let gapCount = blocks.isEmpty ? 1 : blocks.count - 1 + (startTouched ? 0 : 1) + (endTouched ? 0 : 1)
        var gaps = Array(repeating: 1, count: gapCount)
        gaps[0] += nN - gapCount
        var out: [MemoryPolicy] = []
        var gap = 0
        func takeGap() {
            let size = gaps[gap]
            out += nonR.prefix(size)
            nonR.removeFirst(size)
            gap += 1
        }
        if blocks.isEmpty { takeGap(); return out }
        if !startTouched { takeGap() }
        for (b, len) in blocks.enumerated() {
            out += Array(repeating: .recompute, count: len)
            if b < blocks.count - 1 { takeGap() }
        }
        if !endTouched { takeGap() }
        return out
    }

    /// A proven lower bound on the stage time of any fitting assignment, by relaxation: memory
    /// is at least the fixed part plus n · (kept stash), so at least D bytes of stash must
    /// leave per micro-batch; at time T the copy engine can move T·H/2 of them and the
    /// recompute budget T·σ − Σ(f+b) can drop at most its fractional-knapsack worth (best
    /// stash per forward second first). The smallest T that clears D is the bound
    /// (+∞ when the fixed part alone does not fit).
    func relaxationBound(_ s: StagePolicySolver.Stage) -> Double {
        let n = Double(cm.inFlight(stage: s.index, of: stageCount))
        let fixed = cm.peakMemory(stage: s.index, of: stageCount, layers: s.layers, params: s.params, retainedPerMicroBatch: 0,
                                  largestSegment: 0, largestSwap: 0)
        let floor = s.fwdBwd / s.speed
        if fixed > s.capacity { return .infinity }
        let total = s.stash.reduce(0, +)
        let need = total - (s.capacity - fixed) / n
        if need <= 0 { return floor }
        let byRatio = zip(s.fwd, s.stash).sorted { $0.1 / max($0.0, 1e-300) > $1.1 / max($1.0, 1e-300) }
        func removable(_ t: Double) -> Double {
            var bytes = t * s.hostBandwidth / 2
            var budget = t * s.speed - s.fwdBwd
            for (f, a) in byRatio where budget > 0 {
                if f <= budget { bytes += a; budget -= f } else { bytes += a * budget / f; budget = 0 }
            }
            return bytes
        }
        var lo = floor, hi = max(floor, 1e-30)
        while removable(hi) < need { hi *= 2; if hi > 1e300 { return .infinity } }
        if removable(lo) >= need { return lo }
        for _ in 0..<100 {
            let mid = (lo + hi) / 2
            if removable(mid) >= need { hi = mid } else { lo = mid }
        }
        return lo
    }
}
