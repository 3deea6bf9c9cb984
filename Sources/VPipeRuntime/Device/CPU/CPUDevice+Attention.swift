import CVPipeKernels

/// Causal multi-head attention on the CPU device. Per (sequence, head) the two products are
/// sgemm calls on strided views of qkv (leading dimension 3C), no copies or transposes; the
/// masked upper triangle is computed and discarded, which costs less than splitting the
/// product into rows. OpenBLAS 0.3.21 (Debian 12) has no batched GEMM, so the heads cannot
/// share one call. The causal softmax and its backward are the vectorised kernels of
/// CVPipeKernels, one call per [T, T] block while it is still in L1.
///
///     qkv  [B·T, 3C]   (q | k | v, head h at h·hs, hs = C/H)
///     att  [B, H, T, T] = softmax(q·kᵀ/√hs), 0 above the diagonal
///     out  [B·T, C]     = att·v, heads side by side
extension CPUDevice {
    func attentionForward(output: Tensor, attention: Tensor, qkv: Tensor,
                          sequences b: Int, sequenceLength t: Int, heads: Int, features c: Int) {
        let hs = c / heads
        let qkv = pointer(qkv), att = pointer(attention), atty = pointer(output)
        let scale = 1 / Float(hs).squareRoot()
        for s in 0..<b {
            for h in 0..<heads {
                let q = qkv + s * t * 3 * c + h * hs, k = q + c, v = q + 2 * c  // [T, hs] each, stride 3C
                let a = att + (s * heads + h) * t * t                            // [T, T]
                // a = q·kᵀ/√hs
                sgemm(transposeB: true, m: t, n: t, k: hs, alpha: scale, a: q, lda: 3 * c, b: k, ldb: 3 * c, c: a, ldc: t)
                vpk_softmax_causal(a, 1, t)
                // out[s, :, h] = a·v
                sgemm(m: t, n: hs, k: t, a: a, lda: t, b: v, ldb: 3 * c, c: atty + s * t * c + h * hs, ldc: c)
            }
        }
    }

    func attentionBackward(gradQKV: Tensor, scratch: Tensor, gradOutput: Tensor, qkv: Tensor, attention: Tensor,
                           sequences b: Int, sequenceLength t: Int, heads: Int, features c: Int) {
        let hs = c / heads
        let qkv = pointer(qkv), att = pointer(attention), datty = pointer(gradOutput), dqkv = pointer(gradQKV)
        let da = pointer(scratch)                                                  // [T, T], one head at a time
        let scale = 1 / Float(hs).squareRoot()
        for s in 0..<b {
            for h in 0..<heads {
                let off = s * t * 3 * c + h * hs
                let q = qkv + off, k = q + c, v = q + 2 * c                        // [T, hs], stride 3C
                let dq = dqkv + off, dk = dq + c, dv = dq + 2 * c
                let a = att + (s * heads + h) * t * t                              // [T, T]
                let dout = datty + s * t * c + h * hs                              // [T, hs], stride C
                // datt = dout·vᵀ;  dv = aᵀ·dout
                sgemm(transposeB: true, m: t, n: t, k: hs, a: dout, lda: c, b: v, ldb: 3 * c, c: da, ldc: t)
                sgemm(transposeA: true, m: t, n: hs, k: t, a: a, lda: t, b: dout, ldb: c, c: dv, ldc: 3 * c)
                // softmax backward, in place: dpre = a ⊙ (datt − Σ a⊙datt) / √hs  (0 above the diagonal)
                vpk_softmax_causal_backward(a, da, 1, t, scale)
                // dq = dpre·k;  dk = dpreᵀ·q
                sgemm(m: t, n: hs, k: t, a: da, lda: t, b: k, ldb: 3 * c, c: dq, ldc: 3 * c)
                sgemm(transposeA: true, m: t, n: hs, k: t, a: da, lda: t, b: q, ldb: 3 * c, c: dk, ldc: 3 * c)
            }
        }
    }
}
