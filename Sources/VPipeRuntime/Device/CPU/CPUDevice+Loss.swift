import CVPipeKernels

/// Softmax cross-entropy on the CPU device: the vectorised kernels of CVPipeKernels (the
/// backward recomputes the softmax into the gradient: no [rows, K] stash).
extension CPUDevice {
    func crossEntropyForward(loss: Tensor, logits: Tensor, targets: [Int32], rows: Int, classes: Int, scale: Float) {
        let total = targets.withUnsafeBufferPointer { vpk_cross_entropy_forward(pointer(logits), $0.baseAddress, rows, classes) }
        pointer(loss)[0] = Float(total) * scale
    }

    func crossEntropyBackward(gradLogits: Tensor, gradLoss: Tensor, logits: Tensor, targets: [Int32],
                              rows: Int, classes: Int, scale: Float) {
        let scale = scale * pointer(gradLoss)[0]
        targets.withUnsafeBufferPointer {
            vpk_cross_entropy_backward(pointer(logits), $0.baseAddress, pointer(gradLogits), rows, classes, scale)
        }
    }
}
