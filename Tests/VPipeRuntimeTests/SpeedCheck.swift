import Testing
import VPipeCore
import VPipeRuntime
#if canImport(Glibc)
import Glibc
#endif

/// Not a unit test: times forward + backward of Linear 1024×1024 on 256 rows.
/// Run with `VPIPE_SPEED=1 swift test -c release --skip-build --filter SpeedCheck`.
@Suite struct SpeedCheck {
    @Test(.enabled(if: getenv("VPIPE_SPEED") != nil)) func linear1024() throws {
        let layer = try makeLayer(kind: .linear(inFeatures: 1024, outFeatures: 1024), name: "fc", index: 0, seed: 1, in: nil)
        let x = try GradientCheck.randomTensor([256, 1024], seed: 1)
        let dy = try GradientCheck.randomTensor([256, 1024], seed: 2)
        let ctx = LayerContext(space: nil, label: "fc")
        func now() -> Double { var t = timespec(); clock_gettime(CLOCK_MONOTONIC, &t); return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9 }
        for _ in 0..<3 { let (_, s) = try layer.forward(x, ctx); _ = try layer.backward(dy, saved: s, ctx) }
        let n = 20
        let start = now()
        for _ in 0..<n { let (_, s) = try layer.forward(x, ctx); _ = try layer.backward(dy, saved: s, ctx) }
        let ms = (now() - start) / Double(n) * 1000
        let gflops = 3 * 2 * 256.0 * 1024 * 1024 / (ms / 1000) / 1e9
        print("SpeedCheck: Linear 1024x1024, 256 rows, forward+backward: \(ms) ms (\(gflops) GFLOP/s)")
        #expect(ms > 0)
    }
}
