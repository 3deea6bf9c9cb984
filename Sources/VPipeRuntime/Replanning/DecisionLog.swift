/// One re-planning decision or host-requested migration, as it happened.
public struct MigrationDecision: Sendable {
    /// "online" (re-planning) or "host" (vp_session_apply_plan).
    public var source: String
    /// The iteration after which it was decided.
    public var iteration: Int
    /// Cost model v1 on the fresh profiles: the running plan and the new one.
    public var oldPredictedSeconds: Double
    public var newPredictedSeconds: Double
    public var applied: Bool
    public var layersMoved: [Int] = []
    public var bytesMoved: Int = 0
    public var stallSeconds: Double = 0
    /// Mean measured iteration time over the window before, and over the window after.
    public var iterationSecondsBefore: Double
    public var iterationSecondsAfter: Double = 0
    public var note: String
    /// Online decisions: how long the re-plan took (the planner's wall time; the stall it
    /// adds between two iterations). 0 for host decisions and on ranks that did not plan.
    public var planningSeconds: Double = 0
}

/// The session's decisions, oldest first, bounded: a host calling apply_plan in a loop
/// must not grow them without bound, so past `2 × kept` entries the oldest are dropped down
/// to `kept`.
///
/// A decision is named by its ticket, not by its position: a step that took a pending
/// decision records the outcome through the ticket while another thread may append and
/// trim (a position would go stale and point at another decision or past the end). A
/// ticket whose decision was trimmed away updates nothing.
struct DecisionLog {
    static let kept = 500
    private(set) var entries: [MigrationDecision] = []
    /// Decisions dropped from the front so far: entries[k] has ticket `dropped + k`.
    private var dropped = 0

    /// Appends `decision`; returns its ticket.
    mutating func append(_ decision: MigrationDecision) -> Int {
        entries.append(decision)
        let ticket = dropped + entries.count - 1
        if entries.count > 2 * Self.kept {
            let drop = entries.count - Self.kept
            entries.removeFirst(drop)
            dropped += drop
        }
        return ticket
    }

    /// Changes the decision `ticket` names, if it is still kept.
    mutating func update(_ ticket: Int, _ change: (inout MigrationDecision) -> Void) {
        let k = ticket - dropped
        guard k >= 0 && k < entries.count else { return }
        change(&entries[k])
    }

    /// The last applied decision whose "after" window is not measured yet gets `seconds`.
    mutating func recordAfterWindow(_ seconds: Double) {
        if let k = entries.lastIndex(where: { $0.applied && $0.iterationSecondsAfter == 0 }) { entries[k].iterationSecondsAfter = seconds }
    }
}
