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
        let x = input.data, out = y.data
        for i in 0..<y.count { out[i] += x[i] }                         // residual
        return (y, [Tensor](s1) + s2 + s3 + [try ChoiceBlock.marker(s1.count, s2.count, context)])
    }

    public func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor? {
        guard let marker = saved.last, marker.count == 2 else { throw RuntimeError.failed("\(context.label): backward without its forward's stash") }
        let n1 = Int(marker.data[0]), n2 = Int(marker.data[1])
        guard saved.count >= n1 + n2 + 1 else { throw RuntimeError.failed("\(context.label): stash too short") }
        let o = options[activeOption(iteration: context.iteration)]
        let s1 = Array(saved[0..<n1]), s2 = Array(saved[n1..<(n1 + n2)]), s3 = Array(saved[(n1 + n2)..<(saved.count - 1)])
        guard let dg = try o.proj.backward(gradOutput, saved: s3, context.part("proj")),
              let df = try o.gelu.backward(dg, saved: s2, context.part("gelu")),
              let dx = try o.fc.backward(df, saved: s1, context.part("fc")) else {
            throw RuntimeError.failed("\(context.label): a part returned no input gradient")
        }
        let d = dx.data, dy = gradOutput.data
        for i in 0..<dx.count { d[i] += dy[i] }                          // residual
        return dx
    }

    /// Two numbers saying how the stash splits between fc, gelu and proj.
    static func marker(_ a: Int, _ b: Int, _ context: LayerContext) throws -> Tensor {
        let t = try Tensor(shape: [2], in: context.space, for: "\(context.label) stash index")
        t.data[0] = Float(a)
        t.data[1] = Float(b)
        return t
    }
}
