import Dispatch
import Testing
import VPipeCore
import VPipeRuntime

/// A stage's parameters, gradients and optimizer state in one allocation (llm.c's layout).
@Suite struct ParameterMemoryTests {
    static let kinds: [LayerKind] = [.linear(inFeatures: 6, outFeatures: 8), .layerNorm(features: 8), .activation(.gelu),
                                     .transformerBlock(features: 8, heads: 2, sequenceLength: 2, mlpRatio: 2)]

    @Test func aStageIsOneAllocationOfViews() throws {
        let arena = MemorySpace(name: "d0", kind: .device, capacity: 1 << 24)
        let layers = try Self.kinds.enumerated().map { try makeLayer(kind: $1, name: "l\($0)", index: $0, seed: 3, in: nil) }
        let before = layers.map { $0.parameters.map { $0.toArray() } }
        let x = try GradientCheck.randomTensor([4, 6], seed: 1)
        func outputs() throws -> [Float] {
            var h = x
            for l in layers { h = try l.forward(h, LayerContext(space: nil, label: l.name)).output }
            return h.toArray()
        }
        let expected = try outputs()
        let adam = Adam(learningRate: 0.1)
        let memory = try ParameterMemory.pack(layers.enumerated().map { ($0, $1, nil) }, statesPerParameter: adam.statesPerParameter,
                                              in: arena, label: "stage 0 parameters")
        let floats = layers.reduce(0) { $0 + $1.parameters.reduce(0) { $0 + $1.count } }
        #expect(arena.bytesInUse == floats * 4 * 4, "one block of weights, gradients, m and v: expected \(floats * 16) bytes, \(arena.bytesInUse) in use")
        let blocks = Set(memory.values.flatMap { m in (m.values + m.gradients + m.state.joined()).map { ObjectIdentifier($0.base!) } })
        #expect(blocks.count == 1, "expected every tensor to be a view of one allocation, found \(blocks.count)")
        for (i, layer) in layers.enumerated() {
            let m = try #require(memory[i])
            #expect(zip(layer.parameters, m.values).allSatisfy { $0 === $1 }, "layer \(i) does not use its views")
            #expect(layer.parameters.map { $0.toArray() } == before[i], "layer \(i): packing changed its weights")
            #expect(m.weightsAndState.count == 3 * m.gradientRun.count, "layer \(i): weights + m + v is one run")
        }
        #expect(try outputs() == expected, "packed layers compute differently")
        // The optimizer steps the views: the block's contents change where the layer's weights do.
        for (i, layer) in layers.enumerated() {
            for g in layer.gradients { try g.fill(from: [Float](repeating: 1, count: g.count)) }
            adam.step(parameters: layer.parameters, gradients: layer.gradients, state: memory[i]!.state, iteration: 1)
            #expect(memory[i]!.weightsAndState.toArray().prefix(layer.parameters.reduce(0) { $0 + $1.count })
                        == ArraySlice(layer.parameters.flatMap { $0.toArray() }), "layer \(i): block and weights differ")
        }
    }

    @Test func outOfMemoryNamesTheFirstLayerThatDoesNotFit() throws {
        // Layer 0: 6·8 + 8 = 56 floats, × 2 (weights, gradients) = 448 bytes; layer 1: 16 floats = 128 bytes.
        let arena = MemorySpace(name: "stage 0 (device \"d0\")", kind: .device, capacity: 500)
        let layers = try Self.kinds.prefix(2).enumerated().map { try makeLayer(kind: $1, name: "l\($0)", index: $0, seed: 3, in: nil) }
        do {
            _ = try ParameterMemory.pack(layers.enumerated().map { ($0, $1, nil) }, statesPerParameter: 0, in: arena, label: "stage 0 parameters")
            Issue.record("expected out of memory")
        } catch {
            let text = "\(error)"
            #expect(text.contains("stage 0 (device \"d0\")") && text.contains("layer 1 (\"l1\")") && text.contains("128 bytes"),
                    "expected the error to name the space, layer 1 and its 128 bytes, got: \(text)")
        }
        #expect(arena.bytesInUse == 0, "a failed packing must leave nothing charged")
    }
    /// Reading back an empty tensor (a parameterless layer's block) on one thread while another
    /// reads an empty array must not race: `toArray` once wrote the count into the runtime's
    /// shared empty-array storage. Only ThreadSanitizer sees it (`make test-sanitize`), where it
    /// failed before the fix; the values are checked everywhere.
    @Test func emptyTensorsReadBackWithoutWritingSharedStorage() throws {
        let shared = EmptyReads(empty: try Tensor(shape: [0], in: nil, for: "empty"))
        DispatchQueue.concurrentPerform(iterations: 2) { k in
            for _ in 0..<1000 {
                if k == 0 { shared.tensorValues += shared.empty.toArray().count } else { shared.arrayElements += Self.opaqueCount(shared.arrays[1]) }
            }
        }
        #expect(shared.tensorValues == 0 && shared.arrayElements == 0,
                "empty tensors and arrays read back non-empty: \(shared.tensorValues), \(shared.arrayElements)")
    }

    @inline(never) static func opaqueCount(_ a: [Tensor]) -> Int { a.count }
}

/// What the two threads of `emptyTensorsReadBackWithoutWritingSharedStorage` share; each
/// thread writes its own counter only.
private final class EmptyReads: @unchecked Sendable {
    let empty: Tensor
    let arrays: [[Tensor]] = [[], []]
    var tensorValues = 0
    var arrayElements = 0
    init(empty: Tensor) { self.empty = empty }
}
