/// Cost model v1 (docs/cost-model.md): the one function that turns a layout (stage ranges
/// and per-layer policies) into every number a `Plan` reports. Every planner's result and
/// every test goes through `evaluate`, so a plan's numbers are reproducible from the request
/// by anyone who implements the formulas.
public struct CostModel: Sendable {
    public static let version = 1

    public let model: ModelSpec
    public let cluster: ClusterSpec
    public let schedule: Schedule
    public let microBatches: Int
    /// What the search planners minimise; `evaluate` does not depend on it.
    public let objective: PlanObjective

    public init(model: ModelSpec, cluster: ClusterSpec, schedule: Schedule, microBatches: Int,
                objective: PlanObjective = .iterationTime) {
        self.model = model
        self.cluster = cluster
        self.schedule = schedule
        self.microBatches = microBatches
        self.objective = objective
    }

    public init(_ request: PlanRequest) {
        self.init(model: request.model, cluster: request.cluster, schedule: request.options.schedule,
                  microBatches: request.options.microBatches, objective: request.options.objective)
    }

    /// n_i: micro-batches whose stash stage `i` of `p` holds at its peak.
    public func inFlight(stage i: Int, of p: Int) -> Int {
        switch schedule {
        case .gpipe: return microBatches
        case .oneFOneB, .pipedreamAsync: return min(microBatches, p - i)
        }
    }

    /// v_i: weight versions stage `i` of `p` holds.
    public func weightVersions(stage i: Int, of p: Int) -> Int {
        switch schedule {
        case .gpipe, .oneFOneB: return 1
        case .pipedreamAsync: return min(microBatches, p - i)
        }
    }

    /// K_i: the link after stage `i` whose last layer is `lastLayer` (activation forward,
    /// gradient back).
    public func linkSeconds(after i: Int, lastLayer: Int) -> Double {
        let link = cluster.links[i]
        return 2 * (link.latency + Double(model.layers[lastLayer].profile.outputBytes) / link.bandwidth)
    }

    /// The numbers of stage `i` of `p` owning `layers` with `policies` (indexed by layer).
    /// `linkSeconds` is left 0; `evaluate` fills it.
    public func stage(_ i: Int, of p: Int, layers: Range<Int>, policies: [MemoryPolicy]) -> StagePlan {
        let device = cluster.devices[i]
        var fwdBwd = 0.0, recomputeFwd = 0.0
        var params = 0.0, keptStash = 0.0, segmentInputs = 0.0, swappedStash = 0.0
        var largestSegment = 0.0, currentSegment = 0.0, largestSwap = 0.0
        var inSegment = false
        for l in layers {
            let prof = model.layers[l].profile
            let a = Double(prof.stashBytes)
            fwdBwd += prof.fwdSeconds + prof.bwdSeconds
            params += Double(prof.paramBytes)
            if policies[l] == .recompute {
                recomputeFwd += prof.fwdSeconds
                if !inSegment {
                    // A segment keeps only the input of its first layer.
                    segmentInputs += Double(model.inputBytes(ofLayer: l))
                    currentSegment = 0
                    inSegment = true
                }
                currentSegment += a
                largestSegment = max(largestSegment, currentSegment)
                continue
            }
            inSegment = false
            if policies[l] == .keep {
                keptStash += a
            } else {
                swappedStash += a
                largestSwap = max(largestSwap, a)
            }
        }
        let compute = (fwdBwd + recomputeFwd) / device.effectiveSpeed
        let swap = swappedStash > 0 ? 2 * swappedStash / device.hostBandwidth : 0
        let memory = peakMemory(
            stage: i, of: p, layers: layers, params: params, retainedPerMicroBatch: keptStash + segmentInputs,
            largestSegment: largestSegment, largestSwap: largestSwap)
        return StagePlan(
            device: i, layers: layers, policies: Array(policies[layers]),
            computeSeconds: compute, swapSeconds: swap, stageSeconds: max(compute, swap),
            linkSeconds: 0, peakMemoryBytes: memory, memoryBytes: device.memoryBytes)
    }

    /// Mem_i from a stage's totals: the one place the memory formula is written, shared by
    /// `stage` and by planners that compute the totals from running sums (byte totals are
    /// integers below 2^53, exact in Double, so both paths give the same bits).
    public func peakMemory(stage i: Int, of p: Int, layers: Range<Int>, params: Double, retainedPerMicroBatch: Double,
                           largestSegment: Double, largestSwap: Double) -> Double {
        let n = Double(inFlight(stage: i, of: p))
        let v = Double(weightVersions(stage: i, of: p))
        let exact = params * (model.stateFactor + v - 1)
            + n * retainedPerMicroBatch
            + largestSegment
            + 2 * largestSwap
            + Double(model.inputBytes(ofLayer: layers.lowerBound))
            + Double(model.layers[layers.upperBound - 1].profile.outputBytes)
            + Double(cluster.devices[i].reservedBytes)
        return Self.wholeBytes(exact)
    }

    /// Memory is counted in whole bytes, rounded up (Mem_i is fractional only when κ is), so
    /// the reported peak and the feasibility test agree. A value within floating-point noise
    /// of an integer is that integer, so κ = 1.1 cannot add a phantom byte.
    public static func wholeBytes(_ exact: Double) -> Double {
        let nearest = exact.rounded()
        return abs(exact - nearest) <= 1e-9 * max(1, abs(exact)) ? nearest : exact.rounded(.up)
    }

    /// Evaluates `layout` with cost model v1. Throws `invalidField` (paths under `plan.`)
    /// when the layout is not a plan for this model and cluster; an infeasible plan is
    /// evaluated normally (see `Plan.isFeasible` and `violations`).
    public func evaluate(_ layout: PlanLayout) throws -> Plan {
        try check(layout)
        let p = layout.ranges.count
        var stages: [StagePlan] = []
        stages.reserveCapacity(p)
        for (i, range) in layout.ranges.enumerated() {
            var s = stage(i, of: p, layers: range, policies: layout.policies)
            if i < p - 1 { s.linkSeconds = linkSeconds(after: i, lastLayer: range.upperBound - 1) }
            stages.append(s)
        }
        var tau = 0.0, sum = 0.0
        for s in stages {
            tau = max(tau, s.stageSeconds, s.linkSeconds)
            sum += s.stageSeconds + s.linkSeconds
        }
        return Plan(
            stages: stages, schedule: schedule, microBatches: microBatches,
            bottleneckSeconds: tau, iterationSeconds: Double(microBatches - 1) * tau + sum,
            costModelVersion: CostModel.version, planner: nil, planningSeconds: 0)
    }

    /// One line per stage whose peak memory exceeds its device, naming the stage, device,
    /// layers and the bytes over.
    public func violations(_ plan: Plan) -> [String] {
        plan.stages.filter { !$0.fits }.map { s in
            let over = s.peakMemoryBytes - Double(s.memoryBytes)
            return "stage \(s.device) on \(cluster.describeDevice(s.device)), layers \(s.layers.lowerBound)-\(s.layers.upperBound - 1): "
                + "needs \(formatFixed(s.peakMemoryBytes, decimals: 0)) bytes (\(formatBytes(s.peakMemoryBytes))), "
                + "\(formatFixed(over, decimals: 0)) bytes (\(formatBytes(over))) over its memory_bytes \(s.memoryBytes) (\(formatBytes(Double(s.memoryBytes))))"
        }
    }

    /// The layout must cover the model's layers with contiguous, non-empty ranges, one per
    /// device at most, and give every layer a policy.
    func check(_ layout: PlanLayout) throws {
        let L = model.layers.count
        let p = layout.ranges.count
        if p == 0 {
            throw VPipeError.invalidField(field: "plan.stages", message: "the plan has no stages")
        }
        if p > cluster.devices.count {
            throw VPipeError.invalidField(
                field: "plan.stages", message: "\(p) stages but the cluster has only \(cluster.devices.count) devices")
        }
        if layout.policies.count != L {
            throw VPipeError.invalidField(
                field: "plan.stages[].policy", message: "\(layout.policies.count) policies in all for a model of \(L) layers")
        }
        var next = 0
        for (i, r) in layout.ranges.enumerated() {
            if r.lowerBound != next {
                throw VPipeError.invalidField(
                    field: "plan.stages[\(i)].first_layer",
                    message: "expected \(next) (right after the previous stage's last layer), got \(r.lowerBound)")
            }
            if r.isEmpty || r.upperBound > L {
                throw VPipeError.invalidField(
                    field: "plan.stages[\(i)].last_layer",
                    message: "stage must own at least one layer within 0..\(L - 1), got layers \(r.lowerBound)..\(r.upperBound - 1)")
            }
            next = r.upperBound
        }
        if next != L {
            throw VPipeError.invalidField(
                field: "plan.stages[\(p - 1)].last_layer", message: "the last stage must end at layer \(L - 1), got \(next - 1)")
        }
        for (i, r) in layout.ranges.enumerated() {
            let device = cluster.devices[i]
            for l in r where !device.allows(layout.policies[l]) {
                throw VPipeError.invalidField(
                    field: "plan.stages[\(i)].policy[\(l - r.lowerBound)]",
                    message: "layer \(l) (\(model.layers[l].name)) uses \(layout.policies[l]), which device \(i) (\(device.name)) does not allow")
            }
        }
    }
}
