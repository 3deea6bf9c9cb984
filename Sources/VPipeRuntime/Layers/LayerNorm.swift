/// Normalises each row to zero mean and unit variance, then scales and shifts it.
///
///     x [rows, C] -> y [rows, C],  y = (x − mean) · rstd · γ + β,  rstd = 1/√(var + 1e-5)
///     γ [C] = 1, β [C] = 0
///     saved: x [rows, C], mean [rows], rstd [rows]
///
/// Backward (llm.c's form), with n = (x − mean)·rstd and g = dy·γ:
///     dβ += Σ_rows dy,  dγ += Σ_rows dy·n,  dx = (g − mean(g) − n·mean(g·n)) · rstd
public final class LayerNorm: Layer {
    public let name: String
    public let features: Int
    public let epsilon: Float = 1e-5
    private let params: Parameters

    public var parameters: [Tensor] { params.values }
    public var gradients: [Tensor] { params.gradients }

    public init(name: String, label: String? = nil, features: Int, in space: MemorySpace?) throws {
        let label = label ?? "\"\(name)\""
        try ShapeCheck.positive(["features": features], label)
        self.name = name
        self.features = features
        params = try Parameters(shapes: [[features], [features]], in: space, label: label)
        params.values[0].device.fill(params.values[0], with: 1)
    }

    public func place(in space: MemorySpace?) throws { try params.place(in: space) }
    public func adopt(values: [Tensor], gradients: [Tensor]) throws { try params.adopt(values: values, gradients: gradients) }

    public func forward(_ input: Tensor, _ context: LayerContext) throws -> (output: Tensor, saved: [Tensor]) {
        let rows = try ShapeCheck.matrix(input, columns: features, "input", context)
        let output = try context.allocate([rows, features], "output")  // [rows, C]
        let mean = try context.allocate([rows], "mean")                // [rows]
        let rstd = try context.allocate([rows], "rstd")                // [rows]
        context.device.layerNormForward(output: output, mean: mean, rstd: rstd, input: input,
                                        gamma: params.values[0], beta: params.values[1],
                                        rows: rows, features: features, epsilon: epsilon)
        return (output, [input, mean, rstd])
    }

    public func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor? {
        try ShapeCheck.saved(saved, count: 3, context)
        let input = saved[0], mean = saved[1], rstd = saved[2]
        let rows = try ShapeCheck.matrix(input, columns: features, "saved input", context)
        try ShapeCheck.exact(mean, [rows], "saved mean", context)
        try ShapeCheck.exact(rstd, [rows], "saved rstd", context)
        try ShapeCheck.exact(gradOutput, [rows, features], "output gradient", context)
        let gradInput = try context.allocate([rows, features], "input gradient")  // [rows, C]
        context.device.layerNormBackward(gradInput: gradInput, gradGamma: params.gradients[0], gradBeta: params.gradients[1],
                                         gradOutput: gradOutput, input: input, gamma: params.values[0], mean: mean, rstd: rstd,
                                         rows: rows, features: features)
        return gradInput
    }
}
