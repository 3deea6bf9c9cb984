import Testing
import VPipeRuntime

/// Online re-planning across processes ships each rank's window as bytes and merges them on
/// rank 0 (`ReplanningAcrossProcesses`). A window that does not survive the trip unchanged
/// makes rank 0 plan on numbers nobody measured: until this test, the layer-time list
/// carried its layer count instead of its value count, so the merge paired forward times of
/// different layers, lost every stage speed, and an 8x slower device went unseen.
struct ReplanningWindowWireTests {
    func window(forward: [Double], backward: [Double], speeds: [Double], iterations: [Double]) -> ReplanningWindow {
        var w = ReplanningWindow()
        w.restore(forward: forward, backward: backward, iterations: iterations.count, iterationSeconds: iterations,
                  stageSpeed: speeds, calibrationBaseline: 1e-3)
        return w
    }

    @Test func aWindowSurvivesItsBytes() throws {
        let w = window(forward: [1, 2, 3, 0, 0, 0], backward: [4, 5, 6, 0, 0, 0], speeds: [0.5, 1], iterations: [0.1, 0.2, 0.3])
        let back = try ReplanningWindow(encoded: w.encoded()).checkpoint
        #expect(back.forward == [1, 2, 3, 0, 0, 0], "forward sums: expected [1, 2, 3, 0, 0, 0], got \(back.forward)")
        #expect(back.backward == [4, 5, 6, 0, 0, 0], "backward sums: expected [4, 5, 6, 0, 0, 0], got \(back.backward)")
        #expect(back.stageSpeed == [0.5, 1], "stage speeds: expected [0.5, 1], got \(back.stageSpeed)")
        #expect(back.iterationSeconds == [0.1, 0.2, 0.3] && back.iterations == 3,
                "iterations: expected 3 of [0.1, 0.2, 0.3], got \(back.iterations) of \(back.iterationSeconds)")
    }

    @Test func rankZeroSeesEveryRanksLayersAndTheSlowestSpeedOfEachStage() throws {
        // Rank 0 ran layers 0-2 on stage 0 at full speed; rank 1 ran layers 3-5 on stage 1,
        // which slowed down 8x (rank 1 knows nothing of stage 0, rank 0 nothing of stage 1).
        let rank0 = window(forward: [1, 2, 3, 0, 0, 0], backward: [2, 4, 6, 0, 0, 0], speeds: [1, 1], iterations: [0.5, 0.5, 0.5])
        let rank1 = window(forward: [0, 0, 0, 4, 5, 6], backward: [0, 0, 0, 8, 10, 12], speeds: [1, 0.125], iterations: [0.5, 0.5, 0.5])
        let merged = ReplanningWindow(merging: try [rank0, rank1].map { try ReplanningWindow(encoded: $0.encoded()) }).checkpoint
        #expect(merged.forward == [1, 2, 3, 4, 5, 6], "merged forward sums: got \(merged.forward)")
        #expect(merged.backward == [2, 4, 6, 8, 10, 12], "merged backward sums: got \(merged.backward)")
        #expect(merged.stageSpeed == [1, 0.125], "merged stage speeds: expected [1, 0.125], got \(merged.stageSpeed)")
        #expect(merged.iterations == 3, "merged iterations: expected 3, got \(merged.iterations)")
    }

    @Test func malformedBytesAreRefusedNotTrusted() {
        // A list longer than the bytes that follow.
        let lying = [Double(1000), 1, 2].flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian, Array.init) }
        #expect(throws: (any Error).self) { try ReplanningWindow(encoded: lying) }
        // An odd number of layer-time values cannot be forward and backward sums.
        let odd = [Double(3), 1, 2, 3, 0, 0].flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian, Array.init) }
        #expect(throws: (any Error).self) { try ReplanningWindow(encoded: odd) }
    }
}
