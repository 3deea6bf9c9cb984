/// The generators: one per schedule family, each producing the per-stage action lists of one
/// iteration. They take the per-layer policies of each stage so that the lists carry the
/// swap and recompute actions the plan needs, placed where the runtime must issue them:
///
/// - forward of micro-batch j on stage i: `iRECV_Fj` (i > 0), `iFj`, `iSEND_Fj` (i < p−1),
///   then `iSOj` when the stage has SWAP layers (the stash leaves as soon as it exists);
/// - backward: `iRECV_Bj` (i < p−1), `iSIj` (SWAP), `iRj` (RECOMPUTE), `iBj`,
///   `iSEND_Bj` (i > 0). The copy engine runs its own actions in list order, so `SI` is
///   prefetched as early as the copy engine and memory allow, not when compute reaches it.
///
/// Orders of compute actions, p = 3, m = 4 (F = forward, B = backward of micro-batch n):
///
///     GPIPE                             1F1B and PIPEDREAM_ASYNC
///     s0: F0 F1 F2 F3 B0 B1 B2 B3       s0: F0 F1 F2 B0 F3 B1 B2 B3
///     s1: F0 F1 F2 F3 B0 B1 B2 B3       s1: F0 F1 B0 F2 B1 F3 B2 B3
///     s2: F0 F1 F2 F3 B0 B1 B2 B3       s2: F0 B0 F1 B1 F2 B2 F3 B3
///
/// 1F1B: stage i runs w = min(p−1−i, m) warm-up forwards, then alternates one forward and
/// one backward, then drains the last w backwards; so it holds at most min(m, p−i) stashes,
/// the n_i of the cost model. PIPEDREAM_ASYNC has the same per-iteration order: weight
/// stashing changes which weight version a backward uses, not when it runs, and without a
/// flush the next iteration's warm-up overlaps this one's drain (one iteration = m
/// micro-batches; the simulator plays one window with fill and drain, like T_iter).
public enum ScheduleGenerator {
    /// The lists for `kind` with `microBatches` micro-batches; stage i owns layers with
    /// `stagePolicies[i]` (one policy per layer). Throws `invalidField` on no stages, a stage
    /// without layers, or m < 1.
    public static func generate(_ kind: Schedule, microBatches m: Int, stagePolicies: [[MemoryPolicy]]) throws
        -> PipelineSchedule
    {
        let p = stagePolicies.count
        if p == 0 { throw VPipeError.invalidField(field: "plan.stages", message: "a schedule needs at least one stage") }
        try Validation.validate(microBatches: m, field: "plan.micro_batches")
        for (i, policies) in stagePolicies.enumerated() where policies.isEmpty {
            throw VPipeError.invalidField(field: "plan.stages[\(i)].policy", message: "stage \(i) has no layers")
        }
        var stages: [[ScheduleAction]] = []
        for (i, policies) in stagePolicies.enumerated() {
            let emit = Emitter(stage: i, stages: p, swaps: policies.contains(.swap), recomputes: policies.contains(.recompute))
            var list: [ScheduleAction] = []
            for step in order(kind, stage: i, stages: p, microBatches: m) {
                switch step {
                case let .forward(j): list += emit.forward(j)
                case let .backward(j): list += emit.backward(j)
                }
            }
            stages.append(list)
        }
        return PipelineSchedule(kind: kind, microBatches: m, stages: stages)
    }

    /// The schedule for an evaluated plan: its family, its m, its stages' policies.
    public static func generate(for plan: Plan) throws -> PipelineSchedule {
        try generate(plan.schedule, microBatches: plan.microBatches, stagePolicies: plan.stages.map(\.policies))
    }

    enum Step: Equatable {
        case forward(Int)
        case backward(Int)
    }

    /// The compute order of stage `i`: which micro-batch's forward or backward comes next.
    static func order(_ kind: Schedule, stage i: Int, stages p: Int, microBatches m: Int) -> [Step] {
        switch kind {
        case .gpipe:
            return (0..<m).map(Step.forward) + (0..<m).map(Step.backward)
        case .oneFOneB, .pipedreamAsync:
            let warmUp = min(p - 1 - i, m)
            var steps = (0..<warmUp).map(Step.forward)
            for k in 0..<(m - warmUp) {
                steps.append(.forward(warmUp + k))
                steps.append(.backward(k))
            }
            steps += ((m - warmUp)..<m).map(Step.backward)
            return steps
        }
    }

    /// The actions around one forward or backward of one stage.
    struct Emitter {
        let stage: Int, stages: Int, swaps: Bool, recomputes: Bool

        func action(_ kind: ScheduleAction.Kind, _ j: Int) -> ScheduleAction {
            ScheduleAction(stage: stage, kind: kind, microBatch: j)
        }

        func forward(_ j: Int) -> [ScheduleAction] {
            var out: [ScheduleAction] = []
            if stage > 0 { out.append(action(.recvActivation, j)) }
            out.append(action(.forward, j))
            if stage < stages - 1 { out.append(action(.sendActivation, j)) }
            if swaps { out.append(action(.swapOut, j)) }
            return out
        }

        func backward(_ j: Int) -> [ScheduleAction] {
            var out: [ScheduleAction] = []
            if stage < stages - 1 { out.append(action(.recvGradient, j)) }
            if swaps { out.append(action(.swapIn, j)) }
            if recomputes { out.append(action(.recompute, j)) }
            out.append(action(.backward, j))
            if stage > 0 { out.append(action(.sendGradient, j)) }
            return out
        }
    }
}
