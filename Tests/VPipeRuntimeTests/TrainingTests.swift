import Testing
import VPipeCore
import VPipeRuntime

/// End to end on one device: a tiny MLP learns a toy problem with the runtime's layers and SGD.
@Suite struct TrainingTests {
    @Test func tinyMLPLossHalvesIn50SGDSteps() throws {
        // 32 points in the plane, 4 classes = the quadrant they fall in.
        var rng = RNG(seed: 2024)
        let rows = 32
        let x = try Tensor(shape: [rows, 2], in: nil, for: "x")
        var targets: [Int32] = []
        var points: [Float] = []
        for _ in 0..<rows {
            let a = rng.uniform(-1, 1), b = rng.uniform(-1, 1)
            points += [a, b]
            targets.append(Int32((a >= 0 ? 0 : 1) + (b >= 0 ? 0 : 2)))
        }
        try x.fill(from: points)
        let kinds: [LayerKind] = [.linear(inFeatures: 2, outFeatures: 16), .activation(.relu),
                                  .linear(inFeatures: 16, outFeatures: 4), .softmaxCrossEntropy]
        let layers = try kinds.enumerated().map { try makeLayer(kind: $1, name: "l\($0)", index: $0, seed: 7, in: nil) }
        let opt = SGD(learningRate: 0.5, momentum: 0.9)
        let states = try layers.map { try opt.makeState(for: $0.parameters, in: nil, label: $0.name) }
        let ctx = LayerContext(space: nil, label: "mlp", targets: targets, lossScale: 1 / Float(rows))

        var losses: [Float] = []
        for iteration in 1...50 {
            var h = x
            var stash: [[Tensor]] = []
            for l in layers {
                let (out, saved) = try l.forward(h, ctx)
                stash.append(saved)
                h = out
            }
            losses.append(h.toArray()[0])
            var grad: Tensor? = try Tensor(shape: [1], in: nil, for: "dloss")
            try grad?.fill(from: [1])
            for (l, saved) in zip(layers, stash).reversed() {
                guard let g = grad else { break }
                grad = try l.backward(g, saved: saved, ctx)
            }
            for (l, s) in zip(layers, states) {
                opt.step(parameters: l.parameters, gradients: l.gradients, state: s, iteration: iteration)
                for g in l.gradients { g.zero() }
            }
        }
        let first = losses[0], last = losses[losses.count - 1]
        #expect(abs(first - Float(1.386)) < 0.3, "initial loss should be near log 4, got \(first)")
        #expect(last < 0.5 * first, "expected the loss to fall by more than half: \(first) -> \(last)")
    }
}
