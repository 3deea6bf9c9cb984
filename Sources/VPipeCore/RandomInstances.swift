/// Reproducible random planning instances, shared by the tests and `make bench-planner` so
/// that both measure the same population (and a user can regenerate any reported one).

/// SplitMix64: small, fast, and the same sequence on every platform for a seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in `range` (modulo bias is irrelevant at these range sizes).
    public mutating func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.count))
    }

    public mutating func double(_ range: ClosedRange<Double>) -> Double {
        range.lowerBound + Double(next() >> 11) / Double(1 << 53) * (range.upperBound - range.lowerBound)
    }
}

public enum RandomInstances {
    /// 3–12 layers, 2–4 stages, any schedule, m = 1–8, heterogeneous speeds, copy engines
    /// and links; each device gets 35–110% of an even share of the all-KEEP memory need
    /// (plus 800 bytes), so swap and recompute matter in most instances.
    public static func memoryTight(_ rng: inout SplitMix64, planner: PlannerKind = .vpipe) -> PlanRequest {
        let L = rng.int(3...12), p = rng.int(2...min(4, L))
        let schedule = Schedule.allCases[rng.int(0...2)]
        let m = rng.int(1...8)
        var layers: [LayerSpec] = []
        for l in 0..<L {
            layers.append(LayerSpec(name: "l\(l)", profile: LayerProfile(
                fwdSeconds: rng.double(0.5...3), bwdSeconds: rng.double(1...6), stashBytes: rng.int(100...2000),
                outputBytes: rng.int(10...400), paramBytes: rng.int(0...300))))
        }
        let model = ModelSpec(name: "random", layers: layers, inputBytes: rng.int(10...400), stateBytesPerParamByte: 3)
        let keepTotal = layers.reduce(0) { $0 + 3 * $1.profile.paramBytes + min(m, p) * $1.profile.stashBytes }
        let share = Double(keepTotal) / Double(p)
        let devices = (0..<p).map { i in
            DeviceSpec(name: "d\(i)", memoryBytes: Int(share * rng.double(0.35...1.1)) + 800, speed: rng.double(0.7...1.5),
                       hostBandwidth: rng.double(200...3000), reservedBytes: rng.int(0...50))
        }
        let links = (0..<(p - 1)).map { _ in LinkSpec(bandwidth: rng.double(500...20000), latency: rng.double(0...0.2)) }
        return PlanRequest(model: model, cluster: ClusterSpec(devices: devices, links: links),
                           options: PlanOptions(schedule: schedule, microBatches: m, planner: planner))
    }

    /// Deep pipelines: an analytic transformer LM (embedding, 12–48 identical blocks, head;
    /// `TransformerShape`) on 2–16 stages, any schedule, m = 1–4·p, Adam (κ = 4); half the
    /// instances get mixed device speeds (0.6–1.5), each device 50–110% of an even share of
    /// the all-KEEP memory need (never below its share of the weights' state plus 4
    /// activations, so most instances are feasible), copy engines 8–32 GB/s, links
    /// 10–200 GB/s. Memory is tight enough that many optima swap or recompute.
    public static func deepPipeline(_ rng: inout SplitMix64, planner: PlannerKind = .vpipe) -> PlanRequest {
        let hidden = [1024, 1600, 2048, 2560, 4096, 5120][rng.int(0...5)]
        let shape = TransformerShape(
            name: "lm-\(hidden)", blocks: rng.int(12...48), hidden: hidden, heads: hidden / 64,
            sequenceLength: [512, 1024, 2048][rng.int(0...2)], vocabulary: 50257, microBatchSize: rng.int(1...4))
        let model = shape.model()
        let L = model.layers.count
        let p = rng.int(2...min(16, L))
        let schedule = Schedule.allCases[rng.int(0...2)]
        let m = rng.int(1...(4 * p))
        let mixed = rng.int(0...1) == 1
        let state = model.layers.reduce(0.0) { $0 + 4 * Double($1.profile.paramBytes) }
        let stash = model.layers.reduce(0.0) { $0 + Double($1.profile.stashBytes) }
        let keepNeed = state + Double(min(m, p)) * stash
        let floorShare = state / Double(p) + 4 * stash / Double(L)
        let devices = (0..<p).map { i in
            DeviceSpec(name: "gpu\(i)", memoryBytes: Int(max(floorShare, keepNeed / Double(p) * rng.double(0.5...1.1))),
                       speed: mixed ? rng.double(0.6...1.5) : 1, hostBandwidth: rng.double(8e9...32e9))
        }
        let links = (0..<(p - 1)).map { _ in LinkSpec(bandwidth: rng.double(10e9...200e9), latency: 1e-5) }
        return PlanRequest(model: model, cluster: ClusterSpec(devices: devices, links: links),
                           options: PlanOptions(schedule: schedule, microBatches: m, planner: planner))
    }
}
