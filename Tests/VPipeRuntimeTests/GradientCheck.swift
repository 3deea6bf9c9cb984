import Testing
import VPipeRuntime

/// Finite-difference gradient check shared by the layer tests.
///
/// The layer's output is reduced to a scalar through a fixed random projection,
/// L = Σ output ⊙ R (accumulated in Double), so every output element matters. The analytic
/// gradients come from one backward with dOutput = R; each input and parameter element is
/// then perturbed by ±eps and dL/dθ ≈ (L(θ+eps) − L(θ−eps)) / 2eps.
///
/// Error per tensor: max_i |analytic_i − numeric_i| / max(1e-3, max_i |numeric_i|).
enum GradientCheck {
    struct Result: CustomStringConvertible {
        var what: String
        var error: Float
        var index: Int
        var analytic: Float
        var numeric: Float
        var description: String {
            "\(what): relative error \(error) (worst at \(index): analytic \(analytic), numeric \(numeric))"
        }
    }

    static func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) throws -> Tensor {
        let t = try Tensor(shape: shape, in: nil, for: "test input")
        var rng = RNG(seed: seed, stream: 999)
        rng.fillUniform(t, -scale, scale)
        return t
    }

    static func projected(_ layer: Layer, _ input: Tensor, _ r: Tensor, _ context: LayerContext) throws -> Double {
        let out = try layer.forward(input, context).output.toArray()
        var sum: Double = 0
        for (o, w) in zip(out, r.toArray()) { sum += Double(o) * Double(w) }
        return sum
    }

    /// Checks the input gradient (when `checkInput`) and every parameter gradient.
    static func run(_ layer: Layer, input: Tensor, context: LayerContext, checkInput: Bool = true,
                    eps: Float = 1e-2) throws -> [Result] {
        for g in layer.gradients { g.zero() }
        let (out, saved) = try layer.forward(input, context)
        let r = try randomTensor(out.shape, seed: 7)
        let dx = try layer.backward(r, saved: saved, context)
        var results: [Result] = []

        func numeric(_ t: Tensor, _ i: Int) throws -> Float {
            var values = t.toArray()
            let keep = values[i]
            values[i] = keep + eps
            try t.fill(from: values)
            let plus = try projected(layer, input, r, context)
            values[i] = keep - eps
            try t.fill(from: values)
            let minus = try projected(layer, input, r, context)
            values[i] = keep
            try t.fill(from: values)
            return Float((plus - minus) / Double(2 * eps))
        }
        func compare(_ what: String, _ analytic: Tensor, _ target: Tensor) throws {
            var num = [Float](repeating: 0, count: target.count)
            for i in 0..<target.count { num[i] = try numeric(target, i) }
            let scale = max(1e-3, num.map(abs).max() ?? 0)
            var worst = Result(what: what, error: 0, index: 0, analytic: 0, numeric: 0)
            let values = analytic.toArray()
            for i in 0..<target.count {
                let e = abs(values[i] - num[i]) / scale
                if e >= worst.error { worst = Result(what: what, error: e, index: i, analytic: values[i], numeric: num[i]) }
            }
            results.append(worst)
        }

        if checkInput {
            guard let dx else { throw RuntimeError.failed("\(layer.name) returned no input gradient") }
            try compare("\(layer.name) input", dx, input)
        } else {
            #expect(dx == nil, "\(layer.name): expected no input gradient")
        }
        for (k, (p, g)) in zip(layer.parameters, layer.gradients).enumerated() {
            try compare("\(layer.name) parameter \(k) \(p.shape)", g, p)
        }
        return results
    }
}
