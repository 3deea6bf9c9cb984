import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import VPipeCore
import VPipeRuntime

/// The training runtime end to end: pipelines of 1, 2 and 4 stages, GPipe and 1F1B, any mix
/// of KEEP/SWAP/RECOMPUTE, must train exactly like one stage.
///
/// Tolerance: 0 (bit-identical) within a schedule. Every layer computes each micro-batch
/// with the same kernels on the same rows whatever the placement, gradients accumulate in
/// micro-batch order in both schedules (both generators run backwards in order 0..m-1),
/// the loss is summed in micro-batch order, and the optimizer runs once after the flush;
/// stage boundaries only copy tensors. So nothing reorders a floating-point sum.
@Suite struct SessionTests {
    static let gib = 1 << 30

    /// Linear(8→16) ReLU Linear(16→16) GELU Linear(16→4) loss: 6 layers.
    static func mlp() -> ModelSpec {
        let kinds: [LayerKind] = [.linear(inFeatures: 8, outFeatures: 16), .activation(.relu), .linear(inFeatures: 16, outFeatures: 16),
                                  .activation(.gelu), .linear(inFeatures: 16, outFeatures: 4), .softmaxCrossEntropy]
        return model("mlp", kinds)
    }

    /// Embedding(V 13, C 16, T 4) Block Block LayerNorm Linear(16→13) loss: 6 layers.
    static func gpt() -> ModelSpec {
        let kinds: [LayerKind] = [.embedding(vocabulary: 13, features: 16, sequenceLength: 4),
                                  .transformerBlock(features: 16, heads: 2, sequenceLength: 4, mlpRatio: 2),
                                  .transformerBlock(features: 16, heads: 2, sequenceLength: 4, mlpRatio: 2),
                                  .layerNorm(features: 16), .linear(inFeatures: 16, outFeatures: 13), .softmaxCrossEntropy]
        return model("gpt", kinds)
    }

    static func model(_ name: String, _ kinds: [LayerKind]) -> ModelSpec { ModelSpec(name: name, kinds: kinds) }

    static func cluster(_ p: Int, memory: Int = gib) -> ClusterSpec {
        .uniform(count: p, device: DeviceSpec(name: "cpu", memoryBytes: memory, hostBandwidth: 1e10), link: LinkSpec(bandwidth: 1e10))
    }

    /// Deterministic data: rows × features inputs (or token ids) and one target per row.
    static func batch(rows: Int, features: Int, classes: Int, tokens: Bool, seed: Int) -> ([Float], [Int32]) {
        var state = UInt64(seed + 1) &* 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }
        let inputs: [Float] = (0..<(rows * features)).map { _ in tokens ? Float(next() % 13) : Float(Int(next() % 2000) - 1000) / 1000 }
        let targets: [Int32] = (0..<rows).map { _ in Int32(next() % UInt64(classes)) }
        return (inputs, targets)
    }

    static func train(_ model: ModelSpec, stages p: Int, policies: [MemoryPolicy]? = nil, schedule: Schedule, steps: Int = 6,
                      tokens: Bool = false, plan: Bool = true, device: String? = nil) throws -> (losses: [Float], session: TrainingSession) {
        let L = model.layers.count
        var starts: [Int] = []
        for i in 0..<p { starts.append(i * L / p) }
        let layout = PlanLayout(stageStarts: starts, layerCount: L, policies: policies ?? Array(repeating: .keep, count: L))
        var training = TrainingOptions(schedule: schedule, microBatches: 4, seed: 7, optimizer: .adam(learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8))
        if let device { training.deviceBackend = device }
        let session = try TrainingSession(SessionConfig(
            model: model, cluster: cluster(plan ? p : max(p, 1)), plan: plan ? layout : nil, training: training))
        var losses: [Float] = []
        for s in 0..<steps {
            let (x, y) = batch(rows: 32, features: tokens ? 1 : 8, classes: tokens ? 13 : 4, tokens: tokens, seed: s % 2)
            let loss = try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try session.step(inputs: xs, targets: ys) } }
            losses.append(loss)
        }
        return (losses, session)
    }

    @Test(arguments: [Schedule.gpipe, .oneFOneB])
    func pipelinesTrainLikeOneStage(schedule: Schedule) throws {
        for (model, tokens) in [(Self.mlp(), false), (Self.gpt(), true)] {
            let reference = try Self.train(model, stages: 1, schedule: schedule, tokens: tokens).losses
            #expect(reference.last! < reference.first!, "\(model.name): loss did not fall: \(reference)")
            let mixes: [[MemoryPolicy]] = [
                Array(repeating: .keep, count: 6),
                [.keep, .swap, .recompute, .recompute, .swap, .keep],
                [.recompute, .recompute, .swap, .keep, .recompute, .swap],
            ]
            for p in [2, 4] {
                for mix in mixes {
                    let losses = try Self.train(model, stages: p, policies: mix, schedule: schedule, tokens: tokens).losses
                    #expect(losses == reference, "\(model.name) \(schedule.name) p=\(p) \(PlanTable.policyString(mix)): \(losses) vs one stage \(reference)")
                }
            }
        }
    }

    @Test func measuredPeakWithinCapacityAndNearTheCostModel() throws {
        let (_, session) = try Self.train(Self.gpt(), stages: 2, policies: [.keep, .swap, .recompute, .keep, .keep, .keep],
                                          schedule: .oneFOneB, tokens: true)
        let stats = session.statistics()
        for s in stats.stages {
            #expect(s.peakDeviceBytes <= s.capacityBytes)
            let ratio = Double(s.peakDeviceBytes) / s.predictedPeakBytes
            print("stage \(s.stage): measured peak \(s.peakDeviceBytes) B, cost model \(Int(s.predictedPeakBytes)) B, ratio \(ratio)")
            // Above: at most 10% (the runtime must not hold more than the plan allowed for).
            // Below: the cost model charges the in-flight activation and gradient messages at
            // their worst coexistence; whether they are on the device at the measured peak
            // depends on how the stage threads interleave (seen: stage 1 at 1.0 or 0.922, one
            // 512 B message less; stage 0 at 0.934-0.939). 0.80 leaves room for two such
            // messages on this small model and still fails a cost model a fifth too high.
            #expect(ratio <= 1.10 && ratio >= 0.80, "stage \(s.stage): measured \(s.peakDeviceBytes) B vs predicted \(Int(s.predictedPeakBytes)) B: ratio \(ratio), expected within [0.80, 1.10]")
        }
        #expect(stats.stages[0].swappedBytes > 0)
        #expect(stats.stages[1].recomputedLayers > 0 || stats.stages[0].recomputedLayers > 0)
    }

    /// The interleaving that broke the peak in CI, forced: the copy engine throttled far below
    /// compute speed (a swap copy takes ~10 ms, a layer call well under 1 ms), or the
    /// receiving stage 20× slower. The runtime must stall on its copies inside the double
    /// buffer the cost model charges (2 · max a_l) rather than pile stashes up: before,
    /// swap-outs queued behind the compute kept every stash of several steps on the device
    /// (measured 2.4× the predicted peak). Losses stay those of the unthrottled run.
    @Test(arguments: [(bandwidth: 5e5, slowStage: -1), (bandwidth: 1e10, slowStage: 1), (bandwidth: 5e5, slowStage: 1)])
    func peakStaysNearTheCostModelWhenCopiesOrStagesFallBehind(bandwidth: Double, slowStage: Int) throws {
        let layout = PlanLayout(stageStarts: [0, 3], layerCount: 6, policies: [.keep, .swap, .recompute, .keep, .keep, .keep])
        func run(throttled: Bool) throws -> (losses: [Float], session: TrainingSession) {
            var training = TrainingOptions(schedule: .oneFOneB, microBatches: 4, seed: 7, optimizer: .adam(learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8))
            training.throttleCopies = throttled
            if throttled && slowStage >= 0 { training.slowdown = .init(stage: slowStage, factor: 20, fromIteration: 1) }
            let cluster = ClusterSpec.uniform(count: 2, device: DeviceSpec(name: "cpu", memoryBytes: Self.gib, hostBandwidth: bandwidth),
                                              link: LinkSpec(bandwidth: 1e10))
            let session = try TrainingSession(SessionConfig(model: Self.gpt(), cluster: cluster, plan: layout, training: training))
            let losses = try (0..<4).map { s in
                let (x, y) = Self.batch(rows: 32, features: 1, classes: 13, tokens: true, seed: s % 2)
                return try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try session.step(inputs: xs, targets: ys) } }
            }
            return (losses, session)
        }
        let (losses, session) = try run(throttled: true)
        let reference = try run(throttled: false).losses
        #expect(losses == reference, "throttled \(losses) vs unthrottled \(reference)")
        let stats = session.statistics()
        for s in stats.stages {
            let ratio = Double(s.peakDeviceBytes) / s.predictedPeakBytes
            #expect(ratio <= 1.10, "stage \(s.stage) with copies at \(bandwidth) B/s, stage \(slowStage) slowed: measured peak \(s.peakDeviceBytes) B, cost model \(Int(s.predictedPeakBytes)) B (ratio \(ratio), at most 1.10 expected)")
        }
        #expect(stats.stages[0].swappedBytes > 0, "expected stage 0 to swap")
        session.close()
    }

    /// Opening a 2-device MLP session with the options `set` changes must fail with an error
    /// naming `field` (`value` is what was set, for the message).
    func expectRefused(naming field: String, for value: Any, _ set: (inout TrainingOptions) -> Void) {
        var training = TrainingOptions(schedule: .oneFOneB, microBatches: 4)
        set(&training)
        do {
            _ = try TrainingSession(SessionConfig(model: Self.mlp(), cluster: Self.cluster(2), plan: nil, training: training))
            Issue.record("expected \(field) \(value) to be refused")
        } catch {
            #expect("\(error)".contains(field), "expected an error naming \(field) for \(value), got: \(error)")
        }
    }

    /// `replanEvery` beyond a million steps (or negative, from Swift) is refused naming the
    /// field, not clamped: a host that asked for it learns it does not run.
    @Test func replanEveryOutOfRangeIsRefusedNamingTheField() throws {
        for bad in [-1, TrainingOptions.maxReplanEvery + 1, Int(UInt32.max)] {
            expectRefused(naming: "training.replan_every", for: bad) { $0.replanEvery = bad }
        }
        var training = TrainingOptions(schedule: .oneFOneB, microBatches: 4)
        training.replanEvery = TrainingOptions.maxReplanEvery
        let session = try TrainingSession(SessionConfig(model: Self.mlp(), cluster: Self.cluster(2), plan: nil, training: training))
        session.close()
    }

    /// `deviceSlowdown` (bench-paper's p devices of speed cores/p) is refused outside [1, 1000],
    /// naming the field, and does not change what is computed.
    @Test func deviceSlowdownIsCheckedAndChangesOnlyTime() throws {
        for bad in [0.5, .nan, 1e6] {
            expectRefused(naming: "training.device_slowdown", for: bad) { $0.deviceSlowdown = bad }
        }
        let layout = PlanLayout(stageStarts: [0, 3], layerCount: 6, policies: Array(repeating: .keep, count: 6))
        func losses(_ slowdown: Double) throws -> [Float] {
            var training = TrainingOptions(schedule: .oneFOneB, microBatches: 4, seed: 7)
            training.deviceSlowdown = slowdown
            let session = try TrainingSession(SessionConfig(model: Self.mlp(), cluster: Self.cluster(2), plan: layout, training: training))
            defer { session.close() }
            let (x, y) = Self.batch(rows: 16, features: 8, classes: 4, tokens: false, seed: 0)
            return try (0..<2).map { _ in try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try session.step(inputs: xs, targets: ys) } } }
        }
        #expect(try losses(3) == losses(1))
    }

    @Test func injectedFailureStopsEveryStage() throws {
        let model = Self.mlp()
        let session = try TrainingSession(SessionConfig(
            model: model, cluster: Self.cluster(3), plan: PlanLayout(stageStarts: [0, 2, 4], layerCount: 6, policies: Array(repeating: .keep, count: 6)),
            training: TrainingOptions(schedule: .oneFOneB, microBatches: 4, seed: 1, optimizer: .sgd(learningRate: 0.1, momentum: 0.9),
                                      failure: .init(iteration: 2, stage: 1, microBatch: 2))))
        let (x, y) = Self.batch(rows: 16, features: 8, classes: 4, tokens: false, seed: 0)
        func step() throws -> Float { try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try session.step(inputs: xs, targets: ys) } } }
        _ = try step()
        let before = try session.parameters(layer: 0)
        do {
            _ = try step()
            Issue.record("expected the injected failure")
        } catch {
            #expect("\(error)".contains("stage 1") && "\(error)".contains("micro-batch 2"), "error: \(error)")
        }
        #expect(try session.parameters(layer: 0).map(\.values) == before.map(\.values), "a failed step changed weights")
        _ = try step()  // iteration 3 runs normally
        session.close()
    }

    /// A stage whose thread cannot start: the session refuses to open, naming the stage
    /// (before, the stage ran inline on the caller and the step waited for a stage that
    /// never started). The other stages' threads are stopped again: opening afterwards works.
    @Test func threadStartFailureIsAnErrorNamingTheStage() throws {
        var options = TrainingOptions(schedule: .oneFOneB, microBatches: 4, seed: 1, optimizer: .sgd(learningRate: 0.1, momentum: 0))
        options.threadStartFailure = 2
        let config = SessionConfig(model: Self.mlp(), cluster: Self.cluster(3),
                                   plan: PlanLayout(stageStarts: [0, 2, 4], layerCount: 6, policies: Array(repeating: .keep, count: 6)),
                                   training: options)
        do {
            _ = try TrainingSession(config)
            Issue.record("expected the session to refuse to open when stage 2's thread cannot start")
        } catch {
            #expect("\(error)".contains("stage 2") && "\(error)".contains("thread could not start"), "expected an error naming stage 2's thread, got: \(error)")
        }
        var working = config
        working.training.threadStartFailure = nil
        let session = try TrainingSession(working)
        let (x, y) = Self.batch(rows: 16, features: 8, classes: 4, tokens: false, seed: 0)
        let loss = try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try session.step(inputs: xs, targets: ys) } }
        #expect(loss.isFinite, "expected a finite loss from the session opened afterwards, got \(loss)")
        session.close()
    }

    @Test func outOfMemoryNamesStageAndLayer() {
        do {
            _ = try Self.train(Self.mlp(), stages: 2, schedule: .gpipe, steps: 1, plan: true, memory: 2000)
            Issue.record("expected out of memory")
        } catch {
            // 2,000 bytes per device: stage 0 holds layers 0-2 in one parameter block; layer 0's
            // parameters and gradients (2 × 576 bytes) fit, layer 2's (2 × (16 × 16 + 16) × 4 =
            // 2,176 bytes) do not, and the error names the first layer that does not fit.
            let text = "\(error)"
            #expect(text.contains("stage 0") && text.contains("layer 2") && text.contains("2176 bytes"),
                    "expected the error to name stage 0, layer 2 and its 2176 bytes, got: \(text)")
        }
    }

    @Test func withoutAPlanItProfilesThenPlans() throws {
        let reference = try Self.train(Self.gpt(), stages: 1, schedule: .oneFOneB, steps: 5, tokens: true).losses
        let (losses, session) = try Self.train(Self.gpt(), stages: 2, schedule: .oneFOneB, steps: 5, tokens: true, plan: false)
        #expect(!session.isProfiling)
        #expect(session.plan?.stages.count == 2)
        #expect(losses == reference, "profiled-then-planned \(losses) vs one stage \(reference)")
        let profiles = session.statistics().measuredProfiles
        #expect(profiles.allSatisfy { $0.fwdSeconds > 0 && $0.bwdSeconds > 0 }, "profiles \(profiles)")
        #expect(profiles[1].paramBytes > 0 && profiles[1].stashBytes > 0)
    }
}

extension SessionTests {
    static func train(_ model: ModelSpec, stages p: Int, schedule: Schedule, steps: Int, plan: Bool, memory: Int) throws -> [Float] {
        let L = model.layers.count
        let layout = PlanLayout(stageStarts: (0..<p).map { $0 * L / p }, layerCount: L, policies: Array(repeating: .keep, count: L))
        let session = try TrainingSession(SessionConfig(model: model, cluster: cluster(p, memory: memory), plan: layout,
                                                        training: TrainingOptions(schedule: schedule, microBatches: 4)))
        let (x, y) = batch(rows: 32, features: 8, classes: 4, tokens: false, seed: 0)
        return [try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try session.step(inputs: xs, targets: ys) } }]
    }
}

/// Live migration: layers move between stages while training continues, and training
/// computes exactly what it would have without the move.
@Suite struct MigrationTests {
    typealias S = SessionTests

    func session(_ layout: PlanLayout, schedule: Schedule = .oneFOneB, optimizer: TrainingOptions.OptimizerChoice = .adam(learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8)) throws -> TrainingSession {
        try TrainingSession(SessionConfig(model: S.gpt(), cluster: S.cluster(layout.ranges.count), plan: layout,
                                          training: TrainingOptions(schedule: schedule, microBatches: 4, seed: 7, optimizer: optimizer)))
    }

    func step(_ s: TrainingSession, _ k: Int) throws -> Float {
        let (x, y) = S.batch(rows: 32, features: 1, classes: 13, tokens: true, seed: k % 2)
        return try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try s.step(inputs: xs, targets: ys) } }
    }

    static let keep = Array(repeating: MemoryPolicy.keep, count: 6)
    static let a = PlanLayout(stageStarts: [0, 3], layerCount: 6, policies: keep)
    static let b = PlanLayout(stageStarts: [0, 2], layerCount: 6, policies: [.keep, .swap, .recompute, .recompute, .keep, .keep])
    static let c = PlanLayout(stageStarts: [0, 5], layerCount: 6, policies: [.recompute, .recompute, .keep, .swap, .keep, .keep])

    @Test(arguments: [Schedule.gpipe, .oneFOneB])
    func migrationsKeepTheLossTrajectory(schedule: Schedule) throws {
        let still = try session(Self.a, schedule: schedule)
        let moving = try session(Self.a, schedule: schedule)
        var expected: [Float] = [], got: [Float] = []
        for k in 0..<8 {
            expected.append(try step(still, k))
            if k == 1 { try moving.applyPlan(Self.b) }
            if k == 3 { try moving.applyPlan(Self.c) }
            if k == 5 { try moving.applyPlan(Self.a) }
            got.append(try step(moving, k))
        }
        #expect(got == expected, "with migrations \(got) vs without \(expected)")
        for l in 0..<6 {
            #expect(try moving.parameters(layer: l).map(\.values) == still.parameters(layer: l).map(\.values), "layer \(l) weights differ")
        }
        let decisions = moving.statistics().decisions
        #expect(decisions.count == 3 && decisions.allSatisfy { $0.applied }, "decisions: \(decisions.map(\.note))")
        #expect(decisions[0].layersMoved == [2], "first migration moved \(decisions[0].layersMoved)")
        #expect(decisions.allSatisfy { $0.bytesMoved > 0 && $0.stallSeconds >= 0 })
    }

    @Test func samePlanTwiceAndMidIterationRequests() throws {
        let still = try session(Self.a)
        let moving = try session(Self.a)
        var expected: [Float] = [], got: [Float] = []
        for k in 0..<6 {
            expected.append(try step(still, k))
            if k == 0 {
                try moving.applyPlan(Self.a)  // the same plan: nothing moves
                try moving.applyPlan(Self.b)  // twice in a row: the later one wins
            }
            if k == 2 {
                // A request arriving while the step runs on another thread.
                let box = ErrorBox()
                let done = DispatchSemaphore(value: 0)
                let mover = moving
                Thread {
                    usleep(200)
                    do { try mover.applyPlan(Self.c) } catch { box.error = error }
                    done.signal()
                }.start()
                got.append(try step(moving, k))
                done.wait()
                #expect(box.error == nil)
                continue
            }
            got.append(try step(moving, k))
        }
        #expect(got == expected, "\(got) vs \(expected)")
        #expect(moving.statistics().decisions.contains { $0.note.contains("replaced") })
    }

    @Test func plansThatCannotApplyAreRejected() throws {
        let s = try session(Self.a)
        _ = try step(s, 0)
        #expect(throws: VPipeError.self) { try s.applyPlan(PlanLayout(stageStarts: [0], layerCount: 6, policies: Self.keep)) }
        #expect(throws: VPipeError.self) { try s.applyPlan(PlanLayout(stageStarts: [0, 3], layerCount: 5, policies: Array(Self.keep.prefix(5)))) }
        #expect(throws: VPipeError.self) { try s.applyPlan(Self.b, schedule: .gpipe) }
        // Too little memory for the new placement: rejected, with the stage and bytes. The
        // capacity is chosen between what the two placements need by cost model v1 on the
        // measured profiles (what applyPlan checks against).
        let heavy = PlanLayout(stageStarts: [0, 5], layerCount: 6, policies: Self.keep)
        let probe = CostModel(model: s.measuredModel, cluster: s.clusterWithWorkspace, schedule: .oneFOneB, microBatches: 4)
        let needNow = try probe.evaluate(Self.a).stages.map(\.peakMemoryBytes).max()!
        let needHeavy = try probe.evaluate(heavy).stages.map(\.peakMemoryBytes).max()!
        #expect(needHeavy > needNow)
        let tight = try TrainingSession(SessionConfig(model: S.gpt(), cluster: S.cluster(2, memory: Int((needNow + needHeavy) / 2)), plan: Self.a,
                                                      training: TrainingOptions(schedule: .oneFOneB, microBatches: 4, seed: 7,
                                                                                optimizer: .adam(learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8))))
        _ = try step(tight, 0)
        do {
            try tight.applyPlan(heavy)
            Issue.record("expected the plan to be rejected")
        } catch let VPipeError.infeasible(message) {
            #expect(message.contains("stage 0") && message.contains("bytes"), "message: \(message)")
        }
        _ = try step(tight, 1)  // still trains on the old plan
        #expect(tight.statistics().stages.map(\.layers) == [0..<3, 3..<6])
    }

    /// Stage 0's device runs 4x slower from the first step: online re-planning must move
    /// layers off it. The slowdown starts at once (not mid-run) so that a migration decided
    /// on the noise of unslowed steps (this runs beside other tests, three times per CI round
    /// under the sanitizers) cannot pre-empt the one under test; what is asserted is the
    /// direction (stage 0 ends with fewer layers), which noise does not give against 4x.
    /// test-mpi covers a slowdown that starts mid-run.
    @Test func slowdownTriggersOnlineReplanning() throws {
        var options = TrainingOptions(schedule: .oneFOneB, microBatches: 4, seed: 7, optimizer: .sgd(learningRate: 0.05, momentum: 0.9))
        options.replanEvery = 3
        options.replanThreshold = 0.05
        options.slowdown = .init(stage: 0, factor: 4, fromIteration: 1)
        let s = try TrainingSession(SessionConfig(model: S.gpt(), cluster: S.cluster(2), plan: PlanLayout(stageStarts: [0, 2], layerCount: 6, policies: Self.keep), training: options))
        for k in 0..<12 { _ = try step(s, k) }
        let decisions = s.statistics().decisions
        #expect(decisions.count >= 3, "decisions: \(decisions.map(\.note))")
        let moved = decisions.first { $0.applied }
        #expect(moved != nil, "no migration off the slowed stage 0: \(decisions.map { "\($0.iteration): \($0.note)" })")
        if let moved { #expect(moved.newPredictedSeconds < moved.oldPredictedSeconds) }
        // Stage 0 (the slow device) ends with fewer layers than it started with.
        let first = s.statistics().stages[0].layers
        #expect(first.count < 2, "expected the slow stage 0 to end with fewer than the 2 layers it started with, it owns \(first)")
    }
}

final class ErrorBox: @unchecked Sendable { var error: Error? }

/// PIPEDREAM_ASYNC: 1F1B with weight stashing. Each micro-batch's forward and backward use
/// the same weight version; updates land after every backward; stage i holds at most
/// min(m, p − i) versions.
@Suite struct AsyncScheduleTests {
    typealias S = SessionTests

    func session(_ p: Int) throws -> TrainingSession {
        let L = 6
        let layout = PlanLayout(stageStarts: (0..<p).map { $0 * L / p }, layerCount: L, policies: [.keep, .recompute, .recompute, .swap, .keep, .keep])
        return try TrainingSession(SessionConfig(model: S.mlp(), cluster: S.cluster(p), plan: layout,
                                                 training: TrainingOptions(schedule: .pipedreamAsync, microBatches: 6, seed: 3, optimizer: .sgd(learningRate: 0.05, momentum: 0.9))))
    }

    func step(_ s: TrainingSession, _ k: Int) throws -> Float {
        let (x, y) = S.batch(rows: 24, features: 8, classes: 4, tokens: false, seed: k % 2)
        return try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try s.step(inputs: xs, targets: ys) } }
    }

    /// The version stage i's forward of micro-batch k sees: updates applied before it, i.e.
    /// the backwards that precede F(k) in the stage's 1F1B list, plus earlier iterations'.
    func expectedVersions(p: Int, m: Int, iteration: Int) throws -> [[Int: Int]] {
        let schedule = try ScheduleGenerator.generate(.pipedreamAsync, microBatches: m, stagePolicies: Array(repeating: [.keep], count: p))
        return schedule.stages.map { list in
            var done = 0
            var out: [Int: Int] = [:]
            for a in list {
                if a.kind == .forward { out[a.microBatch] = (iteration - 1) * m + done }
                if a.kind == .backward { done += 1 }
            }
            return out
        }
    }

    @Test func everyMicroBatchUsesOneVersionAndStalenessFollows1F1B() throws {
        let p = 3, m = 6
        let s = try session(p)
        var losses: [Float] = []
        for k in 1...4 {
            losses.append(try step(s, k))
            let got = s.lastWeightVersions
            let want = try expectedVersions(p: p, m: m, iteration: k)
            for i in 0..<p {
                for mb in 0..<m {
                    let v = got[i][mb]
                    #expect(v?.forward == v?.backward, "stage \(i) micro-batch \(mb): forward v\(v?.forward ?? -1), backward v\(v?.backward ?? -1)")
                    #expect(v?.forward == want[i][mb], "stage \(i) micro-batch \(mb): used version \(v?.forward ?? -1), expected \(want[i][mb] ?? -1)")
                }
            }
        }
        #expect(losses.last! < losses.first!, "async training did not reduce the loss: \(losses)")
    }

    @Test func stashedVersionsStayWithinTheCostModelsCount() throws {
        let p = 3, m = 6
        let schedule = try ScheduleGenerator.generate(.pipedreamAsync, microBatches: m, stagePolicies: Array(repeating: [.keep], count: p))
        for (i, list) in schedule.stages.enumerated() {
            var live = 0, most = 0
            for a in list {
                if a.kind == .forward { live += 1; most = max(most, live) }
                if a.kind == .backward { live -= 1 }
            }
            #expect(most <= min(m, p - i), "stage \(i) holds \(most) versions, cost model v_i = \(min(m, p - i))")
        }
    }

    @Test func migrationDrainsFirstAndKeepsStaleness() throws {
        let still = try session(3), moving = try session(3)
        var a: [Float] = [], b: [Float] = []
        for k in 1...5 {
            a.append(try step(still, k))
            if k == 2 { try moving.applyPlan(PlanLayout(stageStarts: [0, 1, 4], layerCount: 6, policies: Array(repeating: .keep, count: 6))) }
            b.append(try step(moving, k))
            let va = still.lastWeightVersions.map { $0.mapValues(\.forward) }, vb = moving.lastWeightVersions.map { $0.mapValues(\.forward) }
            #expect(va == vb, "iteration \(k): versions with migration \(vb) vs without \(va)")
        }
        #expect(a == b, "async losses with migration \(b) vs without \(a)")
        #expect(moving.statistics().decisions.first?.applied == true)
    }
}

/// Host-defined layers: the host's forward and backward run inside the pipeline.
@Suite struct ExternalLayerTests {
    typealias S = SessionTests

    static func registerTanh(_ name: String, failAtRow: Int? = nil) {
        ExternalRegistry.register(name, ExternalCallbacks(
            forward: { x, y, rows, i, o in
                for k in 0..<(rows * o) { y[k] = tanhf(x[k]) }
                return nil
            },
            backward: { _, y, dy, dx, rows, i, _ in
                if failAtRow != nil { return "the host gave up" }
                for k in 0..<(rows * i) { dx[k] = dy[k] * (1 - y[k] * y[k]) }
                return nil
            }))
    }

    static func model(_ callback: String) -> ModelSpec {
        S.model("ext", [.linear(inFeatures: 8, outFeatures: 16), .external(callback: callback, inFeatures: 16, outFeatures: 16),
                        .linear(inFeatures: 16, outFeatures: 4), .softmaxCrossEntropy])
    }

    func train(_ model: ModelSpec, stages p: Int) throws -> [Float] {
        let layout = PlanLayout(stageStarts: p == 1 ? [0] : [0, 2], layerCount: 4, policies: [.keep, .recompute, .swap, .keep])
        let s = try TrainingSession(SessionConfig(model: model, cluster: S.cluster(p), plan: layout,
                                                  training: TrainingOptions(schedule: .oneFOneB, microBatches: 4, seed: 9, optimizer: .sgd(learningRate: 0.1, momentum: 0.9))))
        return try (0..<5).map { k in
            let (x, y) = S.batch(rows: 16, features: 8, classes: 4, tokens: false, seed: k % 2)
            return try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try s.step(inputs: xs, targets: ys) } }
        }
    }

    @Test func hostLayerTrainsInsideThePipeline() throws {
        Self.registerTanh("test.tanh")
        let one = try train(Self.model("test.tanh"), stages: 1), two = try train(Self.model("test.tanh"), stages: 2)
        #expect(one == two, "1 stage \(one) vs 2 stages \(two)")
        #expect(one.last! < one.first!, "loss did not fall: \(one)")
    }

    @Test func failingCallbackEndsTheStepWithItsMessage() throws {
        Self.registerTanh("test.failing", failAtRow: 0)
        do {
            _ = try train(Self.model("test.failing"), stages: 2)
            Issue.record("expected the host's failure")
        } catch {
            #expect("\(error)".contains("the host gave up") && "\(error)".contains("stage 0"), "error: \(error)")
        }
    }

    @Test func unregisteredCallbackIsAnErrorAtOpen() {
        #expect(throws: RuntimeError.self) { _ = try train(Self.model("test.nobody"), stages: 1) }
    }
}

@Suite struct ResourceLimitTests {
    @Test func impossibleAllocationIsAnErrorNotATrap() {
        do {
            _ = try Tensor(shape: [1 << 40, 1 << 10], in: nil, for: "a test's huge tensor")
            Issue.record("expected an out-of-memory error")
        } catch {
            #expect("\(error)".contains("a test's huge tensor"), "error: \(error)")
        }
    }

    /// Byte counts in out-of-memory messages are never negative and never overflow: a host
    /// allocation can fail below the capacity (a 65536 × 65536 Linear used to report
    /// "-8096104448 bytes over"), and a request near Int.max must not trap in the sum.
    @Test func outOfMemoryByteCountsAreNeverNegative() throws {
        let belowCapacity = RuntimeError.outOfMemory(space: "host allocator", what: "layer 0 weights", requested: 17_179_869_184,
                                                     inUse: 0, capacity: 25_276_000_000).description
        #expect(!belowCapacity.contains("-") && belowCapacity.contains("could not provide"), "\(belowCapacity)")
        let huge = RuntimeError.outOfMemory(space: "d", what: "w", requested: Int.max, inUse: 10, capacity: 100).description
        #expect(!huge.contains("-") && huge.contains("more than"), "\(huge)")
        let plain = RuntimeError.outOfMemory(space: "d", what: "w", requested: 60, inUse: 50, capacity: 100).description
        #expect(plain.hasSuffix("10 bytes over"), "\(plain)")
        let space = MemorySpace(name: "tiny", kind: .device, capacity: 100)
        try space.reserve(50, for: "half")
        #expect(throws: RuntimeError.self) { try space.reserve(Int.max, for: "everything") }
    }

    @Test func plannersRefuseWorkTheyCannotFinish() {
        let layers = (0..<10_001).map { LayerSpec(name: "l\($0)", profile: LayerProfile(fwdSeconds: 1, bwdSeconds: 2, stashBytes: 1, outputBytes: 1, paramBytes: 1)) }
        let model = ModelSpec(name: "long", layers: layers, inputBytes: 1)
        let cluster = ClusterSpec.uniform(count: 16, device: DeviceSpec(name: "d", memoryBytes: 1 << 40, hostBandwidth: 1e9), link: LinkSpec(bandwidth: 1e9))
        for kind in [PlannerKind.timeBalanced, .vpipe] {
            do {
                _ = try Planning.plan(PlanRequest(model: model, cluster: cluster, options: PlanOptions(microBatches: 4, planner: kind)))
                Issue.record("\(kind.name): expected a work-limit error")
            } catch let VPipeError.invalidField(field, message) {
                #expect(field == "model.layers" && message.contains(kind.name), "\(field): \(message)")
            } catch { Issue.record("\(kind.name): unexpected \(error)") }
        }
    }
}

@Suite struct ModelShapeTests {
    @Test func mismatchedWidthsAndAMisplacedLossAreRejectedAtOpen() {
        let cases: [([LayerKind], String)] = [
            ([.linear(inFeatures: 8, outFeatures: 16), .linear(inFeatures: 8, outFeatures: 4), .softmaxCrossEntropy], "model.layers[1]"),
            ([.linear(inFeatures: 8, outFeatures: 4), .softmaxCrossEntropy, .linear(inFeatures: 4, outFeatures: 4), .softmaxCrossEntropy], "model.layers[1]"),
        ]
        for (kinds, field) in cases {
            do {
                _ = try TrainingSession(SessionConfig(model: SessionTests.model("bad", kinds), cluster: SessionTests.cluster(1), plan: nil,
                                                      training: TrainingOptions(microBatches: 2)))
                Issue.record("expected an error naming \(field)")
            } catch let VPipeError.invalidField(f, message) {
                #expect(f == field, "\(f): \(message)")
            } catch { Issue.record("unexpected \(error)") }
        }
    }
}
