/// What a layer computes, for layers the runtime builds itself. A `LayerSpec` without a kind
/// is a profile only: it can be planned and simulated, not trained.
public enum LayerKind: Sendable, Equatable {
    /// y = x·Wᵀ + b; W is [out, in].
    case linear(inFeatures: Int, outFeatures: Int)
    case activation(Activation)
    /// Normalises each row over `features`, with a learned scale and shift.
    case layerNorm(features: Int)
    /// Token ids (one per row) -> vectors, plus a learned position embedding when
    /// `sequenceLength` > 0 (row r is position r mod sequenceLength).
    case embedding(vocabulary: Int, features: Int, sequenceLength: Int)
    /// Pre-LN transformer block: x + Attn(LN(x)), then + MLP(LN(·)) with a GELU MLP of
    /// `mlpRatio` × features; causal multi-head self-attention over `sequenceLength` rows.
    case transformerBlock(features: Int, heads: Int, sequenceLength: Int, mlpRatio: Int)
    /// Mean cross-entropy of softmax(logits) against integer class targets; the last layer.
    case softmaxCrossEntropy
    /// A supernet choice block: a residual GELU MLP whose hidden width is one of
    /// `hiddenOptions`, the active one switching every `switchEvery` iterations.
    case choiceBlock(features: Int, hiddenOptions: [Int], switchEvery: Int)
    /// A host-defined layer: forward and backward are callbacks registered under `callback`
    /// (`vp_register_external_layer`), mapping `[rows, inFeatures]` to `[rows, outFeatures]`.
    case external(callback: String, inFeatures: Int, outFeatures: Int)

    public enum Activation: Int, Sendable, Equatable {
        case relu = 1
        case gelu = 2
    }
}
