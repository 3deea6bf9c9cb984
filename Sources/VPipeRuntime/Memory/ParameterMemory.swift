/// Where a layer's parameters, gradients and optimizer state live: views of two runs, which
/// for the layers of a stage are parts of one allocation (`pack`): llm.c's layout, with the
/// sizes computed here and every tensor a view.
///
///     block = [ layer a: W₀ W₁ … s₀(W₀) s₀(W₁) … s₁(W₀) … | layer b: … ] [ dW of a | dW of b | … ]
///              └──────────── weights and state, per layer ─────────────┘  └─ gradients, per layer ─┘
///
/// Per layer, weights with their optimizer state are one contiguous run and gradients
/// another, so a migration moves a layer as two buffers (pre-copy and hand-over) instead of
/// one message per tensor, and the stage's whole parameter memory is one allocation to place.
/// `k` optimizer state tensors per parameter (SGD 0, momentum 1, Adam 2) have its shape;
/// within a layer's run: all values, then state 0 of every parameter, then state 1, ….
public struct ParameterMemory: @unchecked Sendable {
    /// Per parameter, its values and its gradient (the layer's `parameters`, `gradients`).
    public let values: [Tensor], gradients: [Tensor]
    /// Per parameter, its `k` state tensors (the optimizer's layout).
    public let state: [[Tensor]]
    /// The two runs the views live in: what a migration sends.
    public let weightsAndState: Tensor, gradientRun: Tensor

    public var bytes: Int { weightsAndState.bytes + gradientRun.bytes }

    /// Floats of a layer's weights-and-state run and of its gradient run.
    public static func sizes(_ shapes: [[Int]], statesPerParameter k: Int) -> (weightsAndState: Int, gradients: Int) {
        let p = shapes.reduce(0) { $0 + $1.reduce(1, *) }
        return (p * (1 + k), p)
    }

    /// Views of a layer with parameters of `shapes` over the two runs (whose sizes are `sizes`).
    public init(shapes: [[Int]], statesPerParameter k: Int, weightsAndState: Tensor, gradients: Tensor) throws {
        let counts = shapes.map { $0.reduce(1, *) }
        let p = counts.reduce(0, +)
        guard weightsAndState.count == p * (1 + k), gradients.count == p else {
            throw RuntimeError.invalidShape("parameter memory of \(weightsAndState.count) + \(gradients.count) floats for parameters \(shapes) with \(k) state tensors each (expected \(p * (1 + k)) + \(p))")
        }
        var values: [Tensor] = [], grads: [Tensor] = [], state: [[Tensor]] = []
        var at = 0
        for (shape, n) in zip(shapes, counts) {
            values.append(try weightsAndState.view(offset: at, shape: shape))
            grads.append(try gradients.view(offset: at, shape: shape))
            state.append(try (0..<k).map { s in try weightsAndState.view(offset: p * (1 + s) + at, shape: shape) })
            at += n
        }
        self.values = values
        self.gradients = grads
        self.state = state
        self.weightsAndState = weightsAndState
        gradientRun = gradients
    }
}

extension ParameterMemory {
    /// Moves `layers` into one allocation in `space` (layer by layer, weights and state first,
    /// then the gradients): their current values and gradients, and
    /// `state` (nil: fresh zeros) are copied into views of it, and each layer adopts its views.
    /// The layers' old tensors are released with their last reference.
    public static func pack(_ layers: [(index: Int, layer: Layer, state: [[Tensor]]?)], statesPerParameter k: Int,
                     in space: MemorySpace, label: @autoclosure () -> String) throws -> [Int: ParameterMemory] {
        let shapes = layers.map { $0.layer.parameters.map(\.shape) }
        let runs = shapes.map { sizes($0, statesPerParameter: k) }
        let weightsTotal = runs.reduce(0) { $0 + $1.weightsAndState }
        let total = runs.reduce(weightsTotal) { $0 + $1.gradients }
        let block: Tensor
        do {
            block = try Tensor(shape: [total], in: space, for: label())
        } catch let error as RuntimeError {
            guard case let .outOfMemory(name, _, _, _, _) = error, name == space.name else { throw error }
            throw overflow(layers, runs, in: space, label: label()) ?? error
        }
        var memory: [Int: ParameterMemory] = [:]
        var weightsAt = 0, gradientsAt = weightsTotal
        for ((index, layer, state), (shape, size)) in zip(layers, zip(shapes, runs)) {
            let m = try ParameterMemory(shapes: shape, statesPerParameter: k,
                                           weightsAndState: try block.view(offset: weightsAt, shape: [size.weightsAndState]),
                                           gradients: try block.view(offset: gradientsAt, shape: [size.gradients]))
            try m.assign(values: layer.parameters, gradients: layer.gradients, state: state, label: "layer \(index)")
            try layer.adopt(values: m.values, gradients: m.gradients)
            memory[index] = m
            weightsAt += size.weightsAndState
            gradientsAt += size.gradients
        }
        return memory
    }

    /// The out-of-memory error naming the first layer that does not fit, had the layers been
    /// placed one after another (what the host can act on: which layer to move).
    private static func overflow(_ layers: [(index: Int, layer: Layer, state: [[Tensor]]?)],
                                 _ sizes: [(weightsAndState: Int, gradients: Int)], in space: MemorySpace, label: String) -> RuntimeError? {
        let inUse = space.bytesInUse
        var before = 0
        for ((index, layer, _), size) in zip(layers, sizes) {
            let bytes = (size.weightsAndState + size.gradients) * MemoryLayout<Float>.stride
            if bytes > space.capacity - inUse - before {
                return .outOfMemory(space: space.name, what: "\(layerLabel(index: index, name: layer.name)) parameters, gradients and optimizer state (\(label))",
                                    requested: bytes, inUse: inUse + before, capacity: space.capacity)
            }
            before += bytes
        }
        return nil
    }

    /// Copies values, gradients and (when given) state into this memory's views.
    public func assign(values: [Tensor], gradients: [Tensor], state: [[Tensor]]?, label: String) throws {
        guard values.count == self.values.count, gradients.count == self.gradients.count,
              state.map({ $0.count == self.state.count && zip($0, self.state).allSatisfy { $0.count == $1.count } }) ?? true else {
            throw RuntimeError.failed("\(label): \(values.count) parameters, \(gradients.count) gradients and state \(state?.map(\.count) ?? []) do not match its parameter memory (\(self.values.count) parameters, \(self.state.first?.count ?? 0) state tensors each)")
        }
        for (from, to) in zip(values, self.values) { try to.assign(from: from) }
        for (from, to) in zip(gradients, self.gradients) { try to.assign(from: from) }
        for (from, to) in zip(state ?? [], self.state) { for (a, b) in zip(from, to) { try b.assign(from: a) } }
    }
}

extension ParameterMemory {
    /// The same layer's memory over copies of its two runs (a migration's pre-copied weights
    /// and state, and its handed-over gradients), on whatever device those copies are.
    public func over(weightsAndState: Tensor, gradients: Tensor) throws -> ParameterMemory {
        try ParameterMemory(shapes: values.map(\.shape), statesPerParameter: state.first?.count ?? 0,
                            weightsAndState: weightsAndState, gradients: gradients)
    }
}
