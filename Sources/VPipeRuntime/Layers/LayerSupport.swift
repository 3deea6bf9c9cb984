/// Helpers every layer shares: allocating in the step's memory space under a label that
/// names the layer, scoping the label for a layer's internal parts, and shape checks that
/// throw `RuntimeError.invalidShape` (naming the layer and the shapes) instead of trapping.
extension LayerContext {
    /// A zero-filled tensor charged to `space`, labelled e.g. `layer 4 ("block2") output`.
    public func allocate(_ shape: [Int], _ what: String) throws -> Tensor {
        try Tensor(shape: shape, on: device, in: space, for: "\(label) \(what)")
    }

    /// The same context for an internal part of a composite layer (`layer 4 ("b") attn`).
    public func part(_ name: String) -> LayerContext {
        var c = self
        c.label = "\(label) \(name)"
        return c
    }
}

/// The label a layer is known by in parameter allocations and errors: `layer 3 ("fc1")`.
public func layerLabel(index: Int, name: String) -> String { "layer \(index) (\"\(name)\")" }

enum ShapeCheck {
    /// `tensor` must be 2-D `[rows, columns]`; returns rows.
    static func matrix(_ tensor: Tensor, columns: Int, _ what: String, _ context: LayerContext) throws -> Int {
        guard tensor.shape.count == 2, tensor.shape[1] == columns else {
            throw RuntimeError.invalidShape("\(context.label): \(what) must be [rows, \(columns)], got \(tensor.shape)")
        }
        return tensor.shape[0]
    }

    /// `tensor` must have exactly `shape`.
    static func exact(_ tensor: Tensor, _ shape: [Int], _ what: String, _ context: LayerContext) throws {
        guard tensor.shape == shape else {
            throw RuntimeError.invalidShape("\(context.label): \(what) must be \(shape), got \(tensor.shape)")
        }
    }

    /// `saved` must hold the `count` tensors this layer's forward produced.
    static func saved(_ saved: [Tensor], count: Int, _ context: LayerContext) throws {
        guard saved.count == count else {
            throw RuntimeError.failed("\(context.label): backward needs the \(count) tensors its forward saved, got \(saved.count)")
        }
    }

    /// Largest size accepted for one dimension of a layer (so that 3·C, r·C, T·T and the
    /// like cannot overflow before `Tensor` checks the total).
    static let maximumSize = 1 << 30

    /// Layer sizes given at construction must be in 1...maximumSize.
    static func positive(_ sizes: KeyValuePairs<String, Int>, _ label: String) throws {
        for (name, size) in sizes where size <= 0 || size > maximumSize {
            throw RuntimeError.invalidShape("\(label): \(name) must be in 1...\(maximumSize), got \(size)")
        }
    }
}
