import VPipeCore

/// Builds the layer a `LayerKind` describes, with parameters initialised from the stream
/// `RNG(seed: seed, stream: index)`: the same (kind, seed, index) gives bit-identical weights
/// wherever and in whatever order layers are built. Parameters are allocated in `space`
/// (nil: uncharged host memory) under the label `layer <index> ("<name>")`.
public func makeLayer(kind: LayerKind, name: String, index: Int, seed: UInt64, in space: MemorySpace?) throws -> Layer {
    let label = layerLabel(index: index, name: name)
    var rng = RNG(seed: seed, stream: UInt64(truncatingIfNeeded: index))
    switch kind {
    case let .linear(inFeatures, outFeatures):
        return try Linear(name: name, label: label, inFeatures: inFeatures, outFeatures: outFeatures, rng: &rng, in: space)
    case let .activation(function):
        return try Activation(name: name, label: label, function: function)
    case let .layerNorm(features):
        return try LayerNorm(name: name, label: label, features: features, in: space)
    case let .embedding(vocabulary, features, sequenceLength):
        return try Embedding(name: name, label: label, vocabulary: vocabulary, features: features,
                             sequenceLength: sequenceLength, rng: &rng, in: space)
    case let .transformerBlock(features, heads, sequenceLength, mlpRatio):
        return try TransformerBlock(name: name, label: label, features: features, heads: heads,
                                    sequenceLength: sequenceLength, mlpRatio: mlpRatio, rng: &rng, in: space)
    case .softmaxCrossEntropy:
        return try SoftmaxCrossEntropy(name: name, label: label)
    case let .external(callback, inFeatures, outFeatures):
        return try ExternalLayer(name: name, callback: callback, inFeatures: inFeatures, outFeatures: outFeatures, label: label)
    case let .choiceBlock(features, hiddenOptions, switchEvery):
        return try ChoiceBlock(name: name, label: label, features: features, hiddenOptions: hiddenOptions, switchEvery: switchEvery,
                               index: index, rng: &rng, in: space)
    }
}
