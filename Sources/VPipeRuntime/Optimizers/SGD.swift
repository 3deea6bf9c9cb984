/// Stochastic gradient descent with (PyTorch-style) momentum:
///
///     v = μ·v + g;  p −= lr·v          (μ = 0: p −= lr·g, and no state)
///
/// State: one velocity tensor per parameter when μ > 0, none otherwise.
public struct SGD: Optimizer {
    public var learningRate: Float
    public var momentum: Float

    public init(learningRate: Float, momentum: Float = 0) {
        self.learningRate = learningRate
        self.momentum = momentum
    }

    public var statesPerParameter: Int { momentum == 0 ? 0 : 1 }
    /// Weights + gradients + velocity (or just weights + gradients without momentum).
    public var stateBytesPerParamByte: Double { Double(2 + statesPerParameter) }

    public func makeState(for parameters: [Tensor], in space: MemorySpace?, label: String) throws -> [[Tensor]] {
        guard momentum != 0 else { return parameters.map { _ in [] } }
        return try parameters.map { [try Tensor(shape: $0.shape, in: space, for: "\(label) momentum")] }
    }

    /// Parameters whose gradient or state does not match in size are left untouched.
    public func step(parameters: [Tensor], gradients: [Tensor], state: [[Tensor]], iteration: Int) {
        for (i, (p, g)) in zip(parameters, gradients).enumerated() where p.count == g.count {
            if momentum == 0 {
                p.device.sgdStep(parameter: p, gradient: g, velocity: nil, learningRate: learningRate, momentum: 0)
            } else {
                guard i < state.count, let v = state[i].first, v.count == p.count else { continue }
                p.device.sgdStep(parameter: p, gradient: g, velocity: v, learningRate: learningRate, momentum: momentum)
            }
        }
    }
}
