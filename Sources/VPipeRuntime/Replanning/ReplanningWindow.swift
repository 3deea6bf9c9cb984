import VPipeCore

/// What online re-planning decides on: the steps since the last decision, with each layer's
/// times normalised to its device's nominal speed (a layer that moves to a slow device must
/// not look slow itself), each stage's measured speed relative to the fastest seen, and the
/// iteration times (a decision's "before" and the previous decision's "after").
struct ReplanningWindow {
    private var sums: [(fwd: Double, bwd: Double)] = []
    private(set) var iterations = 0
    /// Measured iteration seconds in the window (read by `applyPlan` from another thread:
    /// the session keeps the window under its state lock).
    private(set) var iterationSeconds: [Double] = []
    /// Speed of each stage's device relative to the fastest seen (1.0 = nominal).
    private var stageSpeed: [Double] = []
    private var calibrationBaseline = Double.infinity

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
}
