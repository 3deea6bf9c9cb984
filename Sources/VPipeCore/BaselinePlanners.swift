/// The baseline planners. Each chooses a partition by its own rule and policies only as its
/// name says; none of them searches policies (that is the vPipe planner's job).

/// UNIFORM: equal layer counts per stage, every layer KEEP. When L is not a multiple of p
/// the last L mod p stages get one layer more: under 1F1B the early stages hold more
/// in-flight micro-batches, so they are the ones to keep light.
enum UniformPlanner {
    static func layout(_ cm: CostModel) -> PlanLayout {
        let L = cm.model.layers.count, p = cm.cluster.devices.count
        let base = L / p, extra = L % p
        var starts: [Int] = []
        var next = 0
        for i in 0..<p {
            starts.append(next)
            next += base + (i >= p - extra ? 1 : 0)
        }
        return PlanLayout(stageStarts: starts, layerCount: L, policies: Array(repeating: .keep, count: L))
    }
}

/// PARAMETERS: the partition minimising the largest per-stage param_bytes (exact), every
/// layer KEEP. Blind to time and activations, as parameter-balancing partitioners are.
///
/// Not the p·L² dynamic programme the other min-max planners use: stage costs here are
/// plain sums of non-negative integers, so "can every stage stay within B?" is a greedy
/// walk, and the least such B is found by bisection over the integers. O(L · log(total))
/// time: the largest request validation accepts (2^20 layers, 4,096 devices) plans in well
/// under a second (`make bench-planner`), so this planner needs no work limit.
enum ParametersPlanner {
    static func layout(_ cm: CostModel) -> PlanLayout {
        let L = cm.model.layers.count, p = cm.cluster.devices.count
        let params = PrefixSums(cm.model).params
        let starts = starts(prefix: params, stageCount: p) ?? UniformPlanner.layout(cm).ranges.map(\.lowerBound)
        return PlanLayout(stageStarts: starts, layerCount: L, policies: Array(repeating: .keep, count: L))
    }

    /// Stage starts of a partition of the layers into `p` non-empty stages whose largest
    /// stage sum is the least possible; `prefix[i]` is the sum of layers 0..<i (integers,
    /// non-decreasing). nil when p is not in 1...L.
    static func starts(prefix: [Double], stageCount p: Int) -> [Int]? {
        let L = prefix.count - 1
        guard p >= 1 && p <= L else { return nil }
        var largest = 0.0
        for l in 0..<L { largest = max(largest, prefix[l + 1] - prefix[l]) }
        // Invariant: a bound of `high` is achievable, `low - 1` is not.
        var low = largest, high = prefix[L]
        while low < high {
            let mid = (low + (high - low) / 2).rounded(.down)
            if packFromTheEnd(prefix: prefix, stageCount: p, bound: mid) != nil { high = mid } else { low = mid + 1 }
        }
        return packFromTheEnd(prefix: prefix, stageCount: p, bound: high)
    }

    /// Greedy from the last layer backwards: each stage takes as many layers as fit within
    /// `bound` while leaving one layer for every stage before it. nil when the first stage
    /// would exceed `bound`. (Packing the later stages full is the dynamic programme's
    /// tie-break: it keeps the earliest start for the last stage.)
    static func packFromTheEnd(prefix: [Double], stageCount p: Int, bound: Double) -> [Int]? {
        var starts = [Int](repeating: 0, count: p)
        var end = prefix.count - 1
        for k in stride(from: p - 1, through: 1, by: -1) {
            // The smallest start s >= k (stages 0..<k need a layer each) with prefix[end] - prefix[s] <= bound.
            var lo = k, hi = end - 1  // the stage owns at least layer end - 1
            if prefix[end] - prefix[hi] > bound { return nil }
            while lo < hi {
                let mid = (lo + hi) / 2
                if prefix[end] - prefix[mid] <= bound { hi = mid } else { lo = mid + 1 }
            }
            starts[k] = lo
            end = lo
        }
        return prefix[end] - prefix[0] <= bound ? starts : nil
    }
}

/// TIME_BALANCED (policy KEEP) and GPIPE (policy RECOMPUTE): the exact minimum of the
/// bottleneck τ = max(stage times, link times) over all partitions in which every stage
/// fits its device's memory with that policy on every layer. GPIPE is GPipe's plan:
/// rematerialise everything, cut where the recompute-inclusive time balances.
enum BalancedPlanner {
    static func layout(_ cm: CostModel, policy: MemoryPolicy, plannerName: String) throws -> PlanLayout {
        let L = cm.model.layers.count, p = cm.cluster.devices.count
        let policies = Array(repeating: policy, count: L)
        let sums = PrefixSums(cm.model)
        // Inner-loop cost of stage k owning s..<e under the uniform policy, as cost model v1
        // computes it (same sums, same order of the byte terms, so the fit test agrees with
        // `CostModel.evaluate` exactly: byte sums below 2^53 are exact in Double).
        func stageTime(_ k: Int, _ s: Int, _ e: Int) -> Double {
            let recompute = policy == .recompute ? sums.fwd[e] - sums.fwd[s] : 0
            return (sums.fwdBwd[e] - sums.fwdBwd[s] + recompute) / cm.cluster.devices[k].effectiveSpeed
        }
        func fits(_ k: Int, _ s: Int, _ e: Int) -> Bool {
            let params = sums.params[e] - sums.params[s]
            let stash = sums.stash[e] - sums.stash[s]
            let input = Double(cm.model.inputBytes(ofLayer: s))
            // KEEP retains every stash; RECOMPUTE makes the stage one segment that retains its
            // input and rematerialises all stashes at once.
            let memory = policy == .keep
                ? cm.peakMemory(stage: k, of: p, layers: s..<e, params: params, retainedPerMicroBatch: stash,
                                largestSegment: 0, largestSwap: 0)
                : cm.peakMemory(stage: k, of: p, layers: s..<e, params: params, retainedPerMicroBatch: input,
                                largestSegment: stash, largestSwap: 0)
            return memory <= Double(cm.cluster.devices[k].memoryBytes)
        }
        let starts = MinMaxPartition.solve(layerCount: L, stageCount: p) { k, s, e in
            guard fits(k, s, e) else { return nil }
            let link = k > 0 ? cm.linkSeconds(after: k - 1, lastLayer: s - 1) : 0
            return max(stageTime(k, s, e), link)
        }
        if let starts {
            return PlanLayout(stageStarts: starts, layerCount: L, policies: policies)
        }
        // Nothing fits: explain with the most balanced partition, ignoring memory.
        let unconstrained = MinMaxPartition.solve(layerCount: L, stageCount: p) { k, s, e in
            max(stageTime(k, s, e), k > 0 ? cm.linkSeconds(after: k - 1, lastLayer: s - 1) : 0)
        } ?? UniformPlanner.layout(cm).ranges.map(\.lowerBound)
        let plan = try cm.evaluate(PlanLayout(stageStarts: unconstrained, layerCount: L, policies: policies))
        let policyName = policy == .keep ? "KEEP" : "RECOMPUTE"
        throw VPipeError.infeasible(
            "\(plannerName): no partition into \(p) stages with every layer \(policyName) fits the devices' memory; "
                + "the most balanced one has " + cm.violations(plan).joined(separator: "; ")
                + ". More devices, fewer micro-batches, more memory or a planner that swaps/recomputes would help")
    }
}
