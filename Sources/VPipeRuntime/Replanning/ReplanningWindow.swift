import VPipeCore

/// What online re-planning decides on: the steps since the last decision, with each layer's
/// times normalised to its device's nominal speed (a layer that moves to a slow device must
/// not look slow itself), each stage's measured speed relative to the fastest seen, and the
/// iteration times (a decision's "before" and the previous decision's "after").
package struct ReplanningWindow {
    fileprivate var sums: [(fwd: Double, bwd: Double)] = []
    fileprivate(set) var iterations = 0
    /// Measured iteration seconds in the window (read by `applyPlan` from another thread:
    /// the session keeps the window under its state lock).
    fileprivate(set) var iterationSeconds: [Double] = []
    /// Speed of each stage's device relative to the fastest seen (1.0 = nominal).
    fileprivate var stageSpeed: [Double] = []
    private var calibrationBaseline = Double.infinity

    package init() {}

    var meanIterationSeconds: Double? {
        iterationSeconds.isEmpty ? nil : iterationSeconds.reduce(0, +) / Double(iterationSeconds.count)
    }

    /// Adds a step: layer times normalised by the measured speed of the stage that ran
    /// them, stage speeds from the reference kernel.
    mutating func observe(_ r: Pipeline.StepResult, layers: Int) {
        if sums.count != layers { sums = Array(repeating: (0, 0), count: layers) }
        if stageSpeed.count != r.measurements.count { stageSpeed = Array(repeating: 1, count: r.measurements.count) }
        for m in r.measurements where m.calibrationSeconds > 0 { calibrationBaseline = min(calibrationBaseline, m.calibrationSeconds) }
        for (i, m) in r.measurements.enumerated() where m.calibrationSeconds > 0 {
            stageSpeed[i] = min(1, calibrationBaseline / m.calibrationSeconds)
        }
        for (i, range) in r.ranges.enumerated() {
            let speed = i < stageSpeed.count ? stageSpeed[i] : 1
            for (j, l) in range.enumerated() where j < r.measurements[i].forwardSeconds.count {
                sums[l].fwd += r.measurements[i].forwardSeconds[j] * speed
                sums[l].bwd += r.measurements[i].backwardSeconds[j] * speed
            }
        }
        iterations += 1
        iterationSeconds.append(r.seconds)
    }

    /// Starts a new window (after a decision); the stage speeds carry over.
    mutating func clear() {
        sums = []
        iterations = 0
        iterationSeconds = []
    }

    /// `model` with the window's normalised layer times, and `cluster` with the measured
    /// device speeds: what a re-plan sees.
    func apply(to model: ModelSpec, _ cluster: ClusterSpec, microBatches: Int) -> (ModelSpec, ClusterSpec) {
        var model = model, cluster = cluster
        let m = Double(microBatches * max(1, iterations))
        for l in model.layers.indices where l < sums.count {
            model.layers[l].profile.fwdSeconds = sums[l].fwd / m
            model.layers[l].profile.bwdSeconds = sums[l].bwd / m
        }
        for i in cluster.devices.indices where i < stageSpeed.count {
            cluster.devices[i].speed = cluster.devices[i].effectiveSpeed * stageSpeed[i]
        }
        return (model, cluster)
    }

    /// The window as a checkpoint stores it.
    package var checkpoint: (forward: [Double], backward: [Double], iterations: Int, iterationSeconds: [Double], stageSpeed: [Double], calibrationBaseline: Double) {
        (sums.map(\.fwd), sums.map(\.bwd), iterations, iterationSeconds, stageSpeed, calibrationBaseline)
    }

    package mutating func restore(forward: [Double], backward: [Double], iterations: Int, iterationSeconds: [Double], stageSpeed: [Double], calibrationBaseline: Double) {
        sums = zip(forward, backward).map { (fwd: $0, bwd: $1) }
        self.iterations = iterations
        self.iterationSeconds = iterationSeconds
        self.stageSpeed = stageSpeed
        self.calibrationBaseline = calibrationBaseline
    }
}

/// A window as bytes, and windows of several processes merged into one (online
/// re-planning across processes, `ReplanningAcrossProcesses`).
extension ReplanningWindow {
    /// Float64 values, each list after its length: [2 × layers, fwd sums..., bwd sums...,
    /// stages, stage speeds..., iterations, iteration seconds...].
    package func encoded() -> [UInt8] {
        var values: [Double] = [Double(2 * sums.count)] + sums.map(\.fwd) + sums.map(\.bwd)
        values += [Double(stageSpeed.count)] + stageSpeed
        values += [Double(iterationSeconds.count)] + iterationSeconds
        return values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian, Array.init) }
    }

    package init(encoded bytes: [UInt8]) throws {
        let values: [Double] = stride(from: 0, to: bytes.count - bytes.count % 8, by: 8).map { i in
            Double(bitPattern: bytes[i..<(i + 8)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        }
        var k = 0
        func take(_ what: String) throws -> [Double] {
            guard k < values.count, values[k] >= 0, values[k] <= Double(values.count - k - 1) else {
                throw RuntimeError.failed("a re-planning window received from another process is malformed (\(what))")
            }
            let n = Int(values[k])
            defer { k += 1 + n }
            return Array(values[(k + 1)..<(k + 1 + n)])
        }
        self.init()
        let both = try take("layer times")
        guard both.count % 2 == 0 else { throw RuntimeError.failed("a re-planning window received from another process is malformed (layer times)") }
        sums = (0..<(both.count / 2)).map { (both[$0], both[both.count / 2 + $0]) }
        stageSpeed = try take("stage speeds")
        iterationSeconds = try take("iteration seconds")
        iterations = iterationSeconds.count
    }

    /// One window from every process's: layer times add up (each layer ran in one process,
    /// the others hold 0 for it), each stage's speed is the slowest any process measured (a
    /// process measures only its own stages; the others stay at 1), iteration times are the
    /// first window's (every process steps together).
    package init(merging parts: [ReplanningWindow]) {
        self.init()
        guard let first = parts.first else { return }
        let layers = parts.map(\.sums.count).max() ?? 0
        sums = (0..<layers).map { l in
            parts.reduce((fwd: 0.0, bwd: 0.0)) { acc, w in l < w.sums.count ? (acc.fwd + w.sums[l].fwd, acc.bwd + w.sums[l].bwd) : acc }
        }
        let stages = parts.map(\.stageSpeed.count).max() ?? 0
        stageSpeed = (0..<stages).map { i in parts.map { i < $0.stageSpeed.count ? $0.stageSpeed[i] : 1 }.min() ?? 1 }
        iterationSeconds = first.iterationSeconds
        iterations = first.iterations
    }
}
