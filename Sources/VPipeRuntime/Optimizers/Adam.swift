#if canImport(Glibc)
import Glibc
#endif

/// Adam (Kingma & Ba 2015) with bias correction, at iteration t (from 1):
///
///     m = β1·m + (1 − β1)·g;  v = β2·v + (1 − β2)·g²
///     p −= lr · (m / (1 − β1ᵗ)) / (√(v / (1 − β2ᵗ)) + ε)
///
/// State: two tensors per parameter (m, v).
public struct Adam: Optimizer {
    public var learningRate: Float
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float

    public init(learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
    }

    public var statesPerParameter: Int { 2 }
    /// Weights + gradients + m + v.
    public var stateBytesPerParamByte: Double { Double(2 + statesPerParameter) }

    public func makeState(for parameters: [Tensor], in space: MemorySpace?, label: String) throws -> [[Tensor]] {
        try parameters.map {
            [try Tensor(shape: $0.shape, in: space, for: "\(label) Adam m"),
             try Tensor(shape: $0.shape, in: space, for: "\(label) Adam v")]
        }
    }

    /// Parameters whose gradient or state does not match in size are left untouched.
    public func step(parameters: [Tensor], gradients: [Tensor], state: [[Tensor]], iteration: Int) {
        let t = Float(max(iteration, 1))
        let c1 = 1 - powf(beta1, t), c2 = 1 - powf(beta2, t)
        for (i, (p, g)) in zip(parameters, gradients).enumerated() where p.count == g.count {
            guard i < state.count, state[i].count == 2, state[i][0].count == p.count, state[i][1].count == p.count
            else { continue }
            p.device.adamStep(parameter: p, gradient: g, m: state[i][0], v: state[i][1], learningRate: learningRate,
                              beta1: beta1, beta2: beta2, epsilon: epsilon, biasCorrection1: c1, biasCorrection2: c2)
        }
    }
}
