/// The schedule IR: what each stage does in one iteration, as data.
///
/// Why data and not code: the generators, the validator, the simulator and the runtime all
/// read the same per-stage action lists, so a schedule that validates is exactly the one
/// that is simulated and executed, and a bug shows up as a wrong list that a person can read
/// (golden files in the tests hold small ones).
///
/// ## String form
///
/// Each action is `<stage><TOKEN><micro-batch>`, the convention of PyTorch's pipelining
/// schedules (`2F0` = stage 2, forward, micro-batch 0):
///
/// | token    | action                                                         | resource               |
/// |----------|----------------------------------------------------------------|------------------------|
/// | `F`      | forward of the stage's layers                                  | compute                |
/// | `B`      | backward of the stage's layers                                 | compute                |
/// | `R`      | recompute: forward of the stage's RECOMPUTE segments again     | compute                |
/// | `SO`     | swap out the stash of the stage's SWAP layers to the host      | copy engine            |
/// | `SI`     | swap that stash back in                                        | copy engine            |
/// | `SEND_F` | send the activation to stage + 1                               | link to stage + 1      |
/// | `RECV_F` | wait for the activation from stage − 1                         | compute (a wait)       |
/// | `SEND_B` | send the gradient to stage − 1                                 | link to stage − 1      |
/// | `RECV_B` | wait for the gradient from stage + 1                           | compute (a wait)       |
///
/// A stage's list is written with single spaces between actions, e.g.
/// `1RECV_F0 1F0 1SO0 1SEND_F0`. Swap and recompute actions cover all of the stage's SWAP
/// (respectively RECOMPUTE) layers for that micro-batch at once: per micro-batch granularity
/// keeps the lists short and matches the runtime's hand-offs (one per micro-batch, not per
/// layer).
public struct ScheduleAction: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable, CaseIterable {
        case forward, backward, recompute, swapOut, swapIn
        case sendActivation, recvActivation, sendGradient, recvGradient

        /// The token of the string form.
        public var token: String {
            switch self {
            case .forward: return "F"
            case .backward: return "B"
            case .recompute: return "R"
            case .swapOut: return "SO"
            case .swapIn: return "SI"
            case .sendActivation: return "SEND_F"
            case .recvActivation: return "RECV_F"
            case .sendGradient: return "SEND_B"
            case .recvGradient: return "RECV_B"
            }
        }

        /// A phrase for messages: "forward", "swap-in", ...
        public var phrase: String {
            switch self {
            case .forward: return "forward"
            case .backward: return "backward"
            case .recompute: return "recompute"
            case .swapOut: return "swap-out"
            case .swapIn: return "swap-in"
            case .sendActivation: return "activation send"
            case .recvActivation: return "activation receive"
            case .sendGradient: return "gradient send"
            case .recvGradient: return "gradient receive"
            }
        }

        init?(token: Substring) {
            guard let kind = Kind.allCases.first(where: { $0.token == token }) else { return nil }
            self = kind
        }
    }

    public var stage: Int
    public var kind: Kind
    public var microBatch: Int

    public init(stage: Int, kind: Kind, microBatch: Int) {
        self.stage = stage
        self.kind = kind
        self.microBatch = microBatch
    }

    /// `2F0`, `1SEND_B3`.
    public var description: String { "\(stage)\(kind.token)\(microBatch)" }

    /// Parses the string form; nil when `text` is not `<digits><TOKEN><digits>` with a known
    /// token (or the numbers do not fit an Int).
    public init?(_ text: Substring) {
        let chars = Array(text.utf8)
        var i = 0
        while i < chars.count, chars[i] >= 48, chars[i] <= 57 { i += 1 }
        var j = chars.count
        while j > i, chars[j - 1] >= 48, chars[j - 1] <= 57 { j -= 1 }
        guard i > 0, j < chars.count, i < j, i <= 9, chars.count - j <= 9,
              let stage = Int(String(decoding: chars[0..<i], as: UTF8.self)),
              let microBatch = Int(String(decoding: chars[j...], as: UTF8.self)),
              let kind = Kind(token: Substring(String(decoding: chars[i..<j], as: UTF8.self)))
        else { return nil }
        self.init(stage: stage, kind: kind, microBatch: microBatch)
    }

    public init?(_ text: String) { self.init(Substring(text)) }
}

/// One iteration of a pipeline schedule: per stage, the actions in the order the stage
/// issues them. Each resource (compute, copy engine, link) runs its own actions in this
/// order; see `Simulator` for how the resources overlap.
public struct PipelineSchedule: Sendable, Equatable, CustomStringConvertible {
    /// The schedule family the lists were generated for (GPIPE, 1F1B, PIPEDREAM_ASYNC).
    public var kind: Schedule
    public var microBatches: Int
    /// stages[i] is stage i's action list.
    public var stages: [[ScheduleAction]]

    public init(kind: Schedule, microBatches: Int, stages: [[ScheduleAction]]) {
        self.kind = kind
        self.microBatches = microBatches
        self.stages = stages
    }

    public var stageCount: Int { stages.count }

    /// One stage's list in string form: `0F0 0SEND_F0 0F1 ...`.
    public func line(_ stage: Int) -> String {
        stages[stage].map(\.description).joined(separator: " ")
    }

    /// Every stage's list in string form, in stage order (the wire's `schedule` field).
    public var lines: [String] { stages.indices.map(line) }

    /// The text form of golden files: a header, then one `stage: actions` line per stage.
    ///
    ///     # 1F1B p=2 m=3
    ///     0: 0F0 0SEND_F0 ...
    ///     1: 1RECV_F0 1F0 ...
    public var description: String {
        var text = "# \(kind.name) p=\(stageCount) m=\(microBatches)\n"
        for i in stages.indices { text += "\(i): \(line(i))\n" }
        return text
    }

    /// Parses `description`'s form back. Throws `invalidField` naming the line and token
    /// that does not parse; the result is not validated (see `ScheduleValidator`).
    public init(parsing text: String) throws {
        var kind: Schedule?
        var m: Int?
        var stages: [[ScheduleAction]] = []
        for (n, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.drop(while: { $0 == " " })
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                for word in line.dropFirst().split(separator: " ") {
                    if let k = Schedule.allCases.first(where: { $0.name == word }) { kind = k }
                    if word.hasPrefix("m="), let v = Int(word.dropFirst(2)) { m = v }
                }
                continue
            }
            guard let colon = line.firstIndex(of: ":"), let index = Int(line[..<colon]), index == stages.count else {
                throw VPipeError.invalidField(
                    field: "schedule line \(n + 1)", message: "expected `\(stages.count): <actions>`, got `\(line)`")
            }
            var actions: [ScheduleAction] = []
            for token in line[line.index(after: colon)...].split(separator: " ") {
                guard let action = ScheduleAction(token) else {
                    throw VPipeError.invalidField(
                        field: "schedule line \(n + 1)",
                        message: "`\(token)` is not an action (expected <stage><F|B|R|SO|SI|SEND_F|RECV_F|SEND_B|RECV_B><micro-batch>)")
                }
                actions.append(action)
            }
            stages.append(actions)
        }
        guard let kind, let m else {
            throw VPipeError.invalidField(field: "schedule header", message: "missing `# <SCHEDULE> p=<stages> m=<micro-batches>`")
        }
        self.init(kind: kind, microBatches: m, stages: stages)
    }

    /// The whole schedule as a table, one column per stage and one row per step, with
    /// `<-- here` after the action at `mark` (stage, index). Errors print this so that the
    /// failing action is seen in its context, as PyTorch's pipelining schedules do.
    public func listing(marking mark: (stage: Int, index: Int)? = nil) -> String {
        let marker = " <-- here"
        var columns: [[String]] = []
        for (i, actions) in stages.enumerated() {
            columns.append(actions.enumerated().map { k, a in
                a.description + (mark.map { $0.stage == i && $0.index == k } == true ? marker : "")
            })
        }
        let rows = columns.map(\.count).max() ?? 0
        let widths = columns.enumerated().map { i, c in max(c.map(\.count).max() ?? 0, "stage \(i)".count) }
        var header = pad("step", 5) + columns.indices.map { pad("stage \($0)", widths[$0] + 2) }.joined()
        while header.hasSuffix(" ") { header.removeLast() }
        var out = header + "\n"
        for r in 0..<rows {
            var line = pad("\(r)", 5)
            for (i, c) in columns.enumerated() { line += pad(r < c.count ? c[r] : "", widths[i] + 2) }
            while line.hasSuffix(" ") { line.removeLast() }
            out += line + "\n"
        }
        if let mark, mark.stage >= 0, mark.stage < stages.count, mark.index >= stages[mark.stage].count {
            out += "(marked: the end of stage \(mark.stage)'s list)\n"
        }
        return out
    }
}
