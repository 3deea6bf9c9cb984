/// The discrete-event simulator: plays a schedule action by action with durations from the
/// layer profiles and the plan's policies, and reports what the cost model can only estimate
/// (docs/cost-model.md, "Where the model is known to be rough").
///
/// Resources, each running one action at a time, in its stage list's order:
/// - stage i's compute: `F` (Σ f_l / σ_i), `B` (Σ b_l / σ_i), `R` (Σ_{RECOMPUTE} f_l / σ_i);
///   a receive is a zero-length wait on it for the neighbour's send to end;
/// - stage i's copy engine: `SO`, `SI` (Σ_{SWAP} a_l / H_i each);
/// - links[k], shared by stage k's `SEND_F` and stage k+1's `SEND_B` (λ_k + o_{e_k} / B_k
///   each; when both wait for a free link the activation goes first), as the cost model's
///   K_k charges both directions to one link.
///
/// Memory of stage i: a static part (Σ w_l·(κ + v_i − 1) + x_{s_i} + o_{e_i} + R_i, as in
/// Mem_i) plus, per micro-batch, the KEEP stashes and segment inputs from the start of `F` to
/// the end of `B`, the SWAP stashes from the start of `F` to the end of `SO` and again from
/// the start of `SI` to the end of `B`, and the largest RECOMPUTE segment from the start of
/// `R` to the end of `B`. A swap-in is prefetched: it starts as soon as its swap-out is done,
/// the copy engine is free and its bytes fit under M_i, or, when they never fit, as soon as
/// the compute stream is waiting for it.
///
/// Cost: O(A · Q) for A actions and Q = 4p queues; a 16-stage, 64-micro-batch iteration
/// plays in milliseconds.
public struct Simulator: Sendable {
    public let model: ModelSpec
    public let cluster: ClusterSpec

    public init(model: ModelSpec, cluster: ClusterSpec) {
        self.model = model
        self.cluster = cluster
    }

    /// The most stage × micro-batch pairs one simulation plays (about ten actions each): far
    /// above what a plan needs to be judged, low enough that a request cannot keep a host busy
    /// for minutes or make gigabytes of trace.
    public static let maxStageMicroBatches = 1 << 14
    /// The cost of a simulation also grows with the square of the stage count (every stage
    /// scans its neighbours' events); 512 stages keep the worst case to seconds.
    public static let maxStages = 512

    /// Evaluates `layout` with the cost model, generates its schedule, validates it, and
    /// plays it. Throws `invalidField` when the layout is not a plan for the model and
    /// cluster, or when p · m exceeds `maxStageMicroBatches`.
    public func simulate(_ layout: PlanLayout, schedule kind: Schedule, microBatches m: Int) throws -> SimulationReport {
        let costModel = CostModel(model: model, cluster: cluster, schedule: kind, microBatches: m)
        let plan = try costModel.evaluate(layout)
        if plan.stages.count > Simulator.maxStages {
            throw VPipeError.invalidField(field: "plan.stages", message: "\(plan.stages.count) stages is more than the simulator plays (\(Simulator.maxStages))")
        }
        if plan.stages.count * m > Simulator.maxStageMicroBatches {
            throw VPipeError.invalidField(
                field: "plan.micro_batches",
                message: "\(plan.stages.count) stages × \(m) micro-batches is more than the simulator plays "
                    + "(\(Simulator.maxStageMicroBatches) stage-micro-batch pairs); simulate fewer micro-batches")
        }
        let schedule = try ScheduleGenerator.generate(for: plan)
        var report = try run(schedule, layout: layout)
        report.costModelIterationSeconds = plan.iterationSeconds
        return report
    }

    /// Plays `schedule` for `layout` (validated first). `costModelIterationSeconds` is left 0.
    public func run(_ schedule: PipelineSchedule, layout: PlanLayout) throws -> SimulationReport {
        let costModel = CostModel(model: model, cluster: cluster, schedule: schedule.kind, microBatches: schedule.microBatches)
        try costModel.check(layout)
        let p = layout.ranges.count
        if schedule.stageCount != p {
            throw VPipeError.invalidField(field: "schedule", message: "\(schedule.stageCount) stage lists for a plan of \(p) stages")
        }
        try ScheduleValidator.validate(schedule, stagePolicies: layout.ranges.map { Array(layout.policies[$0]) })
        let costs = (0..<p).map { StageCosts(costModel, stage: $0, of: p, layout: layout) }
        for (i, c) in costs.enumerated() {
            // Valid inputs can still overflow (2^53 bytes over a 1e-300 bytes/s copy engine).
            for (value, field) in [(c.forward + c.backward + c.recompute, "model.layers (stage \(i)'s compute time)"),
                                   (c.swap, "cluster.devices[\(i)].host_bandwidth"),
                                   (c.sendActivation, "cluster.links[\(i)]"), (c.sendGradient, "cluster.links[\(i - 1)]")]
            where !value.isFinite {
                throw VPipeError.invalidField(field: field, message: "stage \(i): an action would take \(value) seconds; the simulator needs finite durations")
            }
        }
        var play = Playback(schedule: schedule, costs: costs, links: cluster.links.count)
        try play.run()
        return play.report()
    }

    /// Durations and byte counts of one stage's actions.
    struct StageCosts {
        var forward = 0.0, backward = 0.0, recompute = 0.0, swap = 0.0
        var sendActivation = 0.0, sendGradient = 0.0
        var staticBytes = 0.0, retainedBytes = 0.0, swapBytes = 0.0, segmentBytes = 0.0
        var capacity = 0

        init(_ cm: CostModel, stage i: Int, of p: Int, layout: PlanLayout) {
            let range = layout.ranges[i]
            let device = cm.cluster.devices[i]
            var params = 0.0, current = 0.0
            var inSegment = false
            for l in range {
                let prof = cm.model.layers[l].profile
                forward += prof.fwdSeconds
                backward += prof.bwdSeconds
                params += Double(prof.paramBytes)
                let a = Double(prof.stashBytes)
                switch layout.policies[l] {
                case .keep:
                    retainedBytes += a
                    inSegment = false
                case .swap:
                    swapBytes += a
                    inSegment = false
                case .recompute:
                    recompute += prof.fwdSeconds
                    if !inSegment {
                        retainedBytes += Double(cm.model.inputBytes(ofLayer: l))
                        current = 0
                        inSegment = true
                    }
                    current += a
                    segmentBytes = max(segmentBytes, current)
                }
            }
            forward /= device.effectiveSpeed
            backward /= device.effectiveSpeed
            recompute /= device.effectiveSpeed
            swap = swapBytes / device.hostBandwidth
            if i < p - 1 {
                let link = cm.cluster.links[i]
                sendActivation = link.latency + Double(cm.model.layers[range.upperBound - 1].profile.outputBytes) / link.bandwidth
            }
            if i > 0 {
                let link = cm.cluster.links[i - 1]
                sendGradient = link.latency + Double(cm.model.inputBytes(ofLayer: range.lowerBound)) / link.bandwidth
            }
            let v = Double(cm.weightVersions(stage: i, of: p))
            staticBytes = params * (cm.model.stateFactor + v - 1)
                + Double(cm.model.inputBytes(ofLayer: range.lowerBound))
                + Double(cm.model.layers[range.upperBound - 1].profile.outputBytes)
                + Double(device.reservedBytes)
            capacity = device.memoryBytes
        }
    }
}

/// The state of one simulation (internal): queues of actions per resource, what runs where,
/// what has finished, and each stage's memory.
struct Playback {
    struct Queue {
        var stage: Int
        var resource: SimulationReport.Resource
        var slot: Int  // index into `running`
        var actions: [ScheduleAction] = []
        var next = 0
        var head: ScheduleAction? { next < actions.count ? actions[next] : nil }
    }

    let schedule: PipelineSchedule
    let costs: [Simulator.StageCosts]
    var queues: [Queue] = []
    /// Per resource slot: the action running and when it ends.
    var running: [(action: ScheduleAction, end: Double)?]
    var finished: [ScheduleAction: Double] = [:]
    var present: Set<ScheduleAction> = []
    var memory: [Double]
    var series: [[SimulationReport.MemoryPoint]]
    var peak: [Double]
    var busy: [Double]
    var bubble: [Double]
    var stall: [Double]
    var lastComputeEnd: [Double]
    var events: [SimulationReport.Event] = []
    var now = 0.0

    init(schedule: PipelineSchedule, costs: [Simulator.StageCosts], links: Int) {
        self.schedule = schedule
        self.costs = costs
        let p = costs.count
        running = Array(repeating: nil, count: 2 * p + links)
        memory = costs.map(\.staticBytes)
        series = costs.map { [SimulationReport.MemoryPoint(time: 0, bytes: $0.staticBytes)] }
        peak = memory
        busy = Array(repeating: 0, count: p)
        bubble = busy
        stall = busy
        lastComputeEnd = busy
        // Queue order matters only for ties at one instant: compute first, so that a swap-in
        // sees whether compute is waiting for it; forward sends before backward sends.
        for i in 0..<p { queues.append(Queue(stage: i, resource: .compute(i), slot: i)) }
        for i in 0..<p { queues.append(Queue(stage: i, resource: .copy(i), slot: p + i)) }
        for i in 0..<p where i < p - 1 { queues.append(Queue(stage: i, resource: .link(i), slot: 2 * p + i)) }
        for i in 0..<p where i > 0 { queues.append(Queue(stage: i, resource: .link(i - 1), slot: 2 * p + i - 1)) }
        var index: [SimulationReport.Resource: [Int]] = [:]
        for (q, queue) in queues.enumerated() { index[queue.resource, default: []].append(q) }
        for (i, list) in schedule.stages.enumerated() {
            for a in list {
                present.insert(a)
                let q: Int?
                switch a.kind {
                case .forward, .backward, .recompute, .recvActivation, .recvGradient: q = i
                case .swapOut, .swapIn: q = p + i
                case .sendActivation: q = index[.link(i)]?.first { queues[$0].stage == i }
                case .sendGradient: q = index[.link(i - 1)]?.first { queues[$0].stage == i }
                }
                if let q { queues[q].actions.append(a) }
            }
        }
    }

    func duration(_ a: ScheduleAction) -> Double {
        let c = costs[a.stage]
        switch a.kind {
        case .forward: return c.forward
        case .backward: return c.backward
        case .recompute: return c.recompute
        case .swapOut, .swapIn: return c.swap
        case .sendActivation: return c.sendActivation
        case .sendGradient: return c.sendGradient
        case .recvActivation, .recvGradient: return 0
        }
    }

    /// What must have finished before `a` starts (only actions the schedule holds).
    func dependencies(_ a: ScheduleAction) -> [ScheduleAction] {
        func on(_ stage: Int, _ kind: ScheduleAction.Kind) -> ScheduleAction {
            ScheduleAction(stage: stage, kind: kind, microBatch: a.microBatch)
        }
        let i = a.stage
        let deps: [ScheduleAction]
        switch a.kind {
        case .forward: deps = [on(i, .recvActivation)]
        case .backward: deps = [on(i, .forward), on(i, .recvGradient), on(i, .swapIn), on(i, .recompute)]
        case .recompute, .swapOut, .sendActivation: deps = [on(i, .forward)]
        case .swapIn: deps = [on(i, .swapOut)]
        case .sendGradient: deps = [on(i, .backward)]
        case .recvActivation: deps = [on(i - 1, .sendActivation)]
        case .recvGradient: deps = [on(i + 1, .sendGradient)]
        }
        return deps.filter { present.contains($0) }
    }

    /// Bytes `a` allocates when it starts and frees when it ends, on its stage.
    func bytes(_ a: ScheduleAction) -> (alloc: Double, free: Double) {
        let c = costs[a.stage]
        let swapped = present.contains(ScheduleAction(stage: a.stage, kind: .swapIn, microBatch: a.microBatch))
        switch a.kind {
        case .forward: return (c.retainedBytes + c.swapBytes, 0)
        case .swapOut: return (0, c.swapBytes)
        case .swapIn: return (c.swapBytes, 0)
        case .recompute: return (c.segmentBytes, 0)
        case .backward:
            let rematerialised = present.contains(ScheduleAction(stage: a.stage, kind: .recompute, microBatch: a.microBatch))
            return (0, c.retainedBytes + (swapped ? c.swapBytes : 0) + (rematerialised ? c.segmentBytes : 0))
        default: return (0, 0)
        }
    }

    mutating func setMemory(_ stage: Int, _ delta: Double) {
        guard delta != 0 else { return }
        memory[stage] += delta
        peak[stage] = max(peak[stage], memory[stage])
        // One point per instant, and only where the value changes.
        let n = series[stage].count
        if series[stage][n - 1].time == now {
            series[stage][n - 1].bytes = memory[stage]
            if n >= 2 && series[stage][n - 2].bytes == memory[stage] { series[stage].removeLast() }
        } else if series[stage][n - 1].bytes != memory[stage] {
            series[stage].append(.init(time: now, bytes: memory[stage]))
        }
    }

    func ready(_ a: ScheduleAction) -> Bool {
        dependencies(a).allSatisfy { finished[$0] != nil }
    }

    /// A swap-in may start when its bytes fit, or when compute waits for it.
    func swapInAllowed(_ a: ScheduleAction) -> Bool {
        let c = costs[a.stage]
        if memory[a.stage] + c.swapBytes <= Double(c.capacity) { return true }
        guard running[a.stage] == nil, let head = queues[a.stage].head else { return false }
        return (head.kind == .backward || head.kind == .recompute)
            && finished[ScheduleAction(stage: a.stage, kind: .swapIn, microBatch: head.microBatch)] == nil
    }

    mutating func finish(_ a: ScheduleAction, slot: Int?) {
        finished[a] = now
        if let slot { running[slot] = nil }
        let freed = bytes(a).free
        setMemory(a.stage, -freed)
    }

    /// Starts every queue head that can start now; true when something started.
    mutating func startReady() -> Bool {
        var started = false
        for q in queues.indices {
            while let a = queues[q].head, running[queues[q].slot] == nil, ready(a) {
                if a.kind == .swapIn && !swapInAllowed(a) { break }
                let d = duration(a)
                queues[q].next += 1
                started = true
                setMemory(a.stage, bytes(a).alloc)
                if case .compute = queues[q].resource, a.kind == .forward || a.kind == .backward || a.kind == .recompute {
                    account(a)
                }
                if d > 0 {
                    events.append(.init(action: a, resource: queues[q].resource, start: now, end: now + d))
                    running[queues[q].slot] = (a, now + d)
                } else {
                    finish(a, slot: nil)
                }
            }
        }
        return started
    }

    /// Splits the compute idle gap before `a` into bubble and swap stall, by what `a` waited on last.
    mutating func account(_ a: ScheduleAction) {
        let i = a.stage
        let gap = now - lastComputeEnd[i]
        if gap > 0 {
            let last = dependencies(a).max { (finished[$0] ?? 0) < (finished[$1] ?? 0) }
            if last?.kind == .swapIn { stall[i] += gap } else { bubble[i] += gap }
        }
        let d = duration(a)
        busy[i] += d
        lastComputeEnd[i] = now + d
    }

    mutating func run() throws {
        while true {
            while startReady() {}
            var next = Double.infinity
            for r in running { if let r { next = min(next, r.end) } }
            if next == .infinity { break }
            now = next
            for slot in running.indices {
                if let r = running[slot], r.end == next { finish(r.action, slot: slot) }
            }
        }
        if let q = queues.firstIndex(where: { $0.head != nil }), let a = queues[q].head,
           let k = schedule.stages[a.stage].firstIndex(of: a) {
            // The validator's deadlock check makes this unreachable for valid schedules.
            throw VPipeError.invalidField(
                field: "schedule[\(a.stage)][\(k)]",
                message: "stage \(a.stage), micro-batch \(a.microBatch), \(a): the simulation stopped with this action unable to start "
                    + "(its dependencies never finish)\n" + schedule.listing(marking: (a.stage, k)))
        }
    }

    func report() -> SimulationReport {
        let total = events.map(\.end).max() ?? 0
        var stages: [SimulationReport.StageReport] = []
        for i in costs.indices {
            let idle = max(0, total - busy[i])
            let tail = max(0, total - lastComputeEnd[i])
            let fraction = { (x: Double) in total > 0 ? x / total : 0 }
            stages.append(.init(
                busySeconds: busy[i], idleSeconds: idle, bubbleSeconds: bubble[i] + tail, swapStallSeconds: stall[i],
                busyFraction: fraction(busy[i]), idleFraction: fraction(idle), bubbleFraction: fraction(bubble[i] + tail),
                peakMemoryBytes: peak[i], staticBytes: costs[i].staticBytes, memoryBytes: costs[i].capacity,
                memory: series[i]))
        }
        return SimulationReport(schedule: schedule, iterationSeconds: total, costModelIterationSeconds: 0,
                                stages: stages, events: events)
    }
}
