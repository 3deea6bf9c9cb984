import VPipeCore

/// Keeps online re-planning from undoing its own migrations on noise. A cheap layer (a ReLU
/// between two linears) costs about the same on either side of a cut, so window-to-window
/// noise can make each of two plans look a few percent better in turn and the layer would
/// travel back and forth at every window. The decision already compares both plans under
/// the same window's numbers; on top of that, a layer that moved within the last
/// `holdWindows` windows goes back to the stage it left only if the gain is at least
/// `moveBackFactor` times the threshold.
///
/// Every process of a distributed session keeps its own copy, updated from the decisions
/// that rank 0 broadcasts, so all copies agree.
public struct MigrationHysteresis: Sendable, Equatable {
    public static let holdWindows = 3
    public static let moveBackFactor = 4.0

    /// Re-planning windows seen so far.
    public private(set) var windows = 0
    /// Per moved layer: the stage it left and the window of the move.
    private var lastMove: [Int: Move] = [:]
    private struct Move: Sendable, Equatable { var stage: Int, window: Int }

    public init() {}

    /// One layer's last move, as a checkpoint keeps it: the stage it left, the window of the move.
    public struct SavedMove: Sendable, Equatable {
        public var layer: Int, fromStage: Int, window: Int
        public init(layer: Int, fromStage: Int, window: Int) {
            self.layer = layer
            self.fromStage = fromStage
            self.window = window
        }
    }

    /// The state a checkpoint keeps (so that a resumed run holds the moves the uninterrupted
    /// one would): the windows seen and every layer's last move, by layer.
    public var saved: (windows: Int, moves: [SavedMove]) {
        (windows, lastMove.keys.sorted().map { SavedMove(layer: $0, fromStage: lastMove[$0]!.stage, window: lastMove[$0]!.window) })
    }

    /// The hysteresis a checkpoint saved (`saved`).
    public init(windows: Int, moves: [SavedMove]) {
        self.windows = windows
        for m in moves { lastMove[m.layer] = Move(stage: m.fromStage, window: m.window) }
    }

    /// The layers `fresh` would put back on the stage they left within the hold.
    public func layersMovedBack(from running: PlanLayout, to fresh: PlanLayout) -> [Int] {
        Self.moves(from: running, to: fresh).filter { layer, _, to in
            guard let last = lastMove[layer] else { return false }
            return last.stage == to && windows - last.window < Self.holdWindows
        }.map(\.layer)
    }

    /// The gain (fraction of the running plan's iteration time) `fresh` must beat.
    public func requiredGain(threshold: Double, from running: PlanLayout, to fresh: PlanLayout) -> Double {
        layersMovedBack(from: running, to: fresh).isEmpty ? threshold : threshold * Self.moveBackFactor
    }

    /// The end of a re-planning window, with the layout it migrates to (nil: it stays).
    public mutating func record(running: PlanLayout, migratingTo layout: PlanLayout?) {
        windows += 1
        guard let layout else { return }
        for move in Self.moves(from: running, to: layout) { lastMove[move.layer] = Move(stage: move.from, window: windows) }
    }

    /// Every layer whose stage differs between the two layouts.
    public static func moves(from a: PlanLayout, to b: PlanLayout) -> [(layer: Int, from: Int, to: Int)] {
        let before = stageOfLayer(a), after = stageOfLayer(b)
        return zip(before.indices, zip(before, after)).compactMap { l, s in s.0 == s.1 ? nil : (l, s.0, s.1) }
    }

    private static func stageOfLayer(_ layout: PlanLayout) -> [Int] {
        layout.ranges.enumerated().flatMap { stage, range in Array(repeating: stage, count: range.count) }
    }
}
