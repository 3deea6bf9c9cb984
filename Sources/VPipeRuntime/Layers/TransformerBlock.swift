/// Pre-LN transformer block (GPT-2's), composed of the runtime's own layers:
///
///     x  [rows, C]
///     x1 [rows, C]  = x  + attn(ln1(x))                 causal, H heads, sequences of T rows
///     y  [rows, C]  = x1 + proj(gelu(fc(ln2(x1))))      fc: C -> rC, proj: rC -> C
///
/// Parameters, in order: ln1 (γ, β), attn (Wqkv, bqkv, Wo, bo), ln2 (γ, β), fc (W, b), proj (W, b).
/// saved: the parts' stashes concatenated, in the same order (ln1 3, attn 4, ln2 3, fc 1, gelu 1,
/// proj 1 = 13 tensors): x, its LN statistics, ln1(x), qkv, att, atty, x1, …, gelu output.
/// The residual sums are formed in place in the attention and projection outputs, so the
/// block allocates nothing beyond what its parts' backward needs and its own output.
public final class TransformerBlock: Layer {
    public let name: String
    public let features: Int
    public let mlpRatio: Int
    private let ln1: LayerNorm
    private let attn: Attention
    private let ln2: LayerNorm
    private let fc: Linear
    private let gelu: Activation
    private let proj: Linear

    private var parts: [Layer] { [ln1, attn, ln2, fc, gelu, proj] }
    private static let partNames = ["ln1", "attn", "ln2", "fc", "gelu", "proj"]
    private static let savedCounts = [3, 4, 3, 1, 1, 1]

    public var parameters: [Tensor] { parts.flatMap(\.parameters) }
    public var gradients: [Tensor] { parts.flatMap(\.gradients) }

    /// `mlpRatio` 0 means 4.
    public init(name: String, label: String? = nil, features: Int, heads: Int, sequenceLength: Int, mlpRatio: Int,
                rng: inout RNG, in space: MemorySpace?) throws {
        let label = label ?? "\"\(name)\""
        let ratio = mlpRatio == 0 ? 4 : mlpRatio
        try ShapeCheck.positive(["mlpRatio": ratio], label)
        self.name = name
        self.features = features
        self.mlpRatio = ratio
        ln1 = try LayerNorm(name: "\(name).ln1", label: "\(label) ln1", features: features, in: space)
        attn = try Attention(name: "\(name).attn", label: "\(label) attn", features: features, heads: heads,
                             sequenceLength: sequenceLength, rng: &rng, in: space)
        ln2 = try LayerNorm(name: "\(name).ln2", label: "\(label) ln2", features: features, in: space)
        fc = try Linear(name: "\(name).fc", label: "\(label) fc", inFeatures: features, outFeatures: ratio * features,
                        rng: &rng, in: space)
        gelu = try Activation(name: "\(name).gelu", label: "\(label) gelu", function: .gelu)
        proj = try Linear(name: "\(name).proj", label: "\(label) proj", inFeatures: ratio * features,
                          outFeatures: features, rng: &rng, in: space)
    }

    public func place(in space: MemorySpace?) throws { for p in parts { try p.place(in: space) } }
    public func adopt(values: [Tensor], gradients: [Tensor]) throws {
        guard values.count == parameters.count, gradients.count == values.count else {
            throw RuntimeError.invalidShape("transformer block: adopt got \(values.count) tensors for \(parameters.count) parameters")
        }
        var k = 0
        for p in parts {
            let n = p.parameters.count
            try p.adopt(values: Array(values[k..<(k + n)]), gradients: Array(gradients[k..<(k + n)]))
            k += n
        }
    }

    public func forward(_ input: Tensor, _ context: LayerContext) throws -> (output: Tensor, saved: [Tensor]) {
        _ = try ShapeCheck.matrix(input, columns: features, "input", context)
        let (h1, s1) = try ln1.forward(input, context.part("ln1"))   // [rows, C]
        let (x1, s2) = try attn.forward(h1, context.part("attn"))    // [rows, C], becomes x1 below
        context.device.add(x1, input)                            // x1 = x + attn(ln1(x))
        let (h2, s3) = try ln2.forward(x1, context.part("ln2"))      // [rows, C]
        let (f, s4) = try fc.forward(h2, context.part("fc"))         // [rows, rC]
        let (g, s5) = try gelu.forward(f, context.part("gelu"))      // [rows, rC]
        let (y, s6) = try proj.forward(g, context.part("proj"))      // [rows, C], becomes y below
        context.device.add(y, x1)                                // y = x1 + mlp(ln2(x1))
        return (y, s1 + s2 + s3 + s4 + s5 + s6)
    }

    public func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor? {
        try ShapeCheck.saved(saved, count: TransformerBlock.savedCounts.reduce(0, +), context)
        var stashes: [[Tensor]] = []
        var at = 0
        for n in TransformerBlock.savedCounts {
            stashes.append(Array(saved[at..<(at + n)]))
            at += n
        }
        func back(_ i: Int, _ dy: Tensor) throws -> Tensor {
            let ctx = context.part(TransformerBlock.partNames[i])
            guard let dx = try parts[i].backward(dy, saved: stashes[i], ctx) else {
                throw RuntimeError.failed("\(ctx.label): returned no input gradient")
            }
            return dx
        }
        // MLP branch: dy -> dx1 (+ dy through the residual)
        let dx1 = try back(3, back(4, back(5, gradOutput)))          // [rows, C] through proj, gelu, fc
        let dx1ln = try back(2, dx1)                                  // through ln2
        try ShapeCheck.exact(gradOutput, dx1ln.shape, "output gradient", context)
        context.device.add(dx1ln, gradOutput)                    // dx1 = ln2ᵀ(…) + dy
        // Attention branch: dx1 -> dx (+ dx1 through the residual)
        let dx = try back(0, back(1, dx1ln))                          // [rows, C] through attn, ln1
        context.device.add(dx, dx1ln)                            // dx = ln1ᵀ(attnᵀ(dx1)) + dx1
        return dx
    }
}
