/// Fully connected layer, y = x·Wᵀ + b.
///
///     x [rows, in]  ->  y [rows, out]
///     W [out, in], b [out]    uniform ±1/√in (PyTorch's default bound)
///     saved: x
///
/// Both matmuls are the device's `linearForward`/`linearBackward`, which `Attention`'s
/// projections use too.
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
        context.device.linearForward(output: output, input: input, weight: params.values[0], bias: params.values[1],
                                     rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
        return (output, [input])
    }

    public func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor? {
        try ShapeCheck.saved(saved, count: 1, context)
        let x = saved[0]                                                                // [rows, in]
        let rows = try ShapeCheck.matrix(x, columns: inFeatures, "saved input", context)
        try ShapeCheck.exact(gradOutput, [rows, outFeatures], "output gradient", context)  // [rows, out]
        let gradInput = context.needsInputGradient ? try context.allocate([rows, inFeatures], "input gradient") : nil  // [rows, in]
        context.device.linearBackward(gradInput: gradInput, gradWeight: params.gradients[0], gradBias: params.gradients[1],
                                      gradOutput: gradOutput, input: x, weight: params.values[0],
                                      rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
        return gradInput
    }
}
