import Testing
import VPipeCore
import VPipeRuntime

/// Schedules as data: a session runs the schedule IR text a host wrote (parsed and
/// validated), not only the one its generator would make; bad text is refused at open
/// naming the line, stage or action.
@Suite struct HostScheduleTests {
    typealias S = SessionTests

    /// 2 stages, m = 3, all KEEP: stage 0 forwards every micro-batch before its first
    /// backward (GPipe's order on stage 0, 1F1B's on stage 1). The generated 1F1B runs
    /// B0 before F2 on stage 0. Backwards stay in micro-batch order, so the losses equal
    /// the generated schedule's bit for bit.
    static let handWritten = """
        # 1F1B p=2 m=3
        0: 0F0 0SEND_F0 0F1 0SEND_F1 0F2 0SEND_F2 0RECV_B0 0B0 0RECV_B1 0B1 0RECV_B2 0B2
        1: 1RECV_F0 1F0 1B0 1SEND_B0 1RECV_F1 1F1 1B1 1SEND_B1 1RECV_F2 1F2 1B2 1SEND_B2
        """

    static func session(scheduleText: String?, plan: Bool = true) throws -> TrainingSession {
        var options = TrainingOptions(schedule: .oneFOneB, microBatches: 3, seed: 5, optimizer: .sgd(learningRate: 0.1, momentum: 0.9))
        options.scheduleText = scheduleText
        let layout = PlanLayout(stageStarts: [0, 3], layerCount: 6, policies: Array(repeating: .keep, count: 6))
        return try TrainingSession(SessionConfig(model: S.mlp(), cluster: S.cluster(2), plan: plan ? layout : nil, training: options))
    }

    static func train(_ s: TrainingSession, steps: Int = 4) throws -> [Float] {
        let (x, y) = S.batch(rows: 12, features: 8, classes: 4, tokens: false, seed: 3)
        return try (0..<steps).map { _ in
            try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try s.step(inputs: xs, targets: ys) } }
        }
    }

    @Test func runsAHandWrittenSchedule() throws {
        let hand = try Self.session(scheduleText: Self.handWritten)
        let handLosses = try Self.train(hand)
        let computed = hand.lastExecutedActions[0].filter { $0.kind == .forward || $0.kind == .backward }.map(\.description)
        #expect(computed == ["0F0", "0F1", "0F2", "0B0", "0B1", "0B2"], "expected stage 0 to run the hand-written order, it ran \(computed)")
        let generated = try Self.session(scheduleText: nil)
        let generatedLosses = try Self.train(generated)
        let generatedOrder = generated.lastExecutedActions[0].filter { $0.kind == .forward || $0.kind == .backward }.map(\.description)
        #expect(generatedOrder != computed, "the generated 1F1B should differ from the hand-written order, both ran \(generatedOrder)")
        #expect(handLosses == generatedLosses, "expected the same losses as the generated schedule, got \(handLosses) vs \(generatedLosses)")
        hand.close()
        generated.close()
    }

    @Test(arguments: [
        // (text, what the error must name)
        ("# 1F1B p=2 m=3\n0: 0F0 0SEND_F0 0F1 0SEND_F1 0F2 0SEND_F2 0RECV_B0 0B0 0RECV_B1 0B1 0RECV_B2 0B2\n1: 1RECV_F0 1F0 1B0 1SEND_B0 1RECV_F1 1F1 1B1 1SEND_B1 1RECV_F2 1F2 1SEND_B2",
         "stage 1, micro-batch 2"),
        ("# 1F1B p=2 m=3\n0: 0F0 0SEND_F0 0F1 0SEND_F1 0F2 0SEND_F2 0RECV_B0 0B0 0RECV_B1 0B1 0RECV_B2 0B2\n1: 1RECV_F0 1F0 1B0 1SEND_B0 1RECV_F1 1F1 1B1 1SEND_B1 1RECV_F2 1F2 1B2 1FLY2",
         "line 3"),
        ("# 1F1B p=2 m=3\n0: 0F0 0SEND_F0 0F1 0SEND_F1 0F2 0SEND_F2 0RECV_B0 0B0 0RECV_B1 0B1 0RECV_B2 0B2 0B2\n1: 1RECV_F0 1F0 1B0 1SEND_B0 1RECV_F1 1F1 1B1 1SEND_B1 1RECV_F2 1F2 1B2 1SEND_B2",
         "schedule[0][12]"),
        ("# GPIPE p=2 m=3\n0: 0F0\n1: 1F0", "training.schedule is 1F1B"),
        ("# 1F1B p=1 m=3\n0: 0F0 0B0 0F1 0B1 0F2 0B2", "1 stage lines for a placement of 2 stages"),
    ])
    func badTextIsRefusedNamingWhatIsWrong(text: String, names: String) {
        do {
            _ = try Self.session(scheduleText: text)
            Issue.record("expected the schedule text to be refused (naming \(names))")
        } catch {
            let message = "\(error)"
            #expect(message.contains("training.schedule_text") && message.contains(names),
                    "expected an error naming training.schedule_text and \(names), got: \(message)")
        }
    }

    @Test func aScheduleTextNeedsAPlan() {
        #expect(throws: VPipeError.self) { _ = try Self.session(scheduleText: Self.handWritten, plan: false) }
    }
}
