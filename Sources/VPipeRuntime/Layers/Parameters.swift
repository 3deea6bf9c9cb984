/// A layer's parameters and their gradients, kept together so that placement and migration
/// move both: `place(in:)` re-allocates them in another `MemorySpace`, copying the values.
public final class Parameters: @unchecked Sendable {
    public private(set) var values: [Tensor]
    public private(set) var gradients: [Tensor]
    public let label: String

    /// Zero-initialised parameters of the given shapes (the layer fills in its init).
    public init(shapes: [[Int]], in space: MemorySpace?, label: String) throws {
        self.label = label
        values = try shapes.map { try Tensor(shape: $0, in: space, for: "\(label) parameters") }
        gradients = try shapes.map { try Tensor(shape: $0, in: space, for: "\(label) gradients") }
    }

    public func place(in space: MemorySpace?) throws {
        let v = try values.map { try $0.copy(to: space, for: "\(label) parameters") }
        let g = try gradients.map { try $0.copy(to: space, for: "\(label) gradients") }
        values = v
        gradients = g
    }

    /// Takes over tensors that already live in another space (a migration's pre-copied
    /// weights and handed-over gradients); shapes must match.
    public func adopt(values: [Tensor], gradients: [Tensor]) throws {
        guard values.map(\.shape) == self.values.map(\.shape), gradients.map(\.shape) == self.gradients.map(\.shape) else {
            throw RuntimeError.invalidShape("\(label): adopted tensors have shapes \(values.map(\.shape)), expected \(self.values.map(\.shape))")
        }
        self.values = values
        self.gradients = gradients
    }

    public func zeroGradients() { for g in gradients { g.zero() } }

    public var bytes: Int { values.reduce(0) { $0 + $1.bytes } }
}
