import Testing
import VPipeRuntime

@Suite struct GemmTests {
    @Test func multipliesRowMajorMatrices() {
        // A (2×3) · B (3×2)
        let a: [Float] = [1, 2, 3, 4, 5, 6]
        let b: [Float] = [7, 8, 9, 10, 11, 12]
        var c = [Float](repeating: 0, count: 4)
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    Gemm.sgemm(m: 2, n: 2, k: 3, a: pa.baseAddress!, lda: 3, b: pb.baseAddress!, ldb: 2,
                               c: pc.baseAddress!, ldc: 2)
                }
            }
        }
        #expect(c == [58, 64, 139, 154], "expected A·B = [58, 64, 139, 154]")
    }

    @Test func transposedOperand() {
        // Aᵀ where A is stored 3×2; Aᵀ (2×3) · I (3×3) = Aᵀ
        let a: [Float] = [1, 4, 2, 5, 3, 6]
        let eye: [Float] = [1, 0, 0, 0, 1, 0, 0, 0, 1]
        var c = [Float](repeating: 0, count: 6)
        a.withUnsafeBufferPointer { pa in
            eye.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    Gemm.sgemm(transposeA: true, m: 2, n: 3, k: 3, a: pa.baseAddress!, lda: 2, b: pb.baseAddress!, ldb: 3,
                               c: pc.baseAddress!, ldc: 3)
                }
            }
        }
        #expect(c == [1, 2, 3, 4, 5, 6])
    }
}
