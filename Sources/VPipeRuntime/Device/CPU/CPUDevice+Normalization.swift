import CVPipeKernels

/// LayerNorm on the CPU device (llm.c's forward and backward): the vectorised kernels of
/// CVPipeKernels.
extension CPUDevice {
    func layerNormForward(output: Tensor, mean: Tensor, rstd: Tensor, input: Tensor, gamma: Tensor, beta: Tensor,
                          rows: Int, features: Int, epsilon: Float) {
        vpk_layernorm_forward(pointer(input), pointer(gamma), pointer(beta), pointer(output), pointer(mean), pointer(rstd),
                              rows, features, epsilon)
    }

    /// With n = (x − mean)·rstd and g = dy·γ: dβ += Σ_rows dy,  dγ += Σ_rows dy·n,
    /// dx = (g − mean(g) − n·mean(g·n)) · rstd.
    func layerNormBackward(gradInput: Tensor, gradGamma: Tensor, gradBeta: Tensor, gradOutput: Tensor,
                           input: Tensor, gamma: Tensor, mean: Tensor, rstd: Tensor, rows: Int, features: Int) {
        vpk_layernorm_backward(pointer(input), pointer(mean), pointer(rstd), pointer(gamma), pointer(gradOutput), pointer(gradInput),
                               pointer(gradGamma), pointer(gradBeta), rows, features)
    }
}
