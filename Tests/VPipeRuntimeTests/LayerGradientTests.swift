import Testing
import VPipeCore
import VPipeRuntime

/// Every layer's backward against central finite differences (see `GradientCheck`), in
/// Float with eps 1e-2; tolerance: relative error <= 2e-3 for every checked tensor
/// (observed: <= 5e-5 on all of them, so the margin is for BLAS summation-order noise).
@Suite struct LayerGradientTests {
    static let tolerance: Float = 2e-3
    let context = LayerContext(space: nil, label: "test layer")

    func expectClose(_ results: [GradientCheck.Result], parameters: Int, checkedInput: Bool = true) {
        #expect(results.count == parameters + (checkedInput ? 1 : 0), "expected one result per checked tensor")
        for r in results {
            #expect(r.error <= LayerGradientTests.tolerance, "\(r)")
        }
    }

    @Test func linear() throws {
        let layer = try makeLayer(kind: .linear(inFeatures: 5, outFeatures: 4), name: "fc", index: 0, seed: 1, in: nil)
        let x = try GradientCheck.randomTensor([3, 5], seed: 11)
        expectClose(try GradientCheck.run(layer, input: x, context: context), parameters: 2)
    }

    /// Each option of a choice block, selected by the iteration.
    @Test(arguments: [1, 3]) func choiceBlock(iteration: Int) throws {
        let layer = try makeLayer(kind: .choiceBlock(features: 4, hiddenOptions: [3, 6], switchEvery: 2), name: "choice", index: 0, seed: 1, in: nil)
        var ctx = context
        ctx.iteration = iteration
        let x = try GradientCheck.randomTensor([3, 4], seed: 21)
        // Both options' parameters are listed; the inactive one's gradients stay zero.
        expectClose(try GradientCheck.run(layer, input: x, context: ctx), parameters: 8)
        if let c = layer as? ChoiceBlock { #expect(c.activeOption(iteration: iteration) == (iteration - 1) / 2 % 2) }
    }

    @Test func relu() throws {
        let layer = try makeLayer(kind: .activation(.relu), name: "relu", index: 0, seed: 1, in: nil)
        // Keep inputs away from the kink at 0 (|x| >= 0.1 > eps).
        let x = try GradientCheck.randomTensor([3, 6], seed: 12)
        try x.fill(from: x.toArray().map { $0 + ($0 >= 0 ? 0.1 : -0.1) })
        expectClose(try GradientCheck.run(layer, input: x, context: context), parameters: 0)
    }

    @Test func gelu() throws {
        let layer = try makeLayer(kind: .activation(.gelu), name: "gelu", index: 0, seed: 1, in: nil)
        let x = try GradientCheck.randomTensor([3, 6], seed: 13, scale: 3)
        expectClose(try GradientCheck.run(layer, input: x, context: context), parameters: 0)
    }

    @Test func layerNorm() throws {
        let layer = try makeLayer(kind: .layerNorm(features: 6), name: "ln", index: 0, seed: 1, in: nil)
        // Non-trivial γ, β so their gradients and the scale path are exercised.
        var rng = RNG(seed: 5)
        for p in layer.parameters { rng.fillUniform(p, 0.5, 1.5) }
        let x = try GradientCheck.randomTensor([4, 6], seed: 14, scale: 2)
        expectClose(try GradientCheck.run(layer, input: x, context: context), parameters: 2)
    }

    @Test func embeddingWithPositions() throws {
        let layer = try makeLayer(kind: .embedding(vocabulary: 7, features: 4, sequenceLength: 3), name: "wte",
                                  index: 0, seed: 1, in: nil)
        let ids = try Tensor(shape: [6, 1], in: nil, for: "ids")
        try ids.fill(from: [0, 3, 3, 6, 1, 0])  // repeated ids: gradients must accumulate
        expectClose(try GradientCheck.run(layer, input: ids, context: context, checkInput: false),
                    parameters: 2, checkedInput: false)
    }

    @Test func embeddingWithoutPositions() throws {
        let layer = try makeLayer(kind: .embedding(vocabulary: 5, features: 3, sequenceLength: 0), name: "wte",
                                  index: 0, seed: 1, in: nil)
        #expect(layer.parameters.count == 1, "no position table when sequenceLength is 0")
        let ids = try Tensor(shape: [4], in: nil, for: "ids")
        try ids.fill(from: [4, 0, 4, 2])
        expectClose(try GradientCheck.run(layer, input: ids, context: context, checkInput: false),
                    parameters: 1, checkedInput: false)
    }

    @Test func attention() throws {
        var rng = RNG(seed: 3)
        let layer = try Attention(name: "attn", features: 8, heads: 2, sequenceLength: 4, rng: &rng, in: nil)
        let x = try GradientCheck.randomTensor([8, 8], seed: 15)  // 2 sequences of 4
        expectClose(try GradientCheck.run(layer, input: x, context: context), parameters: 4)
    }

    @Test func transformerBlock() throws {
        let layer = try makeLayer(kind: .transformerBlock(features: 8, heads: 2, sequenceLength: 4, mlpRatio: 2),
                                  name: "block", index: 2, seed: 1, in: nil)
        var rng = RNG(seed: 6)
        // Perturb the LayerNorms off (1, 0) so every parameter gets a generic gradient.
        for k in [0, 1, 6, 7] { rng.fillUniform(layer.parameters[k], 0.5, 1.5) }
        let x = try GradientCheck.randomTensor([8, 8], seed: 16)
        expectClose(try GradientCheck.run(layer, input: x, context: context), parameters: 12)
    }

    @Test func softmaxCrossEntropy() throws {
        let layer = try makeLayer(kind: .softmaxCrossEntropy, name: "loss", index: 0, seed: 1, in: nil)
        let ctx = LayerContext(space: nil, label: "loss", targets: [2, 0, 4], lossScale: 0.25)
        let x = try GradientCheck.randomTensor([3, 5], seed: 17, scale: 2)
        expectClose(try GradientCheck.run(layer, input: x, context: ctx), parameters: 0)
    }

    @Test func softmaxCrossEntropyValue() throws {
        // Uniform logits over K classes: loss per row is log K.
        let layer = try SoftmaxCrossEntropy(name: "loss")
        let logits = try Tensor(shape: [2, 4], in: nil, for: "logits")
        let ctx = LayerContext(space: nil, label: "loss", targets: [1, 3], lossScale: 0.5)
        let loss = try layer.forward(logits, ctx).output
        #expect(loss.shape == [1])
        let value = loss.toArray()[0]
        #expect(abs(value - Float(0.5 * 2 * 1.3862944)) < 1e-5, "expected 0.5·2·log 4, got \(value)")
    }
}
