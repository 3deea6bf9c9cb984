import CVPipeKernels
import Foundation
import Testing

/// The vectorised kernels (CVPipeKernels) on both of their code paths — AVX2+FMA where the
/// CPU has it, and the baseline copy every x86-64 CPU runs — against double-precision
/// references. A CI machine without AVX2 runs only the baseline, so both are tested here.
@Suite(.serialized) struct KernelPathTests {
    /// Deterministic values in [-scale, scale].
    static func values(_ n: Int, seed: UInt64, scale: Float = 3) -> [Float] {
        var s = seed
        return (0..<n).map { _ in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return (Float(s >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    /// Runs `body` on the baseline path and on the CPU's own choice.
    static func onBothPaths(_ body: (String) throws -> Void) rethrows {
        vpk_force_baseline(1)
        defer { vpk_force_baseline(0) }
        try body(String(cString: vpk_isa()))
        vpk_force_baseline(0)
        try body(String(cString: vpk_isa()))
    }

    static func maxError(_ a: [Float], _ b: [Double]) -> Double {
        zip(a, b).map { abs(Double($0) - $1) }.max() ?? 0
    }

    @Test func causalSoftmaxMatchesReference() {
        let t = 37, blocks = 3
        let input = Self.values(blocks * t * t, seed: 1, scale: 8)
        var reference = [Double](repeating: 0, count: input.count)
        for b in 0..<blocks { for i in 0..<t {
            let row = (b * t + i) * t
            let m = input[row...(row + i)].map(Double.init).max()!
            let sum = input[row...(row + i)].reduce(0.0) { $0 + exp(Double($1) - m) }
            for j in 0...i { reference[row + j] = exp(Double(input[row + j]) - m) / sum }
        } }
        Self.onBothPaths { isa in
            var out = input
            vpk_softmax_causal(&out, blocks, t)
            let err = Self.maxError(out, reference)
            #expect(err < 1e-6, "\(isa): causal softmax differs from the double reference by \(err), expected < 1e-6")
        }
    }

    @Test func geluAndItsDerivativeMatchReference() {
        let n = 1001
        let x = Self.values(n, seed: 2, scale: 12)
        func gelu(_ v: Double) -> Double { 0.5 * v * (1 + tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v))) }
        let reference = x.map { gelu(Double($0)) }
        let derivative = x.map { v -> Double in let h = 1e-4; return (gelu(Double(v) + h) - gelu(Double(v) - h)) / (2 * h) }
        Self.onBothPaths { isa in
            var y = [Float](repeating: 0, count: n), dx = [Float](repeating: 0, count: n)
            let ones = [Float](repeating: 1, count: n)
            vpk_gelu_forward(x, &y, n)
            vpk_gelu_backward(x, ones, &dx, n)
            let e1 = Self.maxError(y, reference), e2 = Self.maxError(dx, derivative)
            #expect(e1 < 1e-5, "\(isa): GELU differs from the double reference by \(e1), expected < 1e-5")
            #expect(e2 < 1e-4, "\(isa): GELU' differs from the central difference by \(e2), expected < 1e-4")
        }
    }

    @Test func layerNormMatchesReference() {
        let rows = 5, c = 131  // not a multiple of the 8 lanes: the tails are exercised
        let x = Self.values(rows * c, seed: 3), gamma = Self.values(c, seed: 4), beta = Self.values(c, seed: 5)
        var reference = [Double](repeating: 0, count: rows * c)
        for r in 0..<rows {
            let row = x[(r * c)..<((r + 1) * c)].map(Double.init)
            let m = row.reduce(0, +) / Double(c)
            let v = row.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(c)
            for k in 0..<c { reference[r * c + k] = (row[k] - m) / (v + 1e-5).squareRoot() * Double(gamma[k]) + Double(beta[k]) }
        }
        Self.onBothPaths { isa in
            var y = [Float](repeating: 0, count: rows * c), mean = [Float](repeating: 0, count: rows), rstd = mean
            vpk_layernorm_forward(x, gamma, beta, &y, &mean, &rstd, rows, c, 1e-5)
            let err = Self.maxError(y, reference)
            #expect(err < 1e-5, "\(isa): LayerNorm differs from the double reference by \(err), expected < 1e-5")
        }
    }

    @Test func crossEntropyMatchesReference() {
        let rows = 6, k = 259
        let logits = Self.values(rows * k, seed: 6, scale: 10)
        let targets: [Int32] = (0..<rows).map { Int32(($0 * 97) % k) }
        var loss = 0.0
        var grad = [Double](repeating: 0, count: rows * k)
        for r in 0..<rows {
            let z = logits[(r * k)..<((r + 1) * k)].map(Double.init)
            let m = z.max()!, sum = z.reduce(0) { $0 + exp($1 - m) }
            loss += m + log(sum) - z[Int(targets[r])]
            for j in 0..<k { grad[r * k + j] = (exp(z[j] - m) / sum - (j == Int(targets[r]) ? 1 : 0)) * 0.5 }
        }
        Self.onBothPaths { isa in
            let got = vpk_cross_entropy_forward(logits, targets, rows, k)
            var dz = [Float](repeating: 0, count: rows * k)
            vpk_cross_entropy_backward(logits, targets, &dz, rows, k, 0.5)
            #expect(abs(got - loss) < 1e-4 * abs(loss), "\(isa): cross-entropy \(got), expected \(loss)")
            let err = Self.maxError(dz, grad)
            #expect(err < 1e-6, "\(isa): cross-entropy gradient differs by \(err), expected < 1e-6")
        }
    }

    /// The property the pipeline's bit-identical losses rest on: a kernel's result does not
    /// depend on where the rows sit in memory (no alignment-dependent peeling).
    @Test func resultsDoNotDependOnAlignment() {
        let c = 128
        let x = Self.values(c, seed: 7), gamma = [Float](repeating: 1, count: c), beta = [Float](repeating: 0, count: c)
        var shifted = [Float](repeating: 0, count: c + 1)
        for i in 0..<c { shifted[i + 1] = x[i] }
        var a = [Float](repeating: 0, count: c), b = [Float](repeating: 0, count: c + 1)
        var m = [Float](repeating: 0, count: 1), s = m
        vpk_layernorm_forward(x, gamma, beta, &a, &m, &s, 1, c, 1e-5)
        shifted.withUnsafeBufferPointer { src in
            b.withUnsafeMutableBufferPointer { dst in
                vpk_layernorm_forward(src.baseAddress! + 1, gamma, beta, dst.baseAddress! + 1, &m, &s, 1, c, 1e-5)
            }
        }
        #expect(Array(b[1...]) == a, "LayerNorm of the same row at an address 4 bytes further gave different bits")
    }
}
