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
enum ParametersPlanner {
    static func layout(_ cm: CostModel) -> PlanLayout {
        let L = cm.model.layers.count, p = cm.cluster.devices.count
        let sums = PrefixSums(cm.model)
        // Every stage is allowed, so the DP always finds a partition.
        let starts = MinMaxPartition.solve(layerCount: L, stageCount: p) { _, s, e in
            sums.params[e] - sums.params[s]
        } ?? UniformPlanner.layout(cm).ranges.map(\.lowerBound)
        return PlanLayout(stageStarts: starts, layerCount: L, policies: Array(repeating: .keep, count: L))
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
