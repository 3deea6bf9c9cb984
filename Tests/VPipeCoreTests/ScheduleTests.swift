import Foundation
import Testing
import VPipeCore

/// The schedule IR: generators against golden files, the string form, and the validator's
/// verdicts on broken schedules.
@Suite struct ScheduleTests {
    static let kinds: [(Schedule, String)] = [(.gpipe, "gpipe"), (.oneFOneB, "1f1b"), (.pipedreamAsync, "pipedream-async")]

    static func keep(_ p: Int) -> [[MemoryPolicy]] { Array(repeating: [.keep], count: p) }

    /// Tests/VPipeCoreTests/Golden/<name>.txt; with VPIPE_UPDATE_GOLDEN=1 in the environment
    /// the file is rewritten from `actual` (then review the diff before committing).
    static func golden(_ name: String, _ actual: String) throws -> String {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Golden").appendingPathComponent("\(name).txt")
        if ProcessInfo.processInfo.environment["VPIPE_UPDATE_GOLDEN"] == "1" {
            try actual.write(to: url, atomically: true, encoding: .utf8)
        }
        return try String(contentsOf: url, encoding: .utf8)
    }

    @Test(arguments: [(2, 3), (3, 4)])
    func generatorsMatchGoldenFiles(p: Int, m: Int) throws {
        for (kind, name) in Self.kinds {
            let schedule = try ScheduleGenerator.generate(kind, microBatches: m, stagePolicies: Self.keep(p))
            try ScheduleValidator.validate(schedule, stagePolicies: Self.keep(p))
            let expected = try Self.golden("\(name)-p\(p)-m\(m)", schedule.description)
            #expect(schedule.description == expected, "\(name) p=\(p) m=\(m): expected\n\(expected)\ngot\n\(schedule.description)")
            #expect(try PipelineSchedule(parsing: expected) == schedule)
        }
    }

    /// Swap and recompute actions appear where the policies need them (stage 0 swaps, stage 1
    /// recomputes).
    @Test func policiesAddSwapAndRecomputeActions() throws {
        let policies: [[MemoryPolicy]] = [[.keep, .swap], [.recompute, .keep]]
        let schedule = try ScheduleGenerator.generate(.oneFOneB, microBatches: 3, stagePolicies: policies)
        try ScheduleValidator.validate(schedule, stagePolicies: policies)
        let expected = try Self.golden("1f1b-p2-m3-swap-recompute", schedule.description)
        #expect(schedule.description == expected)
        #expect(schedule.line(0).hasPrefix("0F0 0SEND_F0 0SO0 0F1 0SEND_F1 0SO1 0RECV_B0 0SI0 0B0"))
        #expect(schedule.line(1).hasPrefix("1RECV_F0 1F0 1R0 1B0 1SEND_B0"))
    }

    @Test func stringFormRoundTrips() throws {
        for kind in ScheduleAction.Kind.allCases {
            let a = ScheduleAction(stage: 12, kind: kind, microBatch: 345)
            #expect(ScheduleAction(a.description) == a, "\(a)")
        }
        #expect(ScheduleAction("2F0") == ScheduleAction(stage: 2, kind: .forward, microBatch: 0))
        #expect(ScheduleAction("1SEND_B3") == ScheduleAction(stage: 1, kind: .sendGradient, microBatch: 3))
        for bad in ["", "F0", "2F", "2X0", "2f0", "-1F0", "2F0x", "99999999999999999999F0", "2SEND0"] {
            #expect(ScheduleAction(bad) == nil, "`\(bad)` must not parse")
        }
        for (kind, _) in Self.kinds {
            let s = try ScheduleGenerator.generate(kind, microBatches: 5, stagePolicies: [[.swap], [.recompute, .swap], [.keep]])
            #expect(try PipelineSchedule(parsing: s.description) == s)
        }
        #expect(throws: VPipeError.self) { try PipelineSchedule(parsing: "# 1F1B p=1 m=1\n0: 0F0 0Q0\n") }
    }

    /// The error's message names the stage, micro-batch and action, and lists the whole
    /// schedule with `<-- here` on the failing action.
    func rejection(_ schedule: PipelineSchedule) -> (field: String, message: String)? {
        do {
            try ScheduleValidator.validate(schedule, stagePolicies: Self.keep(schedule.stageCount))
            return nil
        } catch let VPipeError.invalidField(field, message) {
            return (field, message)
        } catch { return nil }
    }

    func base() throws -> PipelineSchedule {
        try ScheduleGenerator.generate(.oneFOneB, microBatches: 3, stagePolicies: Self.keep(2))
    }

    @Test func rejectsAMissingBackward() throws {
        var s = try base()
        s.stages[1].removeAll { $0.description == "1B1" || $0.description == "1SEND_B1" }
        let r = try #require(rejection(s))
        #expect(r.message.contains("stage 1, micro-batch 1: the backward (1B1) is missing"), "\(r.message)")
        #expect(r.message.contains("1F1 <-- here"), "\(r.message)")
        #expect(r.field == "schedule[1][\(s.stages[1].firstIndex { $0.description == "1F1" } ?? -1)]")
    }

    @Test func rejectsBackwardBeforeForward() throws {
        var s = try base()
        // Stage 1 (the last) runs 1RECV_F0 1F0 1B0 ...: swap the forward and the backward.
        s.stages[1].swapAt(1, 2)
        let r = try #require(rejection(s))
        #expect(r.field == "schedule[1][1]")
        #expect(r.message.contains("stage 1, micro-batch 0, 1B0: backward before the forward (1F0)"), "\(r.message)")
        #expect(r.message.contains("1B0 <-- here"))
        // The whole schedule is listed, both stages.
        #expect(r.message.contains("stage 0") && r.message.contains("0RECV_B2"))
    }

    @Test func rejectsADeadlockingOrder() throws {
        var s = try base()
        // Stage 0 waits for micro-batch 0's gradient before sending its activation.
        let recv = try #require(s.stages[0].firstIndex { $0.description == "0RECV_B0" })
        let a = s.stages[0].remove(at: recv)
        s.stages[0].insert(a, at: 0)
        let r = try #require(rejection(s))
        #expect(r.message.contains("deadlock: stage 0 waits at 0RECV_B0 (micro-batch 0) for 1SEND_B0"), "\(r.message)")
        #expect(r.message.contains("stage 1 waits at 1RECV_F0 (micro-batch 0) for 0SEND_F0"))
        #expect(r.message.contains("0RECV_B0 <-- here"))
        print(r.message)
    }

    @Test func rejectsDuplicatesStrangersAndMissingPolicyActions() throws {
        var s = try base()
        s.stages[1].append(ScheduleAction(stage: 1, kind: .forward, microBatch: 0))
        #expect(rejection(s)?.message.contains("the forward of micro-batch 0 already appears at step 1") == true)
        s = try base()
        s.stages[0][0].microBatch = 7
        #expect(rejection(s)?.message.contains("micro-batch 7 is outside 0..2") == true)
        s = try base()
        s.stages[0].insert(ScheduleAction(stage: 0, kind: .recvActivation, microBatch: 0), at: 0)
        #expect(rejection(s)?.message.contains("stage 0 has no previous stage to receive from") == true)
        // A stage with SWAP layers must swap every micro-batch out and in.
        do {
            try ScheduleValidator.validate(try base(), stagePolicies: [[.swap], [.keep]])
            Issue.record("expected a missing swap-out")
        } catch let VPipeError.invalidField(_, message) {
            #expect(message.contains("stage 0, micro-batch 0: the swap-out (0SO0) is missing"), "\(message)")
        }
    }
}
