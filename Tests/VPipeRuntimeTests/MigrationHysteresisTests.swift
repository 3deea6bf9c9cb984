import Testing
import VPipeCore
import VPipeRuntime

/// Online re-planning must not undo its own migrations on noise (the ReLU of the small MPI
/// model travelled back and forth at every window): a layer moved within the last
/// `holdWindows` windows goes back only for `moveBackFactor` times the threshold.
struct MigrationHysteresisTests {
    let keep = [MemoryPolicy](repeating: .keep, count: 6)
    func layout(_ starts: [Int]) -> PlanLayout { PlanLayout(stageStarts: starts, layerCount: 6, policies: keep) }

    @Test func movesAreTheLayersWhoseStageChanges() {
        let moves = MigrationHysteresis.moves(from: layout([0, 3]), to: layout([0, 4]))
        #expect(moves.map(\.layer) == [3] && moves.map(\.from) == [1] && moves.map(\.to) == [0], "got \(moves)")
        #expect(MigrationHysteresis.moves(from: layout([0, 3]), to: layout([0, 3])).isEmpty)
    }

    @Test func aLayerJustMovedGoesBackOnlyForALargeGain() {
        var h = MigrationHysteresis()
        let before = layout([0, 3]), after = layout([0, 4])   // layer 3: stage 1 -> stage 0
        #expect(h.requiredGain(threshold: 0.05, from: before, to: after) == 0.05, "nothing moved yet: the plain threshold")
        h.record(running: before, migratingTo: after)
        for window in 1...MigrationHysteresis.holdWindows {
            #expect(h.layersMovedBack(from: after, to: before) == [3], "window \(window) after the move: layer 3 would go back")
            #expect(h.requiredGain(threshold: 0.05, from: after, to: before) == 0.05 * MigrationHysteresis.moveBackFactor)
            // Moving another layer is not a move back.
            #expect(h.requiredGain(threshold: 0.05, from: after, to: layout([0, 5])) == 0.05, "layer 4 moving is a new move")
            h.record(running: after, migratingTo: nil)
        }
        #expect(h.layersMovedBack(from: after, to: before).isEmpty, "after \(MigrationHysteresis.holdWindows) windows the hold is over")
        #expect(h.requiredGain(threshold: 0.05, from: after, to: before) == 0.05)
    }

    @Test func onlyTheStageALayerLeftCountsAsBack() {
        var h = MigrationHysteresis()
        let three = PlanLayout(stageStarts: [0, 2, 4], layerCount: 6, policies: keep)
        let moved = PlanLayout(stageStarts: [0, 3, 4], layerCount: 6, policies: keep)    // layer 2: stage 1 -> 0
        h.record(running: three, migratingTo: moved)
        #expect(h.layersMovedBack(from: moved, to: three) == [2])
        // Stages {0} {1} {2..5}: layer 2 goes on to stage 2, not back to the stage it left (1).
        let further = PlanLayout(stageStarts: [0, 1, 2], layerCount: 6, policies: keep)
        #expect(!h.layersMovedBack(from: moved, to: further).contains(2), "layer 2 to stage 2 is not the stage it left")
    }
}
