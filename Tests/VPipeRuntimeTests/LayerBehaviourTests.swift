import Testing
import VPipeCore
import VPipeRuntime

/// What the executor relies on besides the gradients: determinism, pure forwards, memory
/// charged and errors that name the layer.
@Suite struct LayerBehaviourTests {
    static let kinds: [(LayerKind, [Int])] = [
        (.linear(inFeatures: 6, outFeatures: 3), [4, 6]),
        (.activation(.relu), [4, 6]),
        (.activation(.gelu), [4, 6]),
        (.layerNorm(features: 6), [4, 6]),
        (.transformerBlock(features: 8, heads: 2, sequenceLength: 4, mlpRatio: 0), [8, 8]),
    ]

    func values(_ layer: Layer) -> [[Float]] { layer.parameters.map { $0.toArray() } }

    @Test func sameSeedAndIndexGiveSameWeightsAndOutputs() throws {
        let ctx = LayerContext(space: nil, label: "test")
        for (kind, shape) in LayerBehaviourTests.kinds {
            let a = try makeLayer(kind: kind, name: "a", index: 3, seed: 42, in: nil)
            let b = try makeLayer(kind: kind, name: "b", index: 3, seed: 42, in: MemorySpace(name: "d1", kind: .device, capacity: 1 << 24))
            #expect(values(a) == values(b), "\(kind): same (seed, index) must give identical weights")
            let x = try GradientCheck.randomTensor(shape, seed: 1)
            let ya = try a.forward(x, ctx).output.toArray()
            let yb = try b.forward(x, ctx).output.toArray()
            #expect(ya == yb, "\(kind): same weights and input must give identical outputs")
            // Recompute: calling forward again gives a bit-identical output.
            #expect(try a.forward(x, ctx).output.toArray() == ya, "\(kind): forward is not reproducible")
        }
    }

    @Test func differentIndexOrSeedGiveDifferentWeights() throws {
        let kind = LayerKind.linear(inFeatures: 4, outFeatures: 4)
        let a = try makeLayer(kind: kind, name: "a", index: 1, seed: 42, in: nil)
        let b = try makeLayer(kind: kind, name: "a", index: 2, seed: 42, in: nil)
        let c = try makeLayer(kind: kind, name: "a", index: 1, seed: 43, in: nil)
        #expect(values(a) != values(b))
        #expect(values(a) != values(c))
    }

    @Test func linearInitBoundAndEmbeddingScale() throws {
        let fc = try makeLayer(kind: .linear(inFeatures: 16, outFeatures: 32), name: "fc", index: 0, seed: 9, in: nil)
        let w = fc.parameters[0].toArray()
        #expect(w.allSatisfy { abs($0) <= 0.25 }, "expected |W| <= 1/√16")
        let emb = try makeLayer(kind: .embedding(vocabulary: 100, features: 50, sequenceLength: 0), name: "e",
                                index: 0, seed: 9, in: nil)
        let e = emb.parameters[0].toArray()
        let std = (e.reduce(0) { $0 + $1 * $1 } / Float(e.count)).squareRoot()
        #expect(abs(std - 0.02) < 0.002, "expected std ≈ 0.02, got \(std)")
    }

    @Test func blockRecomputeAfterBackwardIsIdentical() throws {
        // Backward must not disturb anything forward reads (e.g. by updating saved tensors in place).
        let layer = try makeLayer(kind: .transformerBlock(features: 8, heads: 2, sequenceLength: 4, mlpRatio: 2),
                                  name: "block", index: 0, seed: 3, in: nil)
        let ctx = LayerContext(space: nil, label: "test")
        let x = try GradientCheck.randomTensor([8, 8], seed: 2)
        let before = x.toArray()
        let (y, saved) = try layer.forward(x, ctx)
        let first = y.toArray()
        _ = try layer.backward(try GradientCheck.randomTensor([8, 8], seed: 4), saved: saved, ctx)
        #expect(x.toArray() == before, "input changed by forward/backward")
        #expect(try layer.forward(x, ctx).output.toArray() == first)
    }

    @Test func outOfMemoryNamesLayerAndBytes() throws {
        let layer = try makeLayer(kind: .linear(inFeatures: 64, outFeatures: 64), name: "fc1", index: 3, seed: 1, in: nil)
        let space = MemorySpace(name: "stage 1 device", kind: .device, capacity: 1000)
        let ctx = LayerContext(space: space, label: layerLabel(index: 3, name: "fc1"))
        let x = try GradientCheck.randomTensor([8, 64], seed: 1)  // output 8·64·4 = 2048 bytes > 1000
        #expect {
            _ = try layer.forward(x, ctx)
        } throws: { error in
            guard let e = error as? RuntimeError, case let .outOfMemory(_, what, requested, _, _) = e else { return false }
            let text = e.description
            return what == "layer 3 (\"fc1\") output" && requested == 2048
                && text.contains("layer 3 (\"fc1\") output") && text.contains("2048 bytes") && text.contains("stage 1 device")
        }
        #expect(space.bytesInUse == 0, "nothing stays charged after a failed forward")
    }

    @Test func parametersAreChargedAndPlacementMovesThem() throws {
        let space = MemorySpace(name: "d0", kind: .device, capacity: 1 << 20)
        let layer = try makeLayer(kind: .linear(inFeatures: 10, outFeatures: 5), name: "fc", index: 0, seed: 1, in: space)
        #expect(space.bytesInUse == 2 * (50 + 5) * 4, "weights and gradients charged")
        let before = values(layer)
        let other = MemorySpace(name: "d1", kind: .device, capacity: 1 << 20)
        try layer.place(in: other)
        #expect(space.bytesInUse == 0)
        #expect(other.bytesInUse == 2 * (50 + 5) * 4)
        #expect(values(layer) == before)

        let tiny = MemorySpace(name: "d2", kind: .device, capacity: 100)
        #expect(throws: RuntimeError.self) {
            _ = try makeLayer(kind: .linear(inFeatures: 10, outFeatures: 5), name: "fc", index: 0, seed: 1, in: tiny)
        }
    }

    @Test func blockActivationsAreCharged() throws {
        let space = MemorySpace(name: "d0", kind: .device, capacity: 1 << 24)
        let layer = try makeLayer(kind: .transformerBlock(features: 8, heads: 2, sequenceLength: 4, mlpRatio: 0),
                                  name: "block", index: 1, seed: 1, in: space)
        #expect(layer.parameters[8].shape == [32, 8], "mlpRatio 0 means 4: fc is [4C, C]")
        let weights = space.bytesInUse
        let ctx = LayerContext(space: space, label: "layer 1 (\"block\")")
        do {
            let (y, saved) = try layer.forward(try GradientCheck.randomTensor([8, 8], seed: 1), ctx)
            withExtendedLifetime(saved) {
                #expect(space.bytesInUse > weights + y.bytes, "the stash is charged to the stage's space")
            }
        }
        #expect(space.bytesInUse == weights, "activations released when the output and stash go")
    }

    @Test func embeddingRejectsBadIds() throws {
        let layer = try makeLayer(kind: .embedding(vocabulary: 10, features: 4, sequenceLength: 0), name: "wte",
                                  index: 0, seed: 1, in: nil)
        let ctx = LayerContext(space: nil, label: "layer 0 (\"wte\")")
        for bad: Float in [10, -1, 2.5, .nan] {
            let ids = try Tensor(shape: [3], in: nil, for: "ids")
            try ids.fill(from: [1, bad, 2])
            #expect {
                _ = try layer.forward(ids, ctx)
            } throws: { error in
                let text = "\(error)"
                return text.contains("layer 0 (\"wte\")") && text.contains("row 1") && text.contains("\(bad)")
            }
        }
        let wrong = try Tensor(shape: [3, 2], in: nil, for: "ids")
        #expect(throws: RuntimeError.self) { _ = try layer.forward(wrong, ctx) }
    }

    @Test func lossRejectsBadTargets() throws {
        let layer = try makeLayer(kind: .softmaxCrossEntropy, name: "loss", index: 5, seed: 1, in: nil)
        let logits = try Tensor(shape: [3, 4], in: nil, for: "logits")
        for targets: [Int32] in [[0, 1, 4], [0, -1, 2]] {
            let ctx = LayerContext(space: nil, label: "layer 5 (\"loss\")", targets: targets)
            #expect {
                _ = try layer.forward(logits, ctx)
            } throws: { error in
                let text = "\(error)"
                let row = targets.firstIndex { $0 < 0 || $0 >= 4 } ?? -1
                return text.contains("layer 5 (\"loss\")") && text.contains("row \(row)")
            }
        }
        let short = LayerContext(space: nil, label: "layer 5 (\"loss\")", targets: [0, 1])
        #expect(throws: RuntimeError.self) { _ = try layer.forward(logits, short) }
    }

    @Test func badShapesThrowNamingLayerAndShapes() throws {
        let ctx = LayerContext(space: nil, label: "layer 7 (\"x\")")
        let fc = try makeLayer(kind: .linear(inFeatures: 4, outFeatures: 2), name: "x", index: 7, seed: 1, in: nil)
        #expect {
            _ = try fc.forward(try Tensor(shape: [3, 5], in: nil, for: "x"), ctx)
        } throws: { error in
            "\(error)".contains("layer 7 (\"x\")") && "\(error)".contains("[3, 5]") && "\(error)".contains("[rows, 4]")
        }
        let block = try makeLayer(kind: .transformerBlock(features: 8, heads: 2, sequenceLength: 4, mlpRatio: 1),
                                  name: "x", index: 7, seed: 1, in: nil)
        #expect {
            _ = try block.forward(try Tensor(shape: [6, 8], in: nil, for: "x"), ctx)
        } throws: { error in
            "\(error)".contains("layer 7 (\"x\")") && "\(error)".contains("6 rows") && "\(error)".contains("4 rows")
        }
        #expect(throws: RuntimeError.self) {
            _ = try makeLayer(kind: .transformerBlock(features: 8, heads: 3, sequenceLength: 4, mlpRatio: 1),
                              name: "x", index: 7, seed: 1, in: nil)
        }
        #expect(throws: RuntimeError.self) {
            _ = try makeLayer(kind: .linear(inFeatures: 0, outFeatures: 2), name: "x", index: 7, seed: 1, in: nil)
        }
        // A backward with the wrong stash or gradient shape throws rather than traps.
        let (y, saved) = try fc.forward(try Tensor(shape: [3, 4], in: nil, for: "x"), ctx)
        #expect(throws: RuntimeError.self) { _ = try fc.backward(y, saved: [], ctx) }
        #expect(throws: RuntimeError.self) {
            _ = try fc.backward(try Tensor(shape: [3, 3], in: nil, for: "dy"), saved: saved, ctx)
        }
    }
}

/// Sizes a host can pass that must throw, not trap.
@Suite struct OversizeTests {
    @Test func hugeSizesThrow() throws {
        let kinds: [LayerKind] = [
            .linear(inFeatures: Int.max / 2, outFeatures: 4),
            .linear(inFeatures: 1 << 30, outFeatures: 1 << 30),
            .embedding(vocabulary: 10, features: 4, sequenceLength: -1),
            .transformerBlock(features: 1 << 40, heads: 1, sequenceLength: 4, mlpRatio: 0),
            .transformerBlock(features: 8, heads: 2, sequenceLength: 4, mlpRatio: -3),
        ]
        // Charged to a space, as the executor always does: sizes that fit in an Int but not
        // in the space are refused by its capacity before anything is allocated.
        let space = MemorySpace(name: "d0", kind: .device, capacity: 1 << 30)
        for kind in kinds {
            #expect(throws: RuntimeError.self, "\(kind)") {
                _ = try makeLayer(kind: kind, name: "big", index: 0, seed: 1, in: space)
            }
        }
        #expect(space.bytesInUse == 0)
        #expect(throws: RuntimeError.self) { _ = try Tensor(shape: [1 << 40, 1 << 40], in: nil, for: "huge") }
    }
}
