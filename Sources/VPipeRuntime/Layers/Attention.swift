/// Causal multi-head self-attention over rows grouped into sequences of T consecutive rows
/// (rows = B·T); H heads of size hs = C/H.
///
///     x    [rows, C]
///     qkv  [rows, 3C] = x·Wqkvᵀ + bqkv        Wqkv [3C, C], bqkv [3C]   (q | k | v, head h at h·hs)
///     att  [B, H, T, T] = softmax(q·kᵀ/√hs), masked to t2 <= t (zeros above the diagonal)
///     atty [rows, C]  = att·v                  (heads side by side)
///     y    [rows, C]  = atty·Woᵀ + bo          Wo [C, C], bo [C]
///     saved: x, qkv, att, atty
///
/// The projections are the device's linear kernels, the middle its attention kernels.
public final class Attention: Layer {
    public let name: String
    public let features: Int
    public let heads: Int
    public let sequenceLength: Int
    private let params: Parameters

    public var parameters: [Tensor] { params.values }
    public var gradients: [Tensor] { params.gradients }

    public init(name: String, label: String? = nil, features: Int, heads: Int, sequenceLength: Int,
                rng: inout RNG, in space: MemorySpace?) throws {
        let label = label ?? "\"\(name)\""
        try ShapeCheck.positive(["features": features, "heads": heads, "sequenceLength": sequenceLength], label)
        guard features % heads == 0 else {
            throw RuntimeError.invalidShape("\(label): features \(features) is not a multiple of heads \(heads)")
        }
        self.name = name
        self.features = features
        self.heads = heads
        self.sequenceLength = sequenceLength
        let c = features
        params = try Parameters(shapes: [[3 * c, c], [3 * c], [c, c], [c]], in: space, label: label)
        let bound = 1 / Float(c).squareRoot()  // both projections take C inputs
        for t in params.values { rng.fillUniform(t, -bound, bound) }
    }

    public func place(in space: MemorySpace?) throws { try params.place(in: space) }
    public func adopt(values: [Tensor], gradients: [Tensor]) throws { try params.adopt(values: values, gradients: gradients) }

    private func sequences(_ rows: Int, _ context: LayerContext) throws -> Int {
        guard rows % sequenceLength == 0 else {
            throw RuntimeError.invalidShape(
                "\(context.label): \(rows) rows are not a whole number of sequences of \(sequenceLength) rows")
        }
        return rows / sequenceLength
    }

    public func forward(_ input: Tensor, _ context: LayerContext) throws -> (output: Tensor, saved: [Tensor]) {
        let c = features, t = sequenceLength
        let rows = try ShapeCheck.matrix(input, columns: c, "input", context)
        let b = try sequences(rows, context)
        let w = params.values, device = context.device
        let qkv = try context.allocate([rows, 3 * c], "qkv")            // [rows, 3C]
        device.linearForward(output: qkv, input: input, weight: w[0], bias: w[1], rows: rows, inFeatures: c, outFeatures: 3 * c)
        let att = try context.allocate([b, heads, t, t], "attention")   // [B, H, T, T]
        let atty = try context.allocate([rows, c], "attention values")  // [rows, C]
        device.attentionForward(output: atty, attention: att, qkv: qkv, sequences: b, sequenceLength: t, heads: heads, features: c)
        let output = try context.allocate([rows, c], "output")          // [rows, C]
        device.linearForward(output: output, input: atty, weight: w[2], bias: w[3], rows: rows, inFeatures: c, outFeatures: c)
        return (output, [input, qkv, att, atty])
    }

    public func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor? {
        try ShapeCheck.saved(saved, count: 4, context)
        let c = features, t = sequenceLength
        let input = saved[0], qkv = saved[1], att = saved[2], atty = saved[3]
        let rows = try ShapeCheck.matrix(input, columns: c, "saved input", context)
        let b = try sequences(rows, context)
        try ShapeCheck.exact(qkv, [rows, 3 * c], "saved qkv", context)
        try ShapeCheck.exact(att, [b, heads, t, t], "saved attention", context)
        try ShapeCheck.exact(atty, [rows, c], "saved attention values", context)
        try ShapeCheck.exact(gradOutput, [rows, c], "output gradient", context)
        let w = params.values, g = params.gradients, device = context.device

        // Output projection: dWo, dbo += …; datty = dy·Wo
        let datty = try context.allocate([rows, c], "attention values gradient")  // [rows, C]
        device.linearBackward(gradInput: datty, gradWeight: g[2], gradBias: g[3], gradOutput: gradOutput, input: atty, weight: w[2],
                              rows: rows, inFeatures: c, outFeatures: c)

        let dqkv = try context.allocate([rows, 3 * c], "qkv gradient")            // [rows, 3C]
        let datt = try context.allocate([t, t], "attention gradient")             // [T, T], one head at a time
        device.attentionBackward(gradQKV: dqkv, scratch: datt, gradOutput: datty, qkv: qkv, attention: att,
                                 sequences: b, sequenceLength: t, heads: heads, features: c)

        // qkv projection: dWqkv, dbqkv += …; dx = dqkv·Wqkv
        let gradInput = try context.allocate([rows, c], "input gradient")         // [rows, C]
        device.linearBackward(gradInput: gradInput, gradWeight: g[0], gradBias: g[1], gradOutput: dqkv, input: input, weight: w[0],
                              rows: rows, inFeatures: c, outFeatures: 3 * c)
        return gradInput
    }
}
