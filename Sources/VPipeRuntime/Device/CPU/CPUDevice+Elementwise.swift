import CVPipeKernels

/// Element-wise kernels on the CPU device: activations, residual sums, fills.
///
///     ReLU: y = max(x, 0)                        dy/dx = 1 if x > 0 else 0
///     GELU: y = ½x(1 + tanh(u)),                 u = √(2/π)(x + 0.044715x³)   (tanh approximation,
///           dy/dx = ½(1 + tanh u) + ½x(1 − tanh²u)·√(2/π)(1 + 3·0.044715x²)     as in GPT-2)
/// GELU, its derivative and `add` are the vectorised kernels of CVPipeKernels (tanh from their exp).
extension CPUDevice {
    func activationForward(_ function: ActivationFunction, output: Tensor, input: Tensor) {
        let x = pointer(input), y = pointer(output), n = input.count
        switch function {
        case .relu:
            for i in 0..<n { y[i] = x[i] > 0 ? x[i] : 0 }
        case .gelu:
            vpk_gelu_forward(x, y, n)
        }
    }

    func activationBackward(_ function: ActivationFunction, gradInput: Tensor, gradOutput: Tensor, input: Tensor) {
        let x = pointer(input), dy = pointer(gradOutput), dx = pointer(gradInput), n = input.count
        switch function {
        case .relu:
            for i in 0..<n { dx[i] = x[i] > 0 ? dy[i] : 0 }
        case .gelu:
            vpk_gelu_backward(x, dy, dx, n)
        }
    }

    func add(_ a: Tensor, _ b: Tensor) {
        vpk_add(pointer(a), pointer(b), min(a.count, b.count))
    }

    func fill(_ tensor: Tensor, with value: Float) {
        pointer(tensor).update(repeating: value, count: tensor.count)
    }
}
