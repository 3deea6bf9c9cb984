#if canImport(Glibc)
import Glibc
#endif
import Testing
import VPipeCore
import VPipeRuntime

/// A NaN or an infinity in a step's inputs, in a layer's output (the loss included), in a
/// gradient, or a host callback that leaves its output unwritten, ends the step with an error
/// naming the stage, the layer and the micro-batch, and changes no weight.
@Suite struct NonFiniteTests {
    typealias S = SessionTests

    /// The 6-layer MLP on 2 stages (layers 0..<3 | 3..<6), 1F1B, 4 micro-batches of 4 rows.
    func session(_ model: ModelSpec = S.mlp(), starts: [Int] = [0, 3]) throws -> TrainingSession {
        let L = model.layers.count
        return try TrainingSession(SessionConfig(
            model: model, cluster: S.cluster(starts.count),
            plan: PlanLayout(stageStarts: starts, layerCount: L, policies: Array(repeating: .keep, count: L)),
            training: TrainingOptions(schedule: .oneFOneB, microBatches: 4, seed: 3, optimizer: .adam(learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8))))
    }

    func step(_ s: TrainingSession, _ x: [Float], _ y: [Int32]) throws -> Float {
        try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try s.step(inputs: xs, targets: ys) } }
    }

    func weights(_ s: TrainingSession) throws -> [[Float]] {
        try (0..<s.config.model.layers.count).flatMap { try s.parameters(layer: $0).map(\.values) }
    }

    /// Steps once cleanly, then runs `bad`, which must fail with every string of `expected`
    /// in its message and leave every weight as it was; then a clean step runs again.
    func expectRefused(_ s: TrainingSession, _ expected: [String], _ bad: () throws -> Float) throws {
        let (x, y) = S.batch(rows: 16, features: 8, classes: 4, tokens: false, seed: 0)
        _ = try step(s, x, y)
        let before = try weights(s)
        do {
            let loss = try bad()
            Issue.record("expected an error naming \(expected), got loss \(loss)")
        } catch {
            for e in expected { #expect("\(error)".contains(e), "expected \"\(e)\" in: \(error)") }
        }
        let after = try weights(s)
        #expect(after == before, "a refused step changed weights")
        #expect(try step(s, x, y).isFinite, "the session cannot step cleanly after a refused step")
    }

    @Test(arguments: [Float.nan, .infinity, -.infinity])
    func nonFiniteInputIsRefused(_ value: Float) throws {
        let s = try session()
        var (x, y) = S.batch(rows: 16, features: 8, classes: 4, tokens: false, seed: 1)
        x[9 * 8 + 5] = value  // row 9 = micro-batch 2, its row 1; column 5
        try expectRefused(s, ["stage 0 layer 0", "micro-batch 2", "input row 1 column 5", "\(value)", "no weight changed"]) { try step(s, x, y) }
    }

    /// An external layer (identity) whose forward writes `value` into one element of the output
    /// of micro-batch 3 in the second step, and whose backward writes `gradient` into dx[0].
    static func registerPoisoning(_ name: String, forward value: Float?, backward gradient: Float? = nil, writes: Bool = true) {
        let calls = Counter()
        ExternalRegistry.register(name, ExternalCallbacks(
            forward: { x, y, rows, _, o in
                if writes { for k in 0..<(rows * o) { y[k] = x[k] } }
                // Four forwards per step (4 micro-batches, KEEP): call 7 is step 2's micro-batch 3.
                if calls.next() == 7, let value { y[o + 2] = value }
                return nil
            },
            backward: { _, _, dy, dx, rows, i, _ in
                for k in 0..<(rows * i) { dx[k] = dy[k] }
                if let gradient { dx[0] = gradient }
                return nil
            }))
    }

    final class Counter: @unchecked Sendable {
        private var n = -1
        func next() -> Int { n += 1; return n }
    }

    static func externalModel(_ callback: String) -> ModelSpec {
        S.model("ext", [.linear(inFeatures: 8, outFeatures: 16), .external(callback: callback, inFeatures: 16, outFeatures: 16),
                        .linear(inFeatures: 16, outFeatures: 4), .softmaxCrossEntropy])
    }

    @Test func aLayerProducingNaNIsNamed() throws {
        Self.registerPoisoning("test.nan-in-step-2", forward: .nan)
        let s = try session(Self.externalModel("test.nan-in-step-2"), starts: [0, 2])
        let (x, y) = S.batch(rows: 16, features: 8, classes: 4, tokens: false, seed: 0)
        try expectRefused(s, ["stage 0 layer 1", "micro-batch 3", "output row 1 column 2 is nan"]) { try step(s, x, y) }
    }

    /// The session's first step must fail naming every string of `expected`, changing no weight.
    func expectFirstStepRefused(_ s: TrainingSession, _ expected: [String]) throws {
        let (x, y) = S.batch(rows: 16, features: 8, classes: 4, tokens: false, seed: 0)
        let before = try weights(s)
        do {
            let loss = try step(s, x, y)
            Issue.record("expected an error naming \(expected), got loss \(loss)")
        } catch {
            for e in expected { #expect("\(error)".contains(e), "expected \"\(e)\" in: \(error)") }
        }
        #expect(try weights(s) == before, "a refused step changed weights")
    }

    @Test func anInfiniteGradientIsRefused() throws {
        Self.registerPoisoning("test.inf-gradient", forward: nil, backward: .infinity)
        let s = try session(Self.externalModel("test.inf-gradient"), starts: [0, 2])
        try expectFirstStepRefused(s, ["stage 0 layer 1", "input gradient row 0 column 0 is inf"])
    }

    @Test func aCallbackThatWritesNothingIsNamed() throws {
        Self.registerPoisoning("test.lazy", forward: nil, writes: false)
        let s = try session(Self.externalModel("test.lazy"), starts: [0, 2])
        try expectFirstStepRefused(s, ["stage 0 layer 1", "micro-batch 0", "did not write its output"])
    }

    /// Finite activations and input gradients can still overflow into an infinite parameter
    /// gradient (huge activations times huge output gradients): caught before the optimizer.
    @Test func anOverflowingParameterGradientIsRefused() throws {
        let s = try session(S.mlp(), starts: [0, 3])
        func set(_ layer: Int, weight: Float) throws {
            let p = try s.parameters(layer: layer)
            try s.setParameters(layer: layer, p.enumerated().map { k, t in (t.shape, [Float](repeating: k == 0 ? weight : 0, count: t.values.count)) })
        }
        // h = relu(x W0) ~ 1e30; layer 2 output h W2 ~ 100; logits ~ 1e33; the gradient at
        // layer 2's output ~ 1e29, so dW2 = hᵀ dy ~ 1e60 overflows while everything else is finite.
        try set(0, weight: 1e30)
        try set(2, weight: 1e-30)
        try set(4, weight: 1e30)
        let before = try weights(s)
        var (x, y) = S.batch(rows: 16, features: 8, classes: 4, tokens: false, seed: 0)
        x = x.map { abs($0) + 0.5 }
        do {
            let loss = try step(s, x, y)
            Issue.record("expected an infinite gradient to be refused, got loss \(loss)")
        } catch {
            #expect("\(error)".contains("stage 0 layer 2") && "\(error)".contains("gradient of parameter tensor"), "error: \(error)")
        }
        #expect(try weights(s) == before, "a refused step changed weights")
    }

    @Test func theCheckFindsEveryPosition() {
        for count in [1, 15, 16, 17, 100] {
            var v = [Float](repeating: 1, count: count)
            #expect(v.withUnsafeBufferPointer { FiniteCheck.firstNonFinite($0.baseAddress!, count: count) } == nil)
            for k in [0, count / 2, count - 1] {
                for bad in [Float.nan, .infinity, -.infinity, Float(bitPattern: 0xffc0_0001), Float(bitPattern: 0x7f80_0001)] {
                    v[k] = bad
                    let found = v.withUnsafeBufferPointer { FiniteCheck.firstNonFinite($0.baseAddress!, count: count) }
                    #expect(found == k, "count \(count): \(bad) at \(k), found \(String(describing: found))")
                    v[k] = [Float.greatestFiniteMagnitude, -.greatestFiniteMagnitude, -.leastNonzeroMagnitude, 0][(k + count) % 4]
                    #expect(v.withUnsafeBufferPointer { FiniteCheck.firstNonFinite($0.baseAddress!, count: count) } == nil)
                }
                v[k] = 1
            }
        }
    }
}
