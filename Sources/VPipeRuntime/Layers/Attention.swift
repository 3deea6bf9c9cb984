import CVPipeKernels

/// Causal multi-head self-attention over rows grouped into sequences of T consecutive rows
/// (rows = B·T); H heads of size hs = C/H.
///
///     x    [rows, C]
///     qkv  [rows, 3C] = x·Wqkvᵀ + bqkv        Wqkv [3C, C], bqkv [3C]   (q | k | v, head h at h·hs)
///     att  [B, H, T, T] = softmax(q·kᵀ/√hs), masked to t2 <= t (zeros above the diagonal)
///     atty [rows, C]  = att·v                  (heads side by side)
///     y    [rows, C]  = atty·Woᵀ + bo          Wo [C, C], bo [C]
///     saved: x, qkv, att, atty
///
/// Per (sequence, head) the two products are `Gemm.sgemm` calls on strided views of qkv
/// (leading dimension 3C), no copies or transposes; the masked upper triangle is computed and
/// discarded, which costs less than splitting the product into rows. OpenBLAS 0.3.21 (Debian
/// 12) has no batched GEMM, so the heads cannot share one call. The causal softmax and its
/// backward are the vectorised kernels of CVPipeKernels, one call per [T, T] block while it
/// is still in L1.
public final class Attention: Layer {
    public let name: String
    public let features: Int
    public let heads: Int
    public let sequenceLength: Int
    private let params: Parameters

    public var parameters: [Tensor] { params.values }
    public var gradients: [Tensor] { params.gradients }

    public init(name: String, label: String? = nil, features: Int, heads: Int, sequenceLength: Int,
                rng: inout RNG, in space: MemorySpace?) throws {
        let label = label ?? "\"\(name)\""
        try ShapeCheck.positive(["features": features, "heads": heads, "sequenceLength": sequenceLength], label)
        guard features % heads == 0 else {
            throw RuntimeError.invalidShape("\(label): features \(features) is not a multiple of heads \(heads)")
        }
        self.name = name
        self.features = features
        self.heads = heads
        self.sequenceLength = sequenceLength
        let c = features
        params = try Parameters(shapes: [[3 * c, c], [3 * c], [c, c], [c]], in: space, label: label)
        let bound = 1 / Float(c).squareRoot()  // both projections take C inputs
        for t in params.values { rng.fillUniform(t, -bound, bound) }
    }

    public func place(in space: MemorySpace?) throws { try params.place(in: space) }
    public func adopt(values: [Tensor], gradients: [Tensor]) throws { try params.adopt(values: values, gradients: gradients) }

    private func sequences(_ rows: Int, _ context: LayerContext) throws -> Int {
        guard rows % sequenceLength == 0 else {
            throw RuntimeError.invalidShape(
                "\(context.label): \(rows) rows are not a whole number of sequences of \(sequenceLength) rows")
        }
        return rows / sequenceLength
    }

    public func forward(_ input: Tensor, _ context: LayerContext) throws -> (output: Tensor, saved: [Tensor]) {
        let c = features, t = sequenceLength, hs = c / heads
        let rows = try ShapeCheck.matrix(input, columns: c, "input", context)
        let b = try sequences(rows, context)
        let w = params.values
        let qkv = try context.allocate([rows, 3 * c], "qkv")            // [rows, 3C]
        Linear.forwardKernel(x: input.data, w: w[0].data, b: w[1].data, y: qkv.data,
                             rows: rows, inFeatures: c, outFeatures: 3 * c)
        let att = try context.allocate([b, heads, t, t], "attention")   // [B, H, T, T]
        let atty = try context.allocate([rows, c], "attention values")  // [rows, C]
        let scale = 1 / Float(hs).squareRoot()
        for s in 0..<b {
            for h in 0..<heads {
                let q = qkv.data + s * t * 3 * c + h * hs, k = q + c, v = q + 2 * c  // [T, hs] each, stride 3C
                let a = att.data + (s * heads + h) * t * t                             // [T, T]
                // a = q·kᵀ/√hs
                Gemm.sgemm(transposeB: true, m: t, n: t, k: hs, alpha: scale,
                           a: q, lda: 3 * c, b: k, ldb: 3 * c, c: a, ldc: t)
                vpk_softmax_causal(a, 1, t)
                // atty[s, :, h] = a·v
                Gemm.sgemm(m: t, n: hs, k: t, a: a, lda: t, b: v, ldb: 3 * c,
                           c: atty.data + s * t * c + h * hs, ldc: c)
            }
        }
        let output = try context.allocate([rows, c], "output")          // [rows, C]
        Linear.forwardKernel(x: atty.data, w: w[2].data, b: w[3].data, y: output.data,
                             rows: rows, inFeatures: c, outFeatures: c)
        return (output, [input, qkv, att, atty])
    }

    public func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor? {
        try ShapeCheck.saved(saved, count: 4, context)
        let c = features, t = sequenceLength, hs = c / heads
        let input = saved[0], qkv = saved[1], att = saved[2], atty = saved[3]
        let rows = try ShapeCheck.matrix(input, columns: c, "saved input", context)
        let b = try sequences(rows, context)
        try ShapeCheck.exact(qkv, [rows, 3 * c], "saved qkv", context)
        try ShapeCheck.exact(att, [b, heads, t, t], "saved attention", context)
        try ShapeCheck.exact(atty, [rows, c], "saved attention values", context)
        try ShapeCheck.exact(gradOutput, [rows, c], "output gradient", context)
        let w = params.values, g = params.gradients
        let scale = 1 / Float(hs).squareRoot()

        // Output projection: dWo, dbo += …; datty = dy·Wo
        let datty = try context.allocate([rows, c], "attention values gradient")  // [rows, C]
        Linear.backwardKernel(dy: gradOutput.data, x: atty.data, w: w[2].data, dw: g[2].data, db: g[3].data,
                              dx: datty.data, rows: rows, inFeatures: c, outFeatures: c)

        let dqkv = try context.allocate([rows, 3 * c], "qkv gradient")            // [rows, 3C]
        let datt = try context.allocate([t, t], "attention gradient")             // [T, T], one head at a time
        let da = datt.data
        for s in 0..<b {
            for h in 0..<heads {
                let off = s * t * 3 * c + h * hs
                let q = qkv.data + off, k = q + c, v = q + 2 * c                  // [T, hs], stride 3C
                let dq = dqkv.data + off, dk = dq + c, dv = dq + 2 * c
                let a = att.data + (s * heads + h) * t * t                         // [T, T]
                let dout = datty.data + s * t * c + h * hs                         // [T, hs], stride C
                // datt = dout·vᵀ;  dv = aᵀ·dout
                Gemm.sgemm(transposeB: true, m: t, n: t, k: hs, a: dout, lda: c, b: v, ldb: 3 * c, c: da, ldc: t)
                Gemm.sgemm(transposeA: true, m: t, n: hs, k: t, a: a, lda: t, b: dout, ldb: c, c: dv, ldc: 3 * c)
                // softmax backward, in place: dpre = a ⊙ (datt − Σ a⊙datt) / √hs  (0 above the diagonal)
                vpk_softmax_causal_backward(a, da, 1, t, scale)
                // dq = dpre·k;  dk = dpreᵀ·q
                Gemm.sgemm(m: t, n: hs, k: t, a: da, lda: t, b: k, ldb: 3 * c, c: dq, ldc: 3 * c)
                Gemm.sgemm(transposeA: true, m: t, n: hs, k: t, a: da, lda: t, b: q, ldb: 3 * c, c: dk, ldc: 3 * c)
            }
        }

        // qkv projection: dWqkv, dbqkv += …; dx = dqkv·Wqkv
        let gradInput = try context.allocate([rows, c], "input gradient")         // [rows, C]
        Linear.backwardKernel(dy: dqkv.data, x: input.data, w: w[0].data, dw: g[0].data, db: g[1].data,
                              dx: gradInput.data, rows: rows, inFeatures: c, outFeatures: 3 * c)
        return gradInput
    }
}
