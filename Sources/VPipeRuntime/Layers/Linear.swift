import CVPipeKernels

/// Fully connected layer, y = x·Wᵀ + b.
///
///     x [rows, in]  ->  y [rows, out]
///     W [out, in], b [out]    uniform ±1/√in (PyTorch's default bound)
///     saved: x
///
/// Both matmuls go through `Gemm.sgemm`; `forwardKernel`/`backwardKernel` are shared with
/// `Attention`, whose projections are the same computation on its own parameter tensors.
public final class Linear: Layer {
    public let name: String
    public let inFeatures: Int
    public let outFeatures: Int
    private let params: Parameters

    public var parameters: [Tensor] { params.values }
    public var gradients: [Tensor] { params.gradients }

    public init(name: String, label: String? = nil, inFeatures: Int, outFeatures: Int,
                rng: inout RNG, in space: MemorySpace?) throws {
        let label = label ?? "\"\(name)\""
        try ShapeCheck.positive(["inFeatures": inFeatures, "outFeatures": outFeatures], label)
        self.name = name
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        params = try Parameters(shapes: [[outFeatures, inFeatures], [outFeatures]], in: space, label: label)
        let bound = 1 / Float(inFeatures).squareRoot()
        for t in params.values { rng.fillUniform(t, -bound, bound) }
    }

    public func place(in space: MemorySpace?) throws { try params.place(in: space) }
    public func adopt(values: [Tensor], gradients: [Tensor]) throws { try params.adopt(values: values, gradients: gradients) }

    public func forward(_ input: Tensor, _ context: LayerContext) throws -> (output: Tensor, saved: [Tensor]) {
        let rows = try ShapeCheck.matrix(input, columns: inFeatures, "input", context)
        let output = try context.allocate([rows, outFeatures], "output")  // [rows, out]
        Linear.forwardKernel(x: input.data, w: params.values[0].data, b: params.values[1].data,
                             y: output.data, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
        return (output, [input])
    }

    public func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor? {
        try ShapeCheck.saved(saved, count: 1, context)
        let x = saved[0]                                                                // [rows, in]
        let rows = try ShapeCheck.matrix(x, columns: inFeatures, "saved input", context)
        try ShapeCheck.exact(gradOutput, [rows, outFeatures], "output gradient", context)  // [rows, out]
        let gradInput = context.needsInputGradient ? try context.allocate([rows, inFeatures], "input gradient") : nil  // [rows, in]
        Linear.backwardKernel(dy: gradOutput.data, x: x.data, w: params.values[0].data,
                              dw: params.gradients[0].data, db: params.gradients[1].data, dx: gradInput?.data,
                              rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
        return gradInput
    }

    /// y [rows, out] = x [rows, in] · Wᵀ [in, out] + b [out].
    static func forwardKernel(x: UnsafePointer<Float>, w: UnsafePointer<Float>, b: UnsafePointer<Float>,
                              y: UnsafeMutablePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int) {
        guard rows > 0 else { return }
        for r in 0..<rows { (y + r * outFeatures).update(from: b, count: outFeatures) }
        Gemm.sgemm(transposeB: true, m: rows, n: outFeatures, k: inFeatures,
                   a: x, lda: inFeatures, b: w, ldb: inFeatures, beta: 1, c: y, ldc: outFeatures)
    }

    /// dW [out, in] += dyᵀ · x;  db [out] += Σ_rows dy;  dx [rows, in] = dy · W (overwritten).
    static func backwardKernel(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                               dw: UnsafeMutablePointer<Float>, db: UnsafeMutablePointer<Float>,
                               dx: UnsafeMutablePointer<Float>?, rows: Int, inFeatures: Int, outFeatures: Int) {
        guard rows > 0 else { return }
        Gemm.sgemm(transposeA: true, m: outFeatures, n: inFeatures, k: rows,
                   a: dy, lda: outFeatures, b: x, ldb: inFeatures, beta: 1, c: dw, ldc: inFeatures)
        vpk_column_sum_add(dy, db, rows, outFeatures)
        guard let dx else { return }  // the model's first layer: no one needs dx
        Gemm.sgemm(m: rows, n: inFeatures, k: outFeatures,
                   a: dy, lda: outFeatures, b: w, ldb: inFeatures, beta: 0, c: dx, ldc: inFeatures)
    }
}
