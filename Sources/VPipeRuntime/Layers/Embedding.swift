/// Token ids -> vectors, plus a learned position vector when `sequenceLength` > 0.
///
///     ids [rows] or [rows, 1] (float-coded integers) -> y [rows, C]
///     y[r] = wte[ids[r]] + wpe[r mod T]
///     wte [V, C], wpe [T, C] (only when T > 0)    Normal(0, 0.02)
///     saved: ids
///
/// The input is not differentiable: backward returns nil and only adds into dwte (and dwpe).
/// An id that is not an integer in 0..<V throws, naming the layer, the id and the row.
public final class Embedding: Layer {
    public let name: String
    public let vocabulary: Int
    public let features: Int
    /// 0: no position embedding.
    public let sequenceLength: Int
    private let params: Parameters

    public var parameters: [Tensor] { params.values }
    public var gradients: [Tensor] { params.gradients }

    public init(name: String, label: String? = nil, vocabulary: Int, features: Int, sequenceLength: Int,
                rng: inout RNG, in space: MemorySpace?) throws {
        let label = label ?? "\"\(name)\""
        try ShapeCheck.positive(["vocabulary": vocabulary, "features": features], label)
        if sequenceLength != 0 { try ShapeCheck.positive(["sequenceLength": sequenceLength], label) }
        self.name = name
        self.vocabulary = vocabulary
        self.features = features
        self.sequenceLength = sequenceLength
        var shapes = [[vocabulary, features]]
        if sequenceLength > 0 { shapes.append([sequenceLength, features]) }
        params = try Parameters(shapes: shapes, in: space, label: label)
        for t in params.values { rng.fillNormal(t, std: 0.02) }
    }

    public func place(in space: MemorySpace?) throws { try params.place(in: space) }
    public func adopt(values: [Tensor], gradients: [Tensor]) throws { try params.adopt(values: values, gradients: gradients) }

    /// Rows of `ids` after checking its shape and every id.
    private func validate(_ ids: Tensor, _ context: LayerContext) throws -> Int {
        guard ids.shape.count == 1 || (ids.shape.count == 2 && ids.shape[1] == 1) else {
            throw RuntimeError.invalidShape("\(context.label): token ids must be [rows] or [rows, 1], got \(ids.shape)")
        }
        let rows = ids.shape[0]
        if let (r, id) = context.device.firstInvalidTokenId(ids, rows: rows, vocabulary: vocabulary) {
            throw RuntimeError.invalidShape("\(context.label): token id \(id) at row \(r) is not an integer in 0..<\(vocabulary)")
        }
        return rows
    }

    public func forward(_ input: Tensor, _ context: LayerContext) throws -> (output: Tensor, saved: [Tensor]) {
        let rows = try validate(input, context)
        let output = try context.allocate([rows, features], "output")  // [rows, C]
        context.device.embeddingForward(output: output, ids: input, tokenTable: params.values[0],
                                        positionTable: sequenceLength > 0 ? params.values[1] : nil,
                                        rows: rows, features: features, sequenceLength: sequenceLength)
        return (output, [input])
    }

    public func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor? {
        try ShapeCheck.saved(saved, count: 1, context)
        let ids = saved[0]
        let rows = try validate(ids, context)
        try ShapeCheck.exact(gradOutput, [rows, features], "output gradient", context)
        context.device.embeddingBackward(gradTokenTable: params.gradients[0],
                                         gradPositionTable: sequenceLength > 0 ? params.gradients[1] : nil,
                                         gradOutput: gradOutput, ids: ids, rows: rows, features: features, sequenceLength: sequenceLength)
        return nil
    }
}
