import VPipeCore

/// A plan layout as bytes, for transports that send it between processes (rank 0 plans or
/// re-plans and every rank applies the same layout). The runtime's own format: 64-bit
/// little-endian integers `[version, stages, first layer of each stage..., layers,
/// policy of each layer...]`. Decoding checks everything a layout promises (stages cover
/// the layers in order, known policies), so bytes from a peer never build a bad pipeline.
enum PlanBytes {
    static let version: Int64 = 1

    static func encode(_ layout: PlanLayout) -> [UInt8] {
        var words: [Int64] = [version, Int64(layout.ranges.count)]
        words += layout.ranges.map { Int64($0.lowerBound) }
        words.append(Int64(layout.policies.count))
        words += layout.policies.map { Int64($0.rawValue) }
        return words.flatMap { w in withUnsafeBytes(of: w.littleEndian, Array.init) }
    }

    static func decode(_ bytes: [UInt8]) throws -> PlanLayout {
        guard bytes.count % 8 == 0, bytes.count >= 24 else { throw malformed("\(bytes.count) bytes is not a whole number of at least 3 integers") }
        let words: [Int64] = stride(from: 0, to: bytes.count, by: 8).map { i in
            bytes[i..<(i + 8)].reversed().reduce(Int64(0)) { $0 << 8 | Int64($1) }
        }
        guard words[0] == version else { throw malformed("version \(words[0]), expected \(version)") }
        let stages = words[1]
        guard stages >= 1, stages <= Int64(words.count - 3) else { throw malformed("\(stages) stages in \(words.count) integers") }
        let s = Int(stages)
        let layers = words[2 + s]
        guard layers >= stages, Int64(words.count) == 3 + stages + layers else {
            throw malformed("\(layers) layers for \(stages) stages in \(words.count) integers")
        }
        let starts = words[2..<(2 + s)].map { Int($0) }
        guard starts.first == 0, zip(starts, starts.dropFirst()).allSatisfy({ $0 < $1 }), starts[s - 1] < Int(layers) else {
            throw malformed("stage starts \(starts) do not split \(layers) layers in order")
        }
        let policies = try words[(3 + s)...].enumerated().map { l, raw in
            guard let p = MemoryPolicy(rawValue: Int(raw)) else { throw malformed("layer \(l) has policy \(raw)") }
            return p
        }
        return PlanLayout(stageStarts: starts, layerCount: Int(layers), policies: policies)
    }

    private static func malformed(_ what: String) -> Error {
        RuntimeError.failed("a plan received from another process is malformed: \(what)")
    }
}
