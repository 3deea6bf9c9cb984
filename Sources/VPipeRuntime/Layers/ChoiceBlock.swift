import VPipeCore

/// A supernet choice block (neural architecture search): a residual MLP whose hidden width
/// is one of several options, the active option switching every `switchEvery` iterations:
///
///     y = x + W2ₖ · gelu(W1ₖ · x + b1ₖ) + b2ₖ,   k = ((iteration − 1) / switchEvery) mod options
///
/// All choice blocks switch together; a host orders each block's options to say which
/// blocks grow and which shrink at a switch (a supernet whose active path moves).
///
/// Every option keeps its own weights (a supernet trains them all over time); only the
/// active one computes, so the block's cost moves as the options switch, and with it the
/// balance between pipeline stages — the workload vPipe re-plans for. The choice is a pure
/// function of the iteration, so a recompute sees the same option as the forward.
public final class ChoiceBlock: Layer {
    public let name: String
    let features: Int
    let switchEvery: Int
    /// Per option: fc [h, C], gelu, proj [C, h].
    private let options: [(fc: Linear, gelu: Activation, proj: Linear)]

    public init(name: String, label: String? = nil, features: Int, hiddenOptions: [Int], switchEvery: Int, index: Int,
                rng: inout RNG, in space: MemorySpace?) throws {
        let label = label ?? "\"\(name)\""
        guard !hiddenOptions.isEmpty, switchEvery >= 1 else {
            throw RuntimeError.invalidShape("\(label): a choice block needs at least one option and switch_every >= 1")
        }
        self.name = name
        self.features = features
        self.switchEvery = switchEvery
        var opts: [(Linear, Activation, Linear)] = []
        for (k, h) in hiddenOptions.enumerated() {
            opts.append((try Linear(name: "\(name).option\(k).fc", label: "\(label) option \(k) fc", inFeatures: features, outFeatures: h, rng: &rng, in: space),
                         try Activation(name: "\(name).option\(k).gelu", function: .gelu),
                         try Linear(name: "\(name).option\(k).proj", label: "\(label) option \(k) proj", inFeatures: h, outFeatures: features, rng: &rng, in: space)))
        }
        options = opts
    }

    /// The option that computes during `iteration` (1-based; 0, outside training, means 1).
    public func activeOption(iteration: Int) -> Int {
        ((max(iteration, 1) - 1) / switchEvery) % options.count
    }

    private var parts: [Layer] { options.flatMap { [$0.fc, $0.gelu, $0.proj] as [Layer] } }
    public var parameters: [Tensor] { parts.flatMap(\.parameters) }
    public var gradients: [Tensor] { parts.flatMap(\.gradients) }
    public func place(in space: MemorySpace?) throws { for p in parts { try p.place(in: space) } }
    public func adopt(values: [Tensor], gradients: [Tensor]) throws {
        guard values.count == parameters.count, gradients.count == values.count else {
            throw RuntimeError.invalidShape("choice block \(name): adopt got \(values.count) tensors for \(parameters.count) parameters")
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
        let o = options[activeOption(iteration: context.iteration)]
        let (f, s1) = try o.fc.forward(input, context.part("fc"))      // [rows, h]
        let (g, s2) = try o.gelu.forward(f, context.part("gelu"))      // [rows, h]
        let (y, s3) = try o.proj.forward(g, context.part("proj"))      // [rows, C]
        context.device.add(y, input)                                     // residual
        return (y, s1 + s2 + s3)
    }

    public func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor? {
        // fc, gelu and proj each save their input: one tensor apiece.
        try ShapeCheck.saved(saved, count: 3, context)
        let o = options[activeOption(iteration: context.iteration)]
        let s1 = [saved[0]], s2 = [saved[1]], s3 = [saved[2]]
        guard let dg = try o.proj.backward(gradOutput, saved: s3, context.part("proj")),
              let df = try o.gelu.backward(dg, saved: s2, context.part("gelu")),
              let dx = try o.fc.backward(df, saved: s1, context.part("fc")) else {
            throw RuntimeError.failed("\(context.label): a part returned no input gradient")
        }
        try ShapeCheck.exact(gradOutput, dx.shape, "output gradient", context)
        context.device.add(dx, gradOutput)                               // residual
        return dx
    }
}
