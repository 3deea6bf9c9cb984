import Testing
import VPipeCore
import VPipeWire

/// Bytes in and out: round trips, and garbage that must become an error, never a crash.
@Suite struct WireTests {
    static let request = PlanRequest(
        model: TransformerShape.bertLarge().model(stateBytesPerParamByte: 3),
        cluster: .uniform(count: 4, device: DeviceSpec(name: "gpu", memoryBytes: 32 << 30, speed: 1.5, hostBandwidth: 12e9, reservedBytes: 1 << 20),
                          link: LinkSpec(bandwidth: 10e9, latency: 1e-5)),
        options: PlanOptions(schedule: .gpipe, microBatches: 8, planner: .timeBalanced))

    func decode(_ bytes: [UInt8]) throws -> PlanRequest {
        try bytes.withUnsafeBytes { try WireDecode.planRequest($0) }
    }

    @Test func planRequestRoundTrips() throws {
        let again = try decode(WireEncode.planRequest(Self.request))
        #expect(again == Self.request)
    }

    /// options.objective crosses the wire both ways; an unknown value is refused by name.
    @Test func objectiveRoundTripsAndUnknownValuesAreNamed() throws {
        var r = Self.request
        r.options.objective = .throughput
        r.options.planner = .vpipe
        #expect(try decode(WireEncode.planRequest(r)).options.objective == .throughput)
        let plan = try Planning.plan(r)
        #expect(plan.objective == .throughput)
        // A second `options` (field 3) holding objective = 7 (field 5): protobuf merges it.
        do {
            _ = try decode(WireEncode.planRequest(Self.request) + [0x1A, 0x02, 0x28, 0x07])
            Issue.record("expected objective 7 to be refused")
        } catch let VPipeError.invalidField(field, message) {
            #expect(field == "options.objective" && message.contains("got 7"), "field \(field): \(message)")
        }
    }

    @Test func planRoundTripsItsDecisions() throws {
        let plan = try Planning.plan(Self.request)
        let bytes = WireEncode.plan(plan)
        let decoded = try bytes.withUnsafeBytes { try WireDecode.plan($0) }
        #expect(decoded.layout == plan.layout)
        #expect(decoded.schedule == .gpipe && decoded.microBatches == 8 && decoded.planner == .timeBalanced)
    }

    @Test func emptyBytesNameTheMissingModel() {
        do { _ = try decode([]); Issue.record("expected an error") } catch let VPipeError.invalidField(field, _) {
            #expect(field == "model")
        } catch { Issue.record("expected invalidField(model), got \(error)") }
    }

    @Test func everyTruncationFailsCleanly() throws {
        let bytes = WireEncode.planRequest(Self.request)
        var malformed = 0
        // Every prefix: protobuf cannot always tell a short message from a truncated one, so
        // a prefix may decode; it must then be judged by validation or planned, never crash.
        for n in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 200)) {
            do { _ = try Planning.plan(try decode(Array(bytes[0..<n]))) } catch is WireError {
                malformed += 1
            } catch is VPipeError {}
        }
        #expect(malformed > 10, "expected most truncations to be reported as malformed, got \(malformed)")
    }

    @Test func randomBytesAndMutationsNeverCrash() {
        var state: UInt64 = 7
        func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state >> 33
        }
        let valid = WireEncode.planRequest(Self.request)
        var outcomes = [String: Int]()
        for i in 0..<3000 {
            var bytes: [UInt8]
            if i % 2 == 0 {
                bytes = (0..<Int(next() % 300)).map { _ in UInt8(truncatingIfNeeded: next()) }
            } else {
                bytes = valid
                for _ in 0..<(1 + Int(next() % 4)) {
                    bytes[Int(next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: next())
                }
            }
            do {
                _ = try Planning.plan(try decode(bytes))
                outcomes["planned", default: 0] += 1
            } catch is WireError {
                outcomes["malformed", default: 0] += 1
            } catch let e as VPipeError {
                outcomes["\(e)".split(separator: ":").first.map(String.init) ?? "?", default: 0] += 1
            } catch {
                Issue.record("unexpected error type \(error)")
            }
        }
        #expect(outcomes["malformed", default: 0] > 100, "outcomes: \(outcomes)")
    }

    @Test func modelSpecEmbedsInAPlanRequest() throws {
        // A host appends the ModelSpec bytes as PlanRequest field 1 (`model`) to a request
        // whose model has no layers; protobuf merges the two into the imported model.
        var empty = Self.request
        empty.model = ModelSpec(name: "", layers: [], inputBytes: 0)
        let model = Self.request.model
        let bytes = WireEncode.modelSpec(model)
        var length: [UInt8] = []
        var n = bytes.count
        repeat {
            length.append(UInt8(n & 0x7F) | (n > 0x7F ? 0x80 : 0))
            n >>= 7
        } while n > 0
        let again = try decode(WireEncode.planRequest(empty) + [0x0A] + length + bytes)
        #expect(again.model == model)
    }

    @Test func unknownEnumValuesNameTheField() throws {
        // options.schedule = 9: field 3 (options) { field 1 varint 9, field 2 varint 4 }
        var bytes = WireEncode.planRequest(Self.request)
        bytes += [0x1A, 0x04, 0x08, 0x09, 0x10, 0x04]  // a later `options` merges over the first
        do { _ = try decode(bytes); Issue.record("expected an error") } catch let VPipeError.invalidField(field, message) {
            #expect(field == "options.schedule", "got \(field): \(message)")
        }
    }

    @Test func oversizedBytesAreRejected() throws {
        var r = Self.request
        r.model.layers[0].profile.stashBytes = Int.max
        do { _ = try decode(WireEncode.planRequest(r)); Issue.record("expected an error") } catch let VPipeError.invalidField(field, _) {
            #expect(field == "model.layers[0].profile.stash_bytes")
        }
    }
    /// protobuf-c passes a string field on as a C string: a NUL inside it would silently cut the
    /// name, and invalid UTF-8 would be repaired into another name. Both are refused, naming the field.
    @Test func namesWithANulOrInvalidUTF8AreRefusedNamingTheField() throws {
        var r = Self.request
        r.model.layers[5] = LayerSpec(name: "L5#tail", profile: r.model.layers[5].profile, kind: r.model.layers[5].kind)
        let clean = WireEncode.planRequest(r)
        let marker = Array("L5#tail".utf8)
        let at = try #require((0...(clean.count - marker.count)).first { Array(clean[$0..<($0 + marker.count)]) == marker }) + 2
        for (byte, needle) in [(UInt8(0), "NUL byte at offset 2"), (UInt8(0xFF), "not valid UTF-8")] {
            var bytes = clean
            bytes[at] = byte
            do { _ = try decode(bytes); Issue.record("expected an error for byte \(byte)") } catch let VPipeError.invalidField(field, message) {
                #expect(field == "model.layers[5].name" && message.contains(needle), "got \(field): \(message)")
            }
        }
        #expect(try decode(clean).model.layers[5].name == "L5#tail")
    }
}
