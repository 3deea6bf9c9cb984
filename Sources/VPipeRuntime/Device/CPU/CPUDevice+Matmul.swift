import CVPipeKernels
import CBLAS

/// Matrix products on the CPU device: OpenBLAS sgemm, row-major.
extension CPUDevice {
    /// C (m×n) = alpha · op(A) · op(B) + beta · C,  op(A) is m×k, op(B) is k×n.
    @inline(__always) final func sgemm(
        transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
    }

    func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
              a: Tensor, aOffset: Int, lda: Int, b: Tensor, bOffset: Int, ldb: Int,
              beta: Float, c: Tensor, cOffset: Int, ldc: Int) {
        sgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
              a: pointer(a) + aOffset, lda: lda, b: pointer(b) + bOffset, ldb: ldb, beta: beta, c: pointer(c) + cOffset, ldc: ldc)
    }

    func linearForward(output: Tensor, input: Tensor, weight: Tensor, bias: Tensor,
                       rows: Int, inFeatures: Int, outFeatures: Int) {
        linearForward(y: pointer(output), x: pointer(input), w: pointer(weight), b: pointer(bias),
                      rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
    }

    func linearBackward(gradInput: Tensor?, gradWeight: Tensor, gradBias: Tensor, gradOutput: Tensor,
                        input: Tensor, weight: Tensor, rows: Int, inFeatures: Int, outFeatures: Int) {
        linearBackward(dx: gradInput.map(pointer), dw: pointer(gradWeight), db: pointer(gradBias), dy: pointer(gradOutput),
                       x: pointer(input), w: pointer(weight), rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
    }

    /// y [rows, out] = x [rows, in] · Wᵀ [in, out] + b [out].
    final func linearForward(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                             b: UnsafePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int) {
        guard rows > 0 else { return }
        for r in 0..<rows { (y + r * outFeatures).update(from: b, count: outFeatures) }
        sgemm(transposeB: true, m: rows, n: outFeatures, k: inFeatures,
              a: x, lda: inFeatures, b: w, ldb: inFeatures, beta: 1, c: y, ldc: outFeatures)
    }

    /// dW [out, in] += dyᵀ · x;  db [out] += Σ_rows dy;  dx [rows, in] = dy · W (overwritten).
    final func linearBackward(dx: UnsafeMutablePointer<Float>?, dw: UnsafeMutablePointer<Float>, db: UnsafeMutablePointer<Float>,
                              dy: UnsafePointer<Float>, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                              rows: Int, inFeatures: Int, outFeatures: Int) {
        guard rows > 0 else { return }
        sgemm(transposeA: true, m: outFeatures, n: inFeatures, k: rows,
              a: dy, lda: outFeatures, b: x, ldb: inFeatures, beta: 1, c: dw, ldc: inFeatures)
        vpk_column_sum_add(dy, db, rows, outFeatures)
        guard let dx else { return }  // the model's first layer: no one needs dx
        sgemm(m: rows, n: inFeatures, k: outFeatures,
              a: dy, lda: outFeatures, b: w, ldb: inFeatures, beta: 0, c: dx, ldc: inFeatures)
    }
}
