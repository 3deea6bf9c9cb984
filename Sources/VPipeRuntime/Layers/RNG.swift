#if canImport(Glibc)
import Glibc
#endif

/// The deterministic random stream layers initialise their parameters from: SplitMix64
/// (Steele, Lea & Flood 2014), keyed by the model seed and the layer's index in the model.
///
/// Why not the system generator: the same model must get bit-identical weights whichever
/// stage, device or process builds a layer, so that a run placed on four stages and the same
/// run on one compute the same numbers. Keying by (seed, index) makes each layer's weights
/// independent of which other layers were built before it.
///
///     var rng = RNG(seed: 42, stream: 3)   // layer 3 of the model seeded 42
///     let w = rng.uniform(-0.1, 0.1)
public struct RNG: Sendable {
    private var state: UInt64

    public init(seed: UInt64, stream: UInt64 = 0) {
        state = RNG.mix(seed &+ RNG.mix(stream &+ 0x632B_E59B_D9B4_E019))
    }

    /// The SplitMix64 finaliser: a bijective 64-bit hash.
    private static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return RNG.mix(state)
    }

    /// Uniform in [0, 1), 24 random bits (every value exactly representable as a Float).
    public mutating func nextFloat() -> Float {
        Float(next() >> 40) * (1.0 / 16_777_216.0)
    }

    /// Uniform in [low, high).
    public mutating func uniform(_ low: Float, _ high: Float) -> Float {
        low + (high - low) * nextFloat()
    }

    /// Normal(mean, std) by Box–Muller (one draw per call, two uniforms consumed).
    public mutating func normal(mean: Float = 0, std: Float = 1) -> Float {
        let u1 = (Double(next() >> 11) + 1) * (1.0 / 9_007_199_254_740_992.0)  // (0, 1]
        let u2 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)        // [0, 1)
        let z = (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
        return mean + std * Float(z)
    }

    /// Fills `tensor` with uniform values in [low, high).
    public mutating func fillUniform(_ tensor: Tensor, _ low: Float, _ high: Float) {
        var values = [Float](repeating: 0, count: tensor.count)
        for i in values.indices { values[i] = uniform(low, high) }
        try? tensor.fill(from: values)  // counts match by construction
    }

    /// Fills `tensor` with Normal(0, std) values.
    public mutating func fillNormal(_ tensor: Tensor, std: Float) {
        var values = [Float](repeating: 0, count: tensor.count)
        for i in values.indices { values[i] = normal(std: std) }
        try? tensor.fill(from: values)  // counts match by construction
    }
}
