/// What one layer costs for ONE micro-batch on a reference device of speed 1.0.
///
/// Times are seconds, sizes bytes. These are the symbols f, b, a, o, w of
/// docs/cost-model.md.
public struct LayerProfile: Sendable, Equatable {
    public var fwdSeconds: Double
    public var bwdSeconds: Double
    public var stashBytes: Int
    public var outputBytes: Int
    public var paramBytes: Int

    public init(fwdSeconds: Double, bwdSeconds: Double, stashBytes: Int, outputBytes: Int, paramBytes: Int) {
        self.fwdSeconds = fwdSeconds
        self.bwdSeconds = bwdSeconds
        self.stashBytes = stashBytes
        self.outputBytes = outputBytes
        self.paramBytes = paramBytes
    }
}

/// One layer of the chain a pipeline is cut from.
public struct LayerSpec: Sendable, Equatable {
    public var name: String
    public var profile: LayerProfile
    /// What the layer computes, when the runtime builds it; nil for a profile-only layer.
    public var kind: LayerKind?

    public init(name: String, profile: LayerProfile, kind: LayerKind? = nil) {
        self.name = name
        self.profile = profile
        self.kind = kind
    }
}

/// A model as the planner sees it: a chain of layers in pipeline order.
public struct ModelSpec: Sendable, Equatable {
    public var name: String
    public var layers: [LayerSpec]
    /// x_0: one micro-batch's input to layer 0.
    public var inputBytes: Int
    /// κ as given; 0 means "use 4" (see `stateFactor`).
    public var stateBytesPerParamByte: Double

    /// A model for training from layer kinds alone: a session measures the profiles (they
    /// start at zero). Layers are named `names[i]`, or `l<i>` without names.
    public init(name: String, kinds: [LayerKind], names: [String]? = nil) {
        let zero = LayerProfile(fwdSeconds: 0, bwdSeconds: 0, stashBytes: 0, outputBytes: 0, paramBytes: 0)
        self.init(name: name, layers: kinds.enumerated().map { i, kind in
            LayerSpec(name: names.map { i < $0.count ? $0[i] : "l\(i)" } ?? "l\(i)", profile: zero, kind: kind)
        }, inputBytes: 0)
    }

    public init(name: String, layers: [LayerSpec], inputBytes: Int, stateBytesPerParamByte: Double = 0) {
        self.name = name
        self.layers = layers
        self.inputBytes = inputBytes
        self.stateBytesPerParamByte = stateBytesPerParamByte
    }

    /// κ: bytes of weights + gradients + optimizer state per parameter byte (0 means Adam's 4).
    public var stateFactor: Double { stateBytesPerParamByte == 0 ? 4 : stateBytesPerParamByte }

    /// x_l: the input size of layer `l` (x_0 = inputBytes, x_l = o_{l-1}).
    public func inputBytes(ofLayer l: Int) -> Int {
        l == 0 ? inputBytes : layers[l - 1].profile.outputBytes
    }

    /// A short, human-readable label for layer `l` used in messages: `layer 3 ("block2.attn")`.
    public func describeLayer(_ l: Int) -> String {
        let name = layers[l].name
        return name.isEmpty ? "layer \(l)" : "layer \(l) (\"\(name)\")"
    }
}
