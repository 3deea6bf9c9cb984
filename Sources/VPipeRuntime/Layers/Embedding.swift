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
        for r in 0..<rows {
            let id = ids.data[r]
            guard id.isFinite, id >= 0, id < Float(vocabulary), id.rounded(.towardZero) == id else {
                throw RuntimeError.invalidShape(
                    "\(context.label): token id \(id) at row \(r) is not an integer in 0..<\(vocabulary)")
            }
        }
        return rows
    }

    public func forward(_ input: Tensor, _ context: LayerContext) throws -> (output: Tensor, saved: [Tensor]) {
        let rows = try validate(input, context)
        let output = try context.allocate([rows, features], "output")  // [rows, C]
        let wte = params.values[0].data, c = features
        for r in 0..<rows {
            let y = output.data + r * c
            y.update(from: wte + Int(input.data[r]) * c, count: c)
            if sequenceLength > 0 {
                let p = params.values[1].data + (r % sequenceLength) * c
                for i in 0..<c { y[i] += p[i] }
            }
        }
        return (output, [input])
    }

    public func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor? {
        try ShapeCheck.saved(saved, count: 1, context)
        let ids = saved[0]
        let rows = try validate(ids, context)
        try ShapeCheck.exact(gradOutput, [rows, features], "output gradient", context)
        let dwte = params.gradients[0].data, c = features
        for r in 0..<rows {
            let dy = gradOutput.data + r * c
            let dt = dwte + Int(ids.data[r]) * c
            for i in 0..<c { dt[i] += dy[i] }
            if sequenceLength > 0 {
                let dp = params.gradients[1].data + (r % sequenceLength) * c
                for i in 0..<c { dp[i] += dy[i] }
            }
        }
        return nil
    }
}
