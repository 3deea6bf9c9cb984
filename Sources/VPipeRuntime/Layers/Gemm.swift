import CBLAS

/// Single-precision matrix multiply over OpenBLAS, row-major:
///   C (m×n) = alpha · op(A) · op(B) + beta · C,  op(A) is m×k, op(B) is k×n.
/// The runtime's layers (the runtime issue) build on this; it is the `gemm` of the `Device`
/// seam for the CPU device.
public enum Gemm {
    public static func sgemm(
        transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
    }
}
