/// Analytic profiles of transformer language models, for demos, benchmarks and tests where
/// no measured profile exists. Costs follow the standard counts (Narayanan et al. 2021 for
/// FLOPs, Korthikanti et al. 2022 for activation bytes): per block and micro-batch of b
/// sequences of s tokens, hidden size h, a heads,
///   forward FLOPs   24·b·s·h² + 4·b·s²·h       backward = 2 × forward
///   parameters      12·h² + 13·h
///   stash           b·s·h·(34 + 5·a·s/h) half-precision bytes, scaled to the element size
/// The chain is: embedding, `blocks` transformer blocks, final LayerNorm + LM head.
public struct TransformerShape: Sendable, Equatable {
    public var name: String
    public var blocks: Int
    public var hidden: Int
    public var heads: Int
    public var sequenceLength: Int
    public var vocabulary: Int
    /// Sequences per micro-batch.
    public var microBatchSize: Int
    /// Bytes per activation/parameter element (2 for fp16/bf16 training, 4 for fp32).
    public var elementBytes: Int
    /// Sustained FLOP/s of the reference device (speed 1.0).
    public var flopsPerSecond: Double

    public init(name: String, blocks: Int, hidden: Int, heads: Int, sequenceLength: Int, vocabulary: Int,
                microBatchSize: Int, elementBytes: Int = 2, flopsPerSecond: Double = 100e12) {
        self.name = name
        self.blocks = blocks
        self.hidden = hidden
        self.heads = heads
        self.sequenceLength = sequenceLength
        self.vocabulary = vocabulary
        self.microBatchSize = microBatchSize
        self.elementBytes = elementBytes
        self.flopsPerSecond = flopsPerSecond
    }

    public static func bertLarge(microBatchSize: Int = 8) -> TransformerShape {
        TransformerShape(name: "bert-large", blocks: 24, hidden: 1024, heads: 16, sequenceLength: 512,
                         vocabulary: 30522, microBatchSize: microBatchSize)
    }
    public static func gpt2XL(microBatchSize: Int = 4) -> TransformerShape {
        TransformerShape(name: "gpt2-xl", blocks: 48, hidden: 1600, heads: 25, sequenceLength: 1024,
                         vocabulary: 50257, microBatchSize: microBatchSize)
    }
    public static func gpt3_2_7B(microBatchSize: Int = 2) -> TransformerShape {
        TransformerShape(name: "gpt3-2.7b", blocks: 32, hidden: 2560, heads: 32, sequenceLength: 2048,
                         vocabulary: 50257, microBatchSize: microBatchSize)
    }
    public static func gpt3_13B(microBatchSize: Int = 1) -> TransformerShape {
        TransformerShape(name: "gpt3-13b", blocks: 40, hidden: 5120, heads: 40, sequenceLength: 2048,
                         vocabulary: 50257, microBatchSize: microBatchSize)
    }

    /// The model as a chain of `blocks + 2` layers with analytic profiles.
    public func model(stateBytesPerParamByte: Double = 0) -> ModelSpec {
        let b = Double(microBatchSize), s = Double(sequenceLength), h = Double(hidden)
        let a = Double(heads), v = Double(vocabulary), e = Double(elementBytes)
        let tokens = b * s
        let hiddenBytes = Int(tokens * h * e)

        func layer(_ name: String, flops: Double, stash: Double, output: Int, params: Double) -> LayerSpec {
            LayerSpec(name: name, profile: LayerProfile(
                fwdSeconds: flops / flopsPerSecond, bwdSeconds: 2 * flops / flopsPerSecond,
                stashBytes: Int(stash), outputBytes: output, paramBytes: Int(params * e)))
        }
        var layers: [LayerSpec] = []
        // Embedding: a gather, memory-bound; charge it as reading and writing its output once.
        layers.append(layer("embedding", flops: 2 * tokens * h, stash: tokens * 8, output: hiddenBytes,
                            params: (v + s) * h))
        let blockFlops = 24 * tokens * h * h + 4 * tokens * s * h
        let blockStash = tokens * h * (34 + 5 * a * s / h) * e / 2
        for i in 0..<blocks {
            layers.append(layer("block\(i)", flops: blockFlops, stash: blockStash, output: hiddenBytes,
                                params: 12 * h * h + 13 * h))
        }
        // LM head: LayerNorm + projection to the vocabulary + softmax cross-entropy; keeps its
        // input and the logits.
        layers.append(layer("lm_head", flops: 2 * tokens * h * v, stash: tokens * (h + v) * e, output: Int(tokens * 4),
                            params: v * h + 2 * h))
        return ModelSpec(name: name, layers: layers, inputBytes: Int(tokens * 8),
                         stateBytesPerParamByte: stateBytesPerParamByte)
    }
}
