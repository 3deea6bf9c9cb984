import VPipeCore

/// Element-wise nonlinearity, no parameters; any shape in, the same shape out.
///
///     ReLU: y = max(x, 0)                        dy/dx = 1 if x > 0 else 0
///     GELU: y = ½x(1 + tanh(u)),                 u = √(2/π)(x + 0.044715x³)   (tanh approximation,
///           dy/dx = ½(1 + tanh u) + ½x(1 − tanh²u)·√(2/π)(1 + 3·0.044715x²)     as in GPT-2)
///     saved: x
public final class Activation: Layer {
    public typealias Function = LayerKind.Activation

    public let name: String
    public let function: Function
    private let params: Parameters

    public var parameters: [Tensor] { params.values }
    public var gradients: [Tensor] { params.gradients }

    public init(name: String, label: String? = nil, function: Function) throws {
        self.name = name
        self.function = function
        params = try Parameters(shapes: [], in: nil, label: label ?? "\"\(name)\"")
    }

    /// ReLU passes values through or zeroes them; GELU's backward multiplies by up to ~1.13
    /// and could overflow a huge gradient, so it stays checked.
    public var keepsFiniteValuesFinite: Bool { function == .relu }

    public func place(in space: MemorySpace?) throws { try params.place(in: space) }
    public func adopt(values: [Tensor], gradients: [Tensor]) throws { try params.adopt(values: values, gradients: gradients) }

    public func forward(_ input: Tensor, _ context: LayerContext) throws -> (output: Tensor, saved: [Tensor]) {
        let output = try context.allocate(input.shape, "output")  // same shape as x
        context.device.activationForward(function, output: output, input: input)
        return (output, [input])
    }

    public func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor? {
        try ShapeCheck.saved(saved, count: 1, context)
        let input = saved[0]
        try ShapeCheck.exact(gradOutput, input.shape, "output gradient", context)
        let gradInput = try context.allocate(input.shape, "input gradient")
        context.device.activationBackward(function, gradInput: gradInput, gradOutput: gradOutput, input: input)
        return gradInput
    }
}
