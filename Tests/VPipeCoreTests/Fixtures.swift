import VPipeCore

/// Small models and clusters whose cost-model numbers are worked out by hand in the tests.
enum Fixtures {
    /// 4 layers, input 100 B, κ = 2. (f, b, a, o, w) per layer:
    ///   L0 (1, 2, 10, 20, 5)  L1 (2, 4, 30, 40, 0)  L2 (1, 1, 50, 10, 100)  L3 (3, 3, 5, 8, 1)
    static let handModel = ModelSpec(
        name: "hand", layers: [
            layer("L0", 1, 2, 10, 20, 5), layer("L1", 2, 4, 30, 40, 0),
            layer("L2", 1, 1, 50, 10, 100), layer("L3", 3, 3, 5, 8, 1),
        ], inputBytes: 100, stateBytesPerParamByte: 2)

    /// dev0: M 1000, speed 1, H 10, R 7; dev1: M 500, speed 2, H 5; link B 10, λ 0.5.
    static let handCluster = ClusterSpec(
        devices: [
            DeviceSpec(name: "d0", memoryBytes: 1000, speed: 1, hostBandwidth: 10, reservedBytes: 7),
            DeviceSpec(name: "d1", memoryBytes: 500, speed: 2, hostBandwidth: 5),
        ],
        links: [LinkSpec(bandwidth: 10, latency: 0.5)])

    static func layer(_ name: String, _ f: Double, _ b: Double, _ a: Int, _ o: Int, _ w: Int) -> LayerSpec {
        LayerSpec(name: name, profile: LayerProfile(fwdSeconds: f, bwdSeconds: b, stashBytes: a, outputBytes: o, paramBytes: w))
    }

    /// A chain of layers from (f+b split 1:2, a, o, w) tuples.
    static func model(_ layers: [(Double, Int, Int, Int)], input: Int = 8) -> ModelSpec {
        ModelSpec(name: "m", layers: layers.enumerated().map { i, t in
            layer("l\(i)", t.0 / 3, 2 * t.0 / 3, t.1, t.2, t.3)
        }, inputBytes: input, stateBytesPerParamByte: 2)
    }

    static func cluster(_ p: Int, memory: Int = 1 << 40, hostBandwidth: Double = 1e9,
                        linkBandwidth: Double = 1e12, latency: Double = 0) -> ClusterSpec {
        .uniform(count: p, device: DeviceSpec(name: "d", memoryBytes: memory, hostBandwidth: hostBandwidth),
                 link: LinkSpec(bandwidth: linkBandwidth, latency: latency))
    }

    /// Deterministic pseudo-random numbers, so random instances are reproducible.
    typealias Random = SplitMix64

    /// Every way to cut `L` layers into `p` non-empty contiguous stages, as start indices.
    static func allPartitions(_ L: Int, _ p: Int) -> [[Int]] {
        if p == 1 { return [[0]] }
        var out: [[Int]] = []
        func go(_ starts: [Int]) {
            if starts.count == p { out.append(starts); return }
            let last = starts.last!
            let remaining = p - starts.count
            for s in (last + 1)...(L - remaining) { go(starts + [s]) }
        }
        go([0])
        return out
    }

    /// Every layout of `L` layers on `p` stages: every partition with every KEEP/SWAP/RECOMPUTE
    /// assignment (brute force for tiny instances: 3^L per partition).
    static func everyLayout(_ L: Int, _ p: Int, _ body: (PlanLayout) throws -> Void) rethrows {
        var policies = [MemoryPolicy](repeating: .keep, count: L)
        let assignments = (0..<L).reduce(1) { r, _ in r * 3 }
        for starts in allPartitions(L, p) {
            for code in 0..<assignments {
                var c = code
                for l in 0..<L { policies[l] = MemoryPolicy(rawValue: c % 3 + 1)!; c /= 3 }
                try body(PlanLayout(stageStarts: starts, layerCount: L, policies: policies))
            }
        }
    }
}
