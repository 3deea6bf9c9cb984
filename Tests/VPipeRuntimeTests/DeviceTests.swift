#if canImport(Glibc)
import Glibc
#endif
import Testing
import VPipeCore
import VPipeRuntime

/// The device seam. Layers and optimizers compute only through their device's kernels: on
/// the `checked` backend, whose addresses fault when dereferenced outside its kernels, they
/// compute bit for bit what they compute on the CPU device, and the host moves no bytes
/// during a forward, a backward or an optimizer step.
@Suite struct DeviceTests {
    static func device(_ backend: String) throws -> Device {
        try DeviceBackends.make(backend, for: .init(name: "test \(backend) device", capacity: 1 << 26, bandwidth: nil))
    }

    /// Every built-in layer kind with an input shape (ids for the embedding).
    static let layers: [(kind: LayerKind, input: [Int])] = [
        (.linear(inFeatures: 6, outFeatures: 5), [4, 6]),
        (.activation(.relu), [4, 6]),
        (.activation(.gelu), [4, 6]),
        (.layerNorm(features: 6), [4, 6]),
        (.embedding(vocabulary: 7, features: 6, sequenceLength: 2), [4, 1]),
        (.transformerBlock(features: 8, heads: 2, sequenceLength: 2, mlpRatio: 2), [4, 8]),
        (.choiceBlock(features: 6, hiddenOptions: [4, 8], switchEvery: 1), [4, 6]),
        (.softmaxCrossEntropy, [4, 6]),
    ]

    /// What one forward, backward and optimizer step of a layer produced, and how many host
    /// transfers the device saw while computing them.
    struct Run: Equatable {
        var output: [Float], gradInput: [Float]?, parameters: [[Float]], state: [[Float]]
        var transfersWhileComputing: Int
    }

    static func run(_ kind: LayerKind, input shape: [Int], on backend: String, optimizer: Optimizer) throws -> Run {
        let device = try device(backend)
        defer { device.shutdown() }
        let arena = device.arena
        let layer = try makeLayer(kind: kind, name: "layer", index: 1, seed: 5, in: arena)
        let rows = shape[0]
        var rng = RNG(seed: 9)
        let x = try Tensor(shape: shape, in: arena, for: "input")
        if case let .embedding(vocabulary, _, _) = kind {
            try x.fill(from: (0..<x.count).map { Float($0 * 3 % vocabulary) })
        } else {
            try x.fill(from: (0..<x.count).map { _ in rng.uniform(-1, 1) })
        }
        let context = LayerContext(space: arena, label: "\(kind)", targets: (0..<rows).map { Int32($0 % shape[1]) },
                                   lossScale: 0.25, iteration: 2)
        let outputShape: [Int]
        if case .softmaxCrossEntropy = kind { outputShape = [1] } else { outputShape = try layer.forward(x, context).output.shape }
        let dy = try Tensor(shape: outputShape, in: arena, for: "output gradient")
        try dy.fill(from: (0..<dy.count).map { _ in rng.uniform(-1, 1) })
        let state = try optimizer.makeState(for: layer.parameters, in: arena, label: "state")

        let before = device.hostTransfers
        let (y, saved) = try layer.forward(x, context)
        let dx = try layer.backward(dy, saved: saved, context)
        optimizer.step(parameters: layer.parameters, gradients: layer.gradients, state: state, iteration: 1)
        let transfers = device.hostTransfers - before

        return Run(output: y.toArray(), gradInput: dx?.toArray(), parameters: layer.parameters.map { $0.toArray() },
                   state: state.joined().map { $0.toArray() }, transfersWhileComputing: transfers)
    }

    @Test(arguments: [Adam(learningRate: 0.01) as Optimizer, SGD(learningRate: 0.1, momentum: 0.9), SGD(learningRate: 0.1)])
    func layersComputeOnlyThroughTheirDevice(optimizer: Optimizer) throws {
        for (kind, shape) in Self.layers {
            let cpu = try Self.run(kind, input: shape, on: "cpu", optimizer: optimizer)
            let checked = try Self.run(kind, input: shape, on: "checked", optimizer: optimizer)
            #expect(checked.transfersWhileComputing == 0,
                    "\(kind): forward, backward and \(optimizer) moved \(checked.transfersWhileComputing) tensors between host and device; expected 0")
            #expect(cpu.transfersWhileComputing == 0, "\(kind) on the CPU device: \(cpu.transfersWhileComputing) host transfers")
            #expect(checked == cpu, "\(kind): the checked device computed \(checked), the CPU device \(cpu)")
        }
    }

    @Test func checkedAddressesAreNotHostPointers() throws {
        let cpu = try Self.device("cpu"), checked = try Self.device("checked")
        defer { cpu.shutdown(); checked.shutdown() }
        #expect(cpu.isHostAddressable && !checked.isHostAddressable)
        let t = try Tensor(shape: [3], in: checked.arena, for: "t")
        // Bit 62 set: a non-canonical address on x86-64 and AArch64, which faults when dereferenced.
        #expect(t.address.bits & (1 << 62) != 0, "checked address \(t.address.bits) looks like a host pointer")
        try t.fill(from: [1, 2, 3])
        #expect(t.toArray() == [1, 2, 3])
        // A view is an address further on, on either device.
        #expect(try t.view(offset: 1, shape: [2]).toArray() == [2, 3])
        // Copies between devices go through the host: a CPU tensor from a checked one and back.
        let there = try t.copy(to: cpu.arena, for: "copy")
        #expect(there.device === cpu && there.toArray() == [1, 2, 3])
        #expect(try there.copy(to: checked.arena, for: "back").toArray() == [1, 2, 3])
    }

    /// The counter the seam test relies on does see host access: a host-defined layer needs
    /// its tensors on the host, which the checked device stages and counts.
    @Test func hostAccessIsCounted() throws {
        ExternalRegistry.register("device-test-double", ExternalCallbacks(
            forward: { x, y, rows, i, _ in for k in 0..<(rows * i) { y[k] = 2 * x[k] }; return nil },
            backward: { _, _, dy, dx, rows, i, _ in for k in 0..<(rows * i) { dx[k] = 2 * dy[k] }; return nil }))
        defer { ExternalRegistry.unregister("device-test-double") }
        let device = try Self.device("checked")
        defer { device.shutdown() }
        let layer = try makeLayer(kind: .external(callback: "device-test-double", inFeatures: 2, outFeatures: 2),
                                  name: "ext", index: 0, seed: 1, in: device.arena)
        let x = try Tensor(shape: [1, 2], in: device.arena, for: "x")
        try x.fill(from: [1, -3])
        let before = device.hostTransfers
        let y = try layer.forward(x, LayerContext(space: device.arena, label: "ext")).output
        #expect(device.hostTransfers - before == 2, "expected the input and output staged for the host callback")
        #expect(y.toArray() == [2, -6], "the staged output must land on the device, got \(y.toArray())")
    }

    @Test func sessionsTrainBitIdenticallyOnTheCheckedDevice() throws {
        let mix: [MemoryPolicy] = [.keep, .swap, .recompute, .recompute, .swap, .keep]
        for (model, tokens) in [(SessionTests.mlp(), false), (SessionTests.gpt(), true)] {
            let cpu = try SessionTests.train(model, stages: 2, policies: mix, schedule: .oneFOneB, tokens: tokens, device: "cpu").losses
            let checked = try SessionTests.train(model, stages: 2, policies: mix, schedule: .oneFOneB, tokens: tokens, device: "checked").losses
            #expect(checked == cpu, "\(model.name): checked device \(checked) vs CPU device \(cpu)")
        }
    }

    @Test func unknownBackendIsAnErrorNamingTheChoices() {
        var training = TrainingOptions(microBatches: 2)
        training.deviceBackend = "tpu"
        do {
            _ = try TrainingSession(SessionConfig(model: SessionTests.mlp(), cluster: SessionTests.cluster(1),
                                                  plan: PlanLayout(stageStarts: [0], layerCount: 6, policies: Array(repeating: .keep, count: 6)),
                                                  training: training))
            Issue.record("expected an error for device backend \"tpu\"")
        } catch {
            #expect("\(error)".contains("\"tpu\"") && "\(error)".contains("checked, cpu"), "error: \(error)")
        }
    }
}
