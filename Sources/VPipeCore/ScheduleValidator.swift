/// Checks that a schedule can be run, before the simulator or the runtime tries to:
///
/// 1. every action sits in its own stage's list, on a micro-batch 0 ..< m, and only talks to
///    neighbours that exist (no `RECV_F` on stage 0, no `SEND_F` on the last stage);
/// 2. every micro-batch is forwarded and backwarded exactly once per stage, with the actions
///    around them present once each (receives, sends, and, when the stage's policies need
///    them, swap-out, swap-in and recompute);
/// 3. on each stage the order respects the data: receive before forward, forward before
///    send, swap-out, recompute and backward; swap-out before swap-in before backward;
///    gradient receive and recompute before backward; backward before gradient send;
/// 4. the cross-stage dependencies can be met: the stages are played as programs where a
///    send never blocks and a receive waits for its send; if every stage is stuck at a
///    receive whose send never comes, the schedule deadlocks.
///
/// A failure throws `VPipeError.invalidField` whose field is `schedule[stage][index]`
/// and whose message names the stage, micro-batch and action, followed by the whole
/// schedule with `<-- here` at the failing action.
public enum ScheduleValidator {
    public static func validate(_ schedule: PipelineSchedule, stagePolicies: [[MemoryPolicy]]? = nil) throws {
        let p = schedule.stageCount
        if p == 0 { throw VPipeError.invalidField(field: "schedule", message: "the schedule has no stages") }
        if let stagePolicies, stagePolicies.count != p {
            throw VPipeError.invalidField(
                field: "schedule", message: "\(p) stage lists for a plan of \(stagePolicies.count) stages")
        }
        for i in 0..<p {
            try checkStage(schedule, i, policies: stagePolicies?[i])
        }
        try checkDeadlock(schedule)
    }

    static func failure(_ schedule: PipelineSchedule, _ stage: Int, _ index: Int, _ message: String) -> VPipeError {
        .invalidField(field: "schedule[\(stage)][\(index)]", message: message + "\n" + schedule.listing(marking: (stage, index)))
    }

    /// Checks 1–3 for stage `i`.
    static func checkStage(_ schedule: PipelineSchedule, _ i: Int, policies: [MemoryPolicy]?) throws {
        let p = schedule.stageCount, m = schedule.microBatches
        let list = schedule.stages[i]
        var seen: [ScheduleAction.Kind: [Int: Int]] = [:]  // kind -> micro-batch -> index
        func has(_ kind: ScheduleAction.Kind, _ j: Int) -> Bool { seen[kind]?[j] != nil }

        for (k, a) in list.enumerated() {
            func fail(_ text: String) -> VPipeError {
                failure(schedule, i, k, "stage \(i), micro-batch \(a.microBatch), \(a): " + text)
            }
            if a.stage != i { throw fail("the action names stage \(a.stage) but is in stage \(i)'s list") }
            if a.microBatch < 0 || a.microBatch >= m {
                throw fail("micro-batch \(a.microBatch) is outside 0..\(m - 1)")
            }
            if i == 0 && (a.kind == .recvActivation || a.kind == .sendGradient) {
                throw fail("stage 0 has no previous stage to \(a.kind == .recvActivation ? "receive from" : "send to")")
            }
            if i == p - 1 && (a.kind == .sendActivation || a.kind == .recvGradient) {
                throw fail("the last stage has no next stage to \(a.kind == .sendActivation ? "send to" : "receive from")")
            }
            if let first = seen[a.kind]?[a.microBatch] {
                throw fail("the \(a.kind.phrase) of micro-batch \(a.microBatch) already appears at step \(first)")
            }
            let j = a.microBatch
            switch a.kind {
            case .forward:
                if i > 0 && !has(.recvActivation, j) { throw fail("forward before receiving its activation (\(i)RECV_F\(j))") }
            case .sendActivation, .swapOut, .recompute:
                if !has(.forward, j) { throw fail("\(a.kind.phrase) before the forward (\(i)F\(j))") }
            case .swapIn:
                if !has(.swapOut, j) { throw fail("swap-in before the swap-out (\(i)SO\(j))") }
            case .backward:
                if !has(.forward, j) { throw fail("backward before the forward (\(i)F\(j))") }
                if i < p - 1 && !has(.recvGradient, j) { throw fail("backward before receiving its gradient (\(i)RECV_B\(j))") }
                if has(.swapOut, j) && !has(.swapIn, j) { throw fail("backward before the swap-in (\(i)SI\(j)) of its stash") }
                if policies?.contains(.recompute) == true && !has(.recompute, j) {
                    throw fail("backward before the recompute (\(i)R\(j)) its RECOMPUTE layers need")
                }
            case .sendGradient:
                if !has(.backward, j) { throw fail("gradient send before the backward (\(i)B\(j))") }
            case .recvActivation, .recvGradient:
                break
            }
            seen[a.kind, default: [:]][j] = k
        }

        // Completeness: what each micro-batch needs on this stage.
        var required: [ScheduleAction.Kind] = [.forward, .backward]
        if i > 0 { required += [.recvActivation, .sendGradient] }
        if i < p - 1 { required += [.sendActivation, .recvGradient] }
        if policies?.contains(.swap) == true { required += [.swapOut, .swapIn] }
        if policies?.contains(.recompute) == true { required.append(.recompute) }
        for j in 0..<m {
            for kind in required where !has(kind, j) {
                // Mark the forward (what is left dangling), or the list's end when even that is missing.
                let at = seen[.forward]?[j] ?? list.count
                let missing = ScheduleAction(stage: i, kind: kind, microBatch: j)
                throw failure(schedule, i, at, "stage \(i), micro-batch \(j): the \(kind.phrase) (\(missing)) is missing")
            }
        }
        if let policies {
            for (kind, policy) in [(ScheduleAction.Kind.swapOut, MemoryPolicy.swap), (.swapIn, .swap), (.recompute, .recompute)]
            where !policies.contains(policy) {
                if let (j, k) = seen[kind]?.min(by: { $0.value < $1.value }) {
                    throw failure(schedule, i, k,
                                  "stage \(i), micro-batch \(j), \(list[k]): the stage has no \(policy == .swap ? "SWAP" : "RECOMPUTE") layer")
                }
            }
        }
    }

    /// Check 4: plays the stages as programs (sends buffered, receives blocking).
    static func checkDeadlock(_ schedule: PipelineSchedule) throws {
        let p = schedule.stageCount
        var next = [Int](repeating: 0, count: p)
        var sent = Set<ScheduleAction>()  // sends executed so far
        var progress = true
        while progress {
            progress = false
            for i in 0..<p {
                while next[i] < schedule.stages[i].count {
                    let a = schedule.stages[i][next[i]]
                    if let send = matchingSend(a), !sent.contains(send) { break }
                    if a.kind == .sendActivation || a.kind == .sendGradient { sent.insert(a) }
                    next[i] += 1
                    progress = true
                }
            }
        }
        let stuck = (0..<p).filter { next[$0] < schedule.stages[$0].count }
        guard let first = stuck.first else { return }
        let waits = stuck.map { i -> String in
            let a = schedule.stages[i][next[i]]
            guard let send = matchingSend(a) else { return "stage \(i) is stuck at \(a)" }
            return "stage \(i) waits at \(a) (micro-batch \(a.microBatch)) for \(send), which stage \(send.stage) never reaches"
        }
        throw failure(schedule, first, next[first], "deadlock: " + waits.joined(separator: "; "))
    }

    /// The send a receive waits for (nil for every other action).
    static func matchingSend(_ a: ScheduleAction) -> ScheduleAction? {
        switch a.kind {
        case .recvActivation: return ScheduleAction(stage: a.stage - 1, kind: .sendActivation, microBatch: a.microBatch)
        case .recvGradient: return ScheduleAction(stage: a.stage + 1, kind: .sendGradient, microBatch: a.microBatch)
        default: return nil
        }
    }
}
