import VPipeCore

/// The online profiler: per layer, forward and backward seconds summed over the steps it
/// has seen, and the last measured stash and output bytes. What a plan made during
/// training (the end of profiling, a re-plan, a host's plan checked by `applyPlan`) sees.
///
/// A value type: the session keeps it under its state lock, because `applyPlan` reads it
/// from another thread while a step runs.
struct OnlineProfiler {
    private var sums: [LayerProfile]
    /// Steps that counted (the profiler skips a cold first step when it can afford to).
    private(set) var iterations = 0

    init(layers: Int) {
        sums = Array(repeating: LayerProfile(fwdSeconds: 0, bwdSeconds: 0, stashBytes: 0, outputBytes: 0, paramBytes: 0), count: layers)
    }

    /// Adds one step's measurements. `skipTimes`: take its sizes but not its times (the first
    /// iteration warms caches and allocators; one cold step must not skew the plan).
    mutating func observe(_ r: Pipeline.StepResult, skipTimes: Bool) {
        for (i, range) in r.ranges.enumerated() {
            let meas = r.measurements[i]
            for (j, l) in range.enumerated() where j < meas.forwardSeconds.count {
                if !skipTimes {
                    sums[l].fwdSeconds += meas.forwardSeconds[j]
                    sums[l].bwdSeconds += meas.backwardSeconds[j]
                }
                sums[l].stashBytes = meas.stashBytes[j]
                sums[l].outputBytes = meas.outputBytes[j]
            }
        }
        if !skipTimes { iterations += 1 }
    }

    /// Per layer and micro-batch: the mean times, the last sizes, and `parameterBytes`.
    func profiles(microBatches: Int, parameterBytes: [Int]) -> [LayerProfile] {
        guard iterations > 0 else { return sums }
        let m = Double(microBatches * iterations)
        return sums.enumerated().map { l, p in
            LayerProfile(fwdSeconds: p.fwdSeconds / m, bwdSeconds: p.bwdSeconds / m, stashBytes: p.stashBytes,
                         outputBytes: p.outputBytes, paramBytes: l < parameterBytes.count ? parameterBytes[l] : 0)
        }
    }

    /// The sums and the profiled iteration count, for a checkpoint.
    var checkpoint: (sums: [LayerProfile], iterations: Int) { (sums, iterations) }

    /// Takes over a checkpoint's sums (ignored when they are not one per layer).
    mutating func restore(sums: [LayerProfile], iterations: Int) {
        if sums.count == self.sums.count { self.sums = sums }
        self.iterations = iterations
    }
}
