import Testing
import VPipeRuntime

/// The device's GEMM (row-major, strided views) on the host CPU device.
@Suite struct GemmTests {
    func tensor(_ values: [Float], _ shape: [Int]) throws -> Tensor {
        let t = try Tensor(shape: shape, in: nil, for: "test")
        try t.fill(from: values)
        return t
    }

    @Test func multipliesRowMajorMatrices() throws {
        // A (2×3) · B (3×2)
        let a = try tensor([1, 2, 3, 4, 5, 6], [2, 3]), b = try tensor([7, 8, 9, 10, 11, 12], [3, 2])
        let c = try Tensor(shape: [2, 2], in: nil, for: "c")
        c.device.gemm(transposeA: false, transposeB: false, m: 2, n: 2, k: 3, alpha: 1, a: a, aOffset: 0, lda: 3,
                      b: b, bOffset: 0, ldb: 2, beta: 0, c: c, cOffset: 0, ldc: 2)
        #expect(c.toArray() == [58, 64, 139, 154], "expected A·B = [58, 64, 139, 154], got \(c.toArray())")
    }

    @Test func transposedOperand() throws {
        // Aᵀ where A is stored 3×2; Aᵀ (2×3) · I (3×3) = Aᵀ
        let a = try tensor([1, 4, 2, 5, 3, 6], [3, 2]), eye = try tensor([1, 0, 0, 0, 1, 0, 0, 0, 1], [3, 3])
        let c = try Tensor(shape: [2, 3], in: nil, for: "c")
        c.device.gemm(transposeA: true, transposeB: false, m: 2, n: 3, k: 3, alpha: 1, a: a, aOffset: 0, lda: 2,
                      b: eye, bOffset: 0, ldb: 3, beta: 0, c: c, cOffset: 0, ldc: 3)
        #expect(c.toArray() == [1, 2, 3, 4, 5, 6], "expected Aᵀ, got \(c.toArray())")
    }

    @Test func stridedViewsAtOffsets() throws {
        // The second 2×2 block of a 2×4 matrix times I, written into the right half of a 2×4 result.
        let a = try tensor([1, 2, 3, 4, 5, 6, 7, 8], [2, 4]), eye = try tensor([1, 0, 0, 1], [2, 2])
        let c = try Tensor(shape: [2, 4], in: nil, for: "c")
        c.device.gemm(transposeA: false, transposeB: false, m: 2, n: 2, k: 2, alpha: 2, a: a, aOffset: 2, lda: 4,
                      b: eye, bOffset: 0, ldb: 2, beta: 0, c: c, cOffset: 2, ldc: 4)
        #expect(c.toArray() == [0, 0, 6, 8, 0, 0, 14, 16], "expected 2·[[3,4],[7,8]] in the right half, got \(c.toArray())")
    }
}
