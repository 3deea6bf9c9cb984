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
        let bound = max(relaxationBound(s), lagrangianBound(s))
        if bound == .infinity { return Result(choice: nil, lowerBound: .infinity, exact: true) }

        let units = self.units(s)
        let n = Double(cm.inFlight(stage: i, of: stageCount))
        let fixed = cm.peakMemory(stage: i, of: stageCount, layers: layers, params: s.params, retainedPerMicroBatch: 0,
                                  largestSegment: 0, largestSwap: 0)
        let slack = 1e-9 * max(1, s.capacity)
        func memory(_ t: Acc) -> Double { fixed + n * t.retained + t.largestSegment + 2 * t.largestSwap }
        func seconds(_ t: Acc) -> Double {
            let c = (s.fwdBwd + t.recompute) / s.speed
            return t.swapped > 0 ? max(c, 2 * t.swapped / s.hostBandwidth) : c
        }

        let canRecompute = s.moves.contains(.recompute)
        let relaxation = SuffixRelaxation(units: units, stage: s, inFlight: n, canSwap: s.moves.contains(.swap),
                                          canRecompute: canRecompute, segmentInputs: false)
        let segmentRelaxation = SuffixRelaxation(units: units, stage: s, inFlight: n, canSwap: s.moves.contains(.swap),
                                                 canRecompute: canRecompute, segmentInputs: true)
        // Bytes per micro-batch the kept stash of units u... may still take, given what is chosen.
        func room(_ t: Acc) -> Double {
            (s.capacity + slack - fixed - t.largestSegment - 2 * t.largestSwap) / n - t.retained
        }

        // A lower bound on the time of every completion of a partial choice t of the units before `next`.
        func relaxed(_ t: Acc, from next: Int) -> Double {
            let sec = seconds(t), left = room(t)
            let plain = relaxation.bound(from: next, seconds: sec, recompute: t.recompute, swapped: t.swapped,
                                         largestSwap: t.largestSwap, room: left)
            guard canRecompute && t.open < 0 else { return plain }
            return max(plain, segmentRelaxation.bound(from: next, seconds: sec, recompute: t.recompute, swapped: t.swapped,
                                                      largestSwap: t.largestSwap, room: left))
        }

        var best: StagePolicySolver.Choice?
        var bestSeconds = Double.infinity, bestMoved = Int.max, bestPeak = Double.infinity
        var options = [Option](repeating: Option(), count: units.count)
        var nodes = 0
        // Once the node budget is spent the search stops descending; the choices it would
        // still have tried along its current path are only bounded, and the smallest of those
        // bounds (with the incumbent) bounds every choice it did not see.
        var exhausted = false
        var frontier = Double.infinity

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
                    bestPeak = c.peakMemoryBytes
                }
                return
            }
            let unit = units[u]
            let k = unit.count
            // Over the incumbent's time (or equal time with more moved layers): cut.
            // A partial choice is also cut when no completion can beat the incumbent: the
            // relaxation of the units after this one (`SuffixRelaxation`) bounds its time.
            func cut(_ t: Acc) -> Bool {
                let sec = seconds(t)
                if sec > bestSeconds * (1 + 1e-12) { return true }
                if sec >= bestSeconds * (1 - 1e-12) && t.moved > bestMoved { return true }
                if memory(t) > s.capacity + slack { return true }
                let left = room(t)
                let bar = bestSeconds * (1 + 1e-9)
                // Exact down to the tie zone below the incumbent, which the tie rules use.
                let bound = relaxation.bound(from: u + 1, seconds: sec, recompute: t.recompute, swapped: t.swapped,
                                             largestSwap: t.largestSwap, room: left, cutoff: bestSeconds * (1 - 1e-9))
                if bound > bar { return true }
                if canRecompute && t.open < 0
                    && segmentRelaxation.bound(from: u + 1, seconds: sec, recompute: t.recompute, swapped: t.swapped,
                                               largestSwap: t.largestSwap, room: left, cutoff: bar) > bar { return true }
                // No completion is faster than the incumbent: it must also not move more layers,
                // and at as many, not take more memory (the solver's tie rules).
                if bound >= bestSeconds * (1 - 1e-9) {
                    let fewest = relaxation.fewestMoves(from: u + 1, room: left)
                    if t.moved + fewest > bestMoved { return true }
                    if t.moved + fewest == bestMoved {
                        let kept = relaxation.leastKept(from: u + 1, moves: bestMoved - t.moved)
                        if memory(t) + n * kept > bestPeak + slack { return true }
                    }
                }
                return false
            }
            // Adds nS swaps among the unit's nN non-recomputed layers and recurses, nS
            // ascending (time grows, memory falls after the first swap).
            func finish(_ base: Acc, _ option: Option, nonRecomputed nN: Int) {
                for nS in 0...(s.moves.contains(.swap) ? nN : 0) {  // DeviceSpec.allowedPolicies
                    if !exhausted { nodes += 1; exhausted = nodes > nodeBudget }
                    var t = base
                    t.swapped += Double(nS) * unit.a
                    if nS > 0 { t.largestSwap = max(t.largestSwap, unit.a) }
                    t.retained += Double(nN - nS) * unit.a
                    t.moved += nS
                    let sec = seconds(t)
                    if sec > bestSeconds * (1 + 1e-12) { return }  // more swaps only add time
                    if cut(t) { continue }
                    if exhausted { frontier = min(frontier, relaxed(t, from: u + 1)); continue }
                    var o = option
                    o.nS = nS
                    options[u] = o
                    visit(u + 1, t)
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
                    if !exhausted { nodes += 1; exhausted = nodes > nodeBudget }
                    if exhausted { frontier = min(frontier, relaxed(t, from: u + 1)); continue }
                    options[u] = Option(full: true, nR: k)
                    visit(u + 1, t)
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
                                }
                            }
                        }
                    }
                }
            }
        }
        visit(0, Acc())
        if exhausted {
            return Result(choice: best, lowerBound: max(bound, min(frontier, best?.stageSeconds ?? .infinity)), exact: false, nodes: nodes)
        }
        return Result(choice: best, lowerBound: best?.stageSeconds ?? .infinity, exact: true, nodes: nodes)
    }

    /// The stage's units: maximal runs of layers with the same profile and input size.
    func units(_ s: StagePolicySolver.Stage) -> [Unit] {
        var units: [Unit] = []
        var j = 0
        while j < s.layers.count {
            var k = j + 1
            let pj = cm.model.layers[s.layers.lowerBound + j].profile
            while k < s.layers.count && cm.model.layers[s.layers.lowerBound + k].profile == pj && s.input[k] == s.input[j] { k += 1 }
            units.append(Unit(first: j, count: k - j, f: s.fwd[j], a: s.stash[j], x: s.input[j], last: k == s.layers.count))
            j = k
        }
        return units
    }

    /// A proven lower bound on the stage time of every fitting choice without searching
    /// (+∞: none fits): the all-KEEP time when it fits, else the larger of `relaxationBound`
    /// and the two `SuffixRelaxation`s over all units. O(L log L); VPIPE uses it for the
    /// stages it has no budget left to search.
    func quickBound(stage i: Int, layers: Range<Int>) -> Double {
        let legacy = StagePolicySolver(costModel: cm, stageCount: stageCount)
        let s = legacy.describe(i, layers)
        let keep = legacy.choice(Array(repeating: .keep, count: layers.count), s)
        if keep.peakMemoryBytes <= s.capacity { return keep.stageSeconds }
        var bound = max(relaxationBound(s), lagrangianBound(s))
        if bound == .infinity { return bound }
        let units = self.units(s)
        let n = Double(cm.inFlight(stage: i, of: stageCount))
        let fixed = cm.peakMemory(stage: i, of: stageCount, layers: layers, params: s.params, retainedPerMicroBatch: 0,
                                  largestSegment: 0, largestSwap: 0)
        let room = (s.capacity + 1e-9 * max(1, s.capacity) - fixed) / n
        for segmentInputs in [false, true] where segmentInputs == false || s.moves.contains(.recompute) {
            let r = SuffixRelaxation(units: units, stage: s, inFlight: n, canSwap: s.moves.contains(.swap),
                                     canRecompute: s.moves.contains(.recompute), segmentInputs: segmentInputs, prefixes: 1)
            bound = max(bound, r.bound(from: 0, seconds: s.fwdBwd / s.speed, recompute: 0, swapped: 0, largestSwap: 0, room: room))
        }
        return bound
    }

    /// A proven lower bound on the stage time of every fitting choice by Lagrangian duality
    /// over the layer chain, which prices what the knapsack relaxations cannot: a recompute
    /// segment keeps its first layer's input. A fitting choice of time T keeps
    /// Σ_KEEP a + Σ_segment starts x ≤ room bytes per micro-batch, recomputes Σf ≤ T·σ − Σ(f+b)
    /// and swaps Σa ≤ T·H/2. So for any λ_R, λ_S ≥ 0 the cheapest string under
    /// Σ_KEEP a + Σ_starts x + λ_R·Σ_R f + λ_S·Σ_S a — a two-state DP along the chain
    /// (in a segment or not) — is at most room + λ_R(T·σ − Σ(f+b)) + λ_S·T·H/2, which bounds
    /// T from below for each λ; the best λ on a grid is taken. The swap buffer (2·the largest
    /// swapped stash, counted once) is handled as in `SuffixRelaxation`: the bound is the
    /// smallest over the largest swapped stash A (none, or a layer's), only layers up to A
    /// swapping and the room less 2A/n. +∞ when no string fits whatever the time.
    func lagrangianBound(_ s: StagePolicySolver.Stage) -> Double {
        let n = Double(cm.inFlight(stage: s.index, of: stageCount))
        let fixed = cm.peakMemory(stage: s.index, of: stageCount, layers: s.layers, params: s.params, retainedPerMicroBatch: 0,
                                  largestSegment: 0, largestSwap: 0)
        let room = (s.capacity + 1e-9 * max(1, s.capacity) - fixed) / n
        let canSwap = s.moves.contains(.swap), canRecompute = s.moves.contains(.recompute)
        let floor = s.fwdBwd / s.speed
        let count = s.fwd.count
        // λ_R on the scale of the layers' bytes per forward second, λ_S in (0, 1].
        var ratios = Set<Double>()
        for j in 0..<count where s.fwd[j] > 0 { ratios.insert(s.stash[j] / s.fwd[j]) }
        let sorted = ratios.sorted()
        var lambdaR: [Double] = [0]
        if canRecompute && !sorted.isEmpty {
            for q in 0..<12 { lambdaR.append(sorted[min(sorted.count - 1, q * sorted.count / 12)]) }
            lambdaR.append(sorted.last! * 2)
        }
        let lambdaS: [Double] = canSwap ? [0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1] : [0]
        var thresholds: [Double] = [0]
        if canSwap { thresholds += Set(s.stash).sorted().filter { $0 > 0 } }
        var result = Double.infinity
        for limit in thresholds {
            let roomA = room - 2 * limit / n
            var best = floor
            search: for lr in lambdaR {
                for ls in lambdaS {
                    // Cheapest string: out = not in a segment after layer j, inSeg = in one.
                    var out = 0.0, inSeg = Double.infinity
                    for j in 0..<count {
                        let a = s.stash[j]
                        var nextOut = min(out, inSeg) + a
                        if canSwap && limit > 0 && a <= limit { nextOut = min(nextOut, min(out, inSeg) + ls * a) }
                        let nextIn = canRecompute ? min(out + s.input[j], inSeg) + lr * s.fwd[j] : .infinity
                        out = nextOut
                        inSeg = nextIn
                    }
                    let cheapest = min(out, inSeg)
                    let slope = lr * s.speed + ls * s.hostBandwidth / 2
                    if slope <= 0 {
                        if cheapest > roomA * (1 + 1e-12) { best = .infinity; break search }
                        continue
                    }
                    best = max(best, (cheapest - roomA + lr * s.fwdBwd) / slope * (1 - 1e-9))
                }
            }
            result = min(result, best)
            if result <= floor { break }
        }
        return result
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

/// The fractional relaxation of the choice left for units u... of a stage, given what the
/// units before them chose: a lower bound on the stage time of every completion that fits.
///
/// Every completion must keep at most `room` bytes of stash per micro-batch (the memory left
/// after the fixed part and what is already retained, segments and swap buffers only grow),
/// so at least need = (stash of the remaining units) − room must leave by SWAP or RECOMPUTE.
/// At stage time T the copy engine takes at most T·H/2 − (bytes already swapped), and the
/// recompute budget T·σ − (forward+backward+recompute so far) buys at most its fractional
/// knapsack worth, units taken by stash per forward second. Forgetting the inputs segments
/// keep and the swap buffer only relaxes, and the bytes removable grow with T, so the
/// smallest T that clears `need` (found on the knapsack's breakpoints) bounds the time.
struct SuffixRelaxation {
    /// Per unit: forward seconds and stash of the whole unit, and the most bytes recomputing
    /// it can free (its credit, below).
    let f: [Double], a: [Double], credit: [Double]
    /// Unit indices, most credit per forward second first (recompute's knapsack order).
    let byRatio: [Int]
    /// For units u...: knapsackStart[u] indexes the prefix sums of forward seconds and credit
    /// of its units in ratio order (spentPrefix, takenPrefix; units − u entries).
    let knapsackStart: [Int], spentPrefix: [Double], takenPrefix: [Double]
    let units: Int
    /// Unit indices, most stash per layer first (the fewest layers that free given bytes).
    let byLayerStash: [Int]
    let count: [Int], layerStash: [Double]
    /// suffixStash[u]: stash of units u... together.
    let suffixStash: [Double]
    let fwdBwd: Double, speed: Double, hostBandwidth: Double
    /// In-flight micro-batches n_i: kept stash counts n times, buffers once.
    let n: Double
    let canSwap: Bool, canRecompute: Bool

    /// `segmentInputs`: credit a unit with its stash less its input plus the next unit's
    /// input instead of its stash. A recompute segment j...k frees Σa − x_j, which telescopes
    /// to Σ(a_l − x_l + x_{l+1}) − x_{k+1} ≤ the segment's credits; it holds for segments that
    /// start in units u..., so only when no segment is left open before them.
    /// `prefixes`: the first units u the bound will be asked from (all by default).
    init(units: [RunPolicySolver.Unit], stage s: StagePolicySolver.Stage, inFlight n: Double, canSwap: Bool, canRecompute: Bool,
         segmentInputs: Bool, prefixes: Int = .max) {
        self.n = n
        f = units.map { $0.f * Double($0.count) }
        a = units.map { $0.a * Double($0.count) }
        credit = segmentInputs
            ? units.indices.map { u in max(0, units[u].a * Double(units[u].count) - units[u].x + (u + 1 < units.count ? units[u + 1].x : 0)) }
            : a
        let ratio = zip(f, credit).map { $0.1 / max($0.0, 1e-300) }
        byRatio = units.indices.sorted { ratio[$0] != ratio[$1] ? ratio[$0] > ratio[$1] : $0 < $1 }
        count = units.map(\.count)
        layerStash = units.map(\.a)
        byLayerStash = units.indices.sorted { units[$0].a != units[$1].a ? units[$0].a > units[$1].a : $0 < $1 }
        // For every u, the knapsack over units u... in ratio order, as prefix sums.
        var starts: [Int] = [], spent: [Double] = [], taken: [Double] = []
        spent.reserveCapacity(units.count * (units.count + 1) / 2)
        taken.reserveCapacity(units.count * (units.count + 1) / 2)
        for u in 0..<min(units.count, prefixes) {
            starts.append(spent.count)
            var sf = 0.0, sc = 0.0
            for v in byRatio where v >= u {
                sf += f[v]
                sc += credit[v]
                spent.append(sf)
                taken.append(sc)
            }
        }
        knapsackStart = starts
        spentPrefix = spent
        takenPrefix = taken
        self.units = units.count
        var suffix = [Double](repeating: 0, count: units.count + 1)
        for u in stride(from: units.count - 1, through: 0, by: -1) { suffix[u] = suffix[u + 1] + a[u] }
        suffixStash = suffix
        fwdBwd = s.fwdBwd
        speed = s.speed
        hostBandwidth = s.hostBandwidth
        self.canSwap = canSwap
        self.canRecompute = canRecompute
    }

    /// The fewest layers of units `u`... that must leave KEEP so that their kept stash fits
    /// in `room` (each frees at most its own stash; the largest first).
    func fewestMoves(from u: Int, room: Double) -> Int {
        var need = suffixStash[u] - room
        if need <= 0 { return 0 }
        var moves = 0
        for v in byLayerStash where v >= u {
            let a = layerStash[v]
            guard a > 0 else { break }
            let whole = Double(count[v]) * a
            if whole < need { moves += count[v]; need -= whole; continue }
            // Rounding must not add a layer: round the ratio down within a relative tolerance.
            return moves + max(1, Int((need / a * (1 - 1e-9)).rounded(.up)))
        }
        return moves + (need > 1e-9 * suffixStash[u] ? 1 : 0)  // nothing frees enough: over any count
    }

    /// The least stash units `u`... can keep when `moves` of their layers leave KEEP.
    func leastKept(from u: Int, moves: Int) -> Double {
        var freed = 0.0, left = moves
        for v in byLayerStash where v >= u && left > 0 {
            let k = min(left, count[v])
            freed += Double(k) * layerStash[v]
            left -= k
        }
        return max(0, suffixStash[u] - freed)
    }

    /// The bound for units `u`... after a partial choice of stage time `seconds`, with
    /// `recompute` forward seconds recomputed, `swapped` bytes swapped and `largestSwap` the
    /// largest layer swapped so far, and `room` bytes per micro-batch left for kept stash
    /// (+∞: no completion fits).
    ///
    /// Swapping a layer of stash a also holds 2·a of buffers once (the largest swapped layer
    /// counts), which matters when n_i is small. So the relaxation is solved for every value
    /// the final largest swap A can take (what is swapped already, or a remaining layer's
    /// stash): only layers of stash ≤ A may swap, and the room shrinks by 2·(A − largestSwap)/n;
    /// the smallest of these bounds is the bound. With a `cutoff` the answer is exact only
    /// above it (a search that only asks whether the bound exceeds its incumbent stops early).
    func bound(from u: Int, seconds now: Double, recompute: Double, swapped: Double, largestSwap: Double,
               room: Double, cutoff: Double = 0) -> Double {
        if suffixStash[u] <= room { return now }
        guard canSwap else { return core(from: u, now: now, recompute: recompute, swapped: swapped, swappable: 0, room: room) }
        // Thresholds ascending: byLayerStash is descending, so walk it backwards.
        var eligible = 0.0  // stash of remaining layers no larger than the threshold
        var result = Double.infinity
        var k = byLayerStash.count - 1
        func addUpTo(_ limit: Double) {
            while k >= 0 {
                let v = byLayerStash[k]
                if v < u { k -= 1; continue }
                if layerStash[v] > limit { break }
                eligible += a[v]
                k -= 1
            }
        }
        addUpTo(largestSwap)
        result = core(from: u, now: now, recompute: recompute, swapped: swapped, swappable: largestSwap > 0 ? eligible : 0, room: room)
        while k >= 0 && result > max(now, cutoff) {
            let v = byLayerStash[k]
            if v < u { k -= 1; continue }
            let threshold = layerStash[v]
            addUpTo(threshold)
            let r = room - 2 * (threshold - largestSwap) / n
            result = min(result, core(from: u, now: now, recompute: recompute, swapped: swapped, swappable: eligible, room: r))
        }
        return result
    }

    /// The relaxation for one swap threshold: at most `swappable` more bytes may swap.
    /// Bytes removable by time T, g(T) = min(limit, T·H/2 − swapped) + K(T·σ − compute),
    /// grow with T and are linear between the knapsack's breakpoints and the copy engine's
    /// two kinks, so the smallest T with g(T) ≥ need is found by binary search over the
    /// breakpoints (the prefix sums of `knapsack`) and one interpolation.
    func core(from u: Int, now: Double, recompute: Double, swapped: Double, swappable limit: Double, room: Double) -> Double {
        let need = suffixStash[u] - room
        if need <= 0 { return now }
        let compute = fwdBwd + recompute  // forward+backward seconds at unit speed so far
        func swappable(_ t: Double) -> Double { min(limit, max(0, t * hostBandwidth / 2 - swapped)) }
        let base = knapsackStart[u], steps = canRecompute ? units - u : 0
        // Step i recomputes the i-th unit of the order fully; it ends at (compute + spent_i)/σ.
        func end(_ i: Int) -> Double { (compute + spentPrefix[base + i]) / speed }
        func reached(_ i: Int) -> Bool { swappable(end(i)) + takenPrefix[base + i] >= need }
        // First step ending after `now`, then the first from there whose end clears `need`.
        var lo = 0, hi = steps
        while lo < hi { let mid = (lo + hi) / 2; if end(mid) > now { hi = mid } else { lo = mid + 1 } }
        hi = steps
        while lo < hi { let mid = (lo + hi) / 2; if reached(mid) { hi = mid } else { lo = mid + 1 } }
        if lo < steps {
            let i = lo
            let spentBefore = i == 0 ? 0 : spentPrefix[base + i - 1], takenBefore = i == 0 ? 0 : takenPrefix[base + i - 1]
            let stepF = spentPrefix[base + i] - spentBefore, stepCredit = takenPrefix[base + i] - takenBefore
            let left = max(now, (compute + spentBefore) / speed), right = end(i)
            if stepF <= 0 { return left }  // a free step: it is taken whole at its start
            func g(_ t: Double) -> Double {
                swappable(t) + takenBefore + stepCredit * min(1, max(0, (t * speed - compute - spentBefore) / stepF))
            }
            return Self.crossing(g, need, from: left, to: right, kinks: [2 * swapped / hostBandwidth, 2 * (swapped + limit) / hostBandwidth])
        }
        // Everything recomputable is recomputed; the copy engine removes the rest.
        let floor = max(now, (compute + (steps > 0 ? spentPrefix[base + steps - 1] : 0)) / speed)
        let taken = steps > 0 ? takenPrefix[base + steps - 1] : 0
        if swappable(floor) + taken >= need { return floor }
        guard need - taken <= limit else { return .infinity }
        return max(floor, 2 * (need - taken + swapped) / hostBandwidth)
    }

    /// The smallest t in [from, to] with g(t) ≥ need, g increasing and linear between the
    /// kinks, g(to) ≥ need; rounded down so that it stays a lower bound.
    static func crossing(_ g: (Double) -> Double, _ need: Double, from: Double, to: Double, kinks: [Double]) -> Double {
        var a = from, ga = g(from)
        if ga >= need { return from }
        for b in kinks.filter({ $0 > from && $0 < to }).sorted() + [to] {
            let gb = g(b)
            if gb >= need {
                let t = gb > ga ? a + (need - ga) / (gb - ga) * (b - a) : a
                return max(a, min(b, t) * (1 - 1e-12))
            }
            a = b
            ga = gb
        }
        return a
    }
}
