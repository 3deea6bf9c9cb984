import VPipeCore

#if canImport(Glibc)
import Glibc
#endif

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

    public func place(in space: MemorySpace?) throws { try params.place(in: space) }
    public func adopt(values: [Tensor], gradients: [Tensor]) throws { try params.adopt(values: values, gradients: gradients) }

    private static let geluScale = Float((2 / Double.pi).squareRoot())
    private static let geluCubic: Float = 0.044715

    /// tanh(u) and du/dx for GELU's u = √(2/π)(x + 0.044715x³).
    @inline(__always) private static func geluTanh(_ x: Float) -> (tanh: Float, du: Float) {
        let u = geluScale * (x + geluCubic * x * x * x)
        return (tanhf(u), geluScale * (1 + 3 * geluCubic * x * x))
    }

    public func forward(_ input: Tensor, _ context: LayerContext) throws -> (output: Tensor, saved: [Tensor]) {
        let output = try context.allocate(input.shape, "output")  // same shape as x
        let x = input.data, y = output.data, n = input.count
        switch function {
        case .relu:
            for i in 0..<n { y[i] = x[i] > 0 ? x[i] : 0 }
        case .gelu:
            for i in 0..<n { y[i] = 0.5 * x[i] * (1 + Activation.geluTanh(x[i]).tanh) }
        }
        return (output, [input])
    }

    public func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor? {
        try ShapeCheck.saved(saved, count: 1, context)
        let input = saved[0]
        try ShapeCheck.exact(gradOutput, input.shape, "output gradient", context)
        let gradInput = try context.allocate(input.shape, "input gradient")
        let x = input.data, dy = gradOutput.data, dx = gradInput.data, n = input.count
        switch function {
        case .relu:
            for i in 0..<n { dx[i] = x[i] > 0 ? dy[i] : 0 }
        case .gelu:
            for i in 0..<n {
                let (t, du) = Activation.geluTanh(x[i])
                dx[i] = dy[i] * (0.5 * (1 + t) + 0.5 * x[i] * (1 - t * t) * du)
            }
        }
        return gradInput
    }
}
