import Testing
import VPipeRuntime

/// Single optimizer steps against values worked out by hand.
@Suite struct OptimizerTests {
    func tensor(_ values: [Float]) throws -> Tensor {
        let t = try Tensor(shape: [values.count], in: nil, for: "test")
        try t.fill(from: values)
        return t
    }

    func expectNear(_ got: [Float], _ want: [Float], _ what: String) {
        #expect(got.count == want.count)
        for (g, w) in zip(got, want) {
            #expect(abs(g - w) <= 1e-6 * max(1, abs(w)), "\(what): expected \(want), got \(got)")
        }
    }

    @Test func sgdWithoutMomentum() throws {
        let opt = SGD(learningRate: 0.1)
        #expect(opt.stateBytesPerParamByte == 2)
        let p = try tensor([1, -2]), g = try tensor([0.5, -1])
        let state = try opt.makeState(for: [p], in: nil, label: "fc")
        #expect(state.count == 1 && state[0].isEmpty, "no state without momentum")
        opt.step(parameters: [p], gradients: [g], state: state, iteration: 1)
        expectNear(p.toArray(), [0.95, -1.9], "p − 0.1·g")
    }

    @Test func sgdWithMomentumTwoSteps() throws {
        let opt = SGD(learningRate: 0.1, momentum: 0.9)
        #expect(opt.stateBytesPerParamByte == 3)
        let space = MemorySpace(name: "d0", kind: .device, capacity: 1024)
        let p = try tensor([1, -2]), g = try tensor([0.5, -1])
        let state = try opt.makeState(for: [p], in: space, label: "fc")
        #expect(space.bytesInUse == 8, "one velocity tensor charged")
        opt.step(parameters: [p], gradients: [g], state: state, iteration: 1)
        // v = g = [0.5, −1]; p = [1 − 0.05, −2 + 0.1]
        expectNear(p.toArray(), [0.95, -1.9], "step 1")
        opt.step(parameters: [p], gradients: [g], state: state, iteration: 2)
        // v = 0.9·v + g = [0.95, −1.9]; p = [0.95 − 0.095, −1.9 + 0.19]
        expectNear(state[0][0].toArray(), [0.95, -1.9], "velocity after step 2")
        expectNear(p.toArray(), [0.855, -1.71], "step 2")
    }

    @Test func adamFirstAndSecondStep() throws {
        let opt = Adam(learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8)
        #expect(opt.stateBytesPerParamByte == 4)
        let p = try tensor([1, -2, 0]), g = try tensor([0.5, -4, 0])
        let state = try opt.makeState(for: [p], in: nil, label: "fc")
        #expect(state[0].count == 2)
        opt.step(parameters: [p], gradients: [g], state: state, iteration: 1)
        // Step 1: m̂ = g, v̂ = g², so the update is lr·sign(g) (0 where g = 0).
        expectNear(p.toArray(), [0.99, -1.99, 0], "step 1")
        expectNear(state[0][0].toArray(), [0.05, -0.4, 0], "m = 0.1·g")
        expectNear(state[0][1].toArray(), [0.00025, 0.016, 0], "v = 0.001·g²")
        // Step 2 with gradient [1, 0, 0]:
        //   m = [0.9·0.05 + 0.1, 0.9·(−0.4), 0] = [0.145, −0.36, 0]; m̂ = m / 0.19
        //   v = [0.999·0.00025 + 0.001, 0.999·0.016, 0] = [0.00124975, 0.015984, 0]; v̂ = v / 0.001999
        //   p −= 0.01·m̂/(√v̂ + 1e-8)
        try g.fill(from: [1, 0, 0])
        opt.step(parameters: [p], gradients: [g], state: state, iteration: 2)
        let mHat: [Double] = [0.145 / 0.19, -0.36 / 0.19]
        let vHat: [Double] = [0.00124975 / 0.001999, 0.015984 / 0.001999]
        let want = [Float(0.99 - 0.01 * mHat[0] / (vHat[0].squareRoot() + 1e-8)),
                    Float(-1.99 - 0.01 * mHat[1] / (vHat[1].squareRoot() + 1e-8)), 0]
        for (got, w) in zip(p.toArray(), want) {
            #expect(abs(got - w) <= 2e-6, "step 2: expected \(want), got \(p.toArray())")
        }
    }
}
