import VPipeCore

/// One stage of the pipeline: its device (arena, host pool, copy queue, kernels), the layers
/// it owns and their policies. `run` executes the stage's action list of one iteration (the schedule IR).
final class Stage: @unchecked Sendable {
    let index: Int
    let device: Device
    /// The device's memory, which the stage's layers, stashes and optimizer state are charged to.
    var arena: MemorySpace { device.arena }
    /// Where swapped stashes go.
    var host: MemorySpace { device.hostPool }
    var layers: Range<Int>
    /// One policy per layer of the stage.
    var policies: [MemoryPolicy]
    /// PIPEDREAM_ASYNC: updates this stage has applied (its current weight version).
    var weightVersion = 0

    init(index: Int, device: Device, layers: Range<Int>, policies: [MemoryPolicy]) {
        self.index = index
        self.device = device
        self.layers = layers
        self.policies = policies
    }

    /// Local index ranges of the stage's RECOMPUTE segments.
    var segments: [Range<Int>] {
        var out: [Range<Int>] = []
        var j = 0
        while j < policies.count {
            if policies[j] == .recompute {
                var e = j
                while e < policies.count && policies[e] == .recompute { e += 1 }
                out.append(j..<e)
                j = e
            } else { j += 1 }
        }
        return out
    }
}

/// What a stage measured during one iteration.
struct StageMeasurement {
    var computeSeconds = 0.0
    var swappedBytes = 0
    var recomputedLayers = 0
    /// Per layer of the stage: forward seconds (first forward only), backward seconds, count.
    var forwardSeconds: [Double] = []
    var backwardSeconds: [Double] = []
    var stashBytes: [Int] = []
    var outputBytes: [Int] = []
    /// The most bytes any layer call of the stage held transiently beyond what it returned
    /// (temporaries of a forward, gradient buffers of a backward): the runtime's workspace.
    var workspaceBytes = 0
    var events: [SimulationReport.Event] = []
    var losses: [Int: Float] = [:]
    /// Seconds of the fixed reference kernel on this stage (0 when not measured).
    var calibrationSeconds = 0.0
    /// PIPEDREAM_ASYNC: the weight version each micro-batch's forward and backward used.
    var weightVersions: [Int: (forward: Int, backward: Int)] = [:]
}

/// The per-iteration inputs every stage reads.
struct IterationInput: @unchecked Sendable {
    let microBatches: Int
    /// Stage 0's input of each micro-batch: values and shape.
    let inputs: [[Float]]
    let inputShape: [Int]
    let targets: [[Int32]]
    let lossScale: Float
    let iteration: Int
    let failure: TrainingOptions.Failure?
    let epoch: Double
    /// Per stage: how many times slower than its nominal speed it runs this iteration.
    let slowdown: [Double]
    /// Measure each stage's speed with a fixed reference kernel after the iteration.
    let calibrate: Bool
}

/// Runs one stage's action list for one iteration.
struct StageWorker {
    let stage: Stage
    let stageCount: Int
    /// The model's layers by index; only this stage's need to exist (nil elsewhere).
    let layers: [Layer?]
    let transport: Transport
    let actions: [ScheduleAction]
    /// PIPEDREAM_ASYNC: applies the optimizer to layer l with its gradients and zeroes them
    /// (`iteration` is the stage's update count); nil for the flushing schedules.
    var asyncUpdate: ((_ layer: Int, _ iteration: Int) -> Void)? = nil

    /// Live state of one micro-batch on this stage.
    final class MicroBatch {
        var input: Tensor?
        var saved: [Int: [Tensor]] = [:]
        var segmentInputs: [Int: Tensor] = [:]
        var swaps: [Int: SwapSlot] = [:]
        var output: Tensor?
        var gradientIn: Tensor?
        var gradientOut: Tensor?
        /// PIPEDREAM_ASYNC: the weights the forward used (per local layer) and their version.
        var stashedWeights: [Int: [Tensor]] = [:]
        var weightVersion = 0
    }

    func run(_ input: IterationInput) throws -> StageMeasurement {
        StageThread.mark()
        var m = StageMeasurement()
        let n = stage.layers.count
        let owned: [Layer] = try stage.layers.map { l in
            guard let layer = layers[l] else { throw RuntimeError.failed("stage \(stage.index): layer \(l) is not placed in this process") }
            return layer
        }
        m.forwardSeconds = Array(repeating: 0, count: n)
        m.backwardSeconds = Array(repeating: 0, count: n)
        m.stashBytes = Array(repeating: 0, count: n)
        m.outputBytes = Array(repeating: 0, count: n)
        var states: [Int: MicroBatch] = [:]
        func state(_ mb: Int) -> MicroBatch {
            if let s = states[mb] { return s }
            let s = MicroBatch()
            states[mb] = s
            return s
        }
        let last = stage.index == stageCount - 1
        let segments = stage.segments

        func record(_ kind: ScheduleAction.Kind, _ mb: Int, _ start: Double, _ end: Double, copy: Bool = false) {
            m.events.append(SimulationReport.Event(
                action: ScheduleAction(stage: stage.index, kind: kind, microBatch: mb),
                resource: copy ? .copy(stage.index) : .compute(stage.index), start: start - input.epoch, end: end - input.epoch))
        }

        let slow = stage.index < input.slowdown.count ? input.slowdown[stage.index] : 1
        /// An injected slowdown stretches every compute call by the device's factor.
        func stretch(_ seconds: Double) { if slow > 1 { sleepSeconds((slow - 1) * seconds) } }

        func context(_ j: Int, _ mb: Int) -> LayerContext {
            let l = stage.layers.lowerBound + j
            return LayerContext(space: stage.arena, label: "stage \(stage.index) layer \(l) (\"\(owned[j].name)\") micro-batch \(mb)",
                                targets: last ? input.targets[mb] : [], lossScale: input.lossScale, iteration: input.iteration,
                                needsInputGradient: l > 0)
        }

        var swapping = SwapBuffer(stage: stage, actions: actions)
        func slot(_ mb: Int, _ j: Int) -> SwapSlot? { states[mb]?.swaps[j] }
        let aborted = { transport.abortError }

        for (k, action) in actions.enumerated() {
            let mb = action.microBatch
            swapping.prefetch(slot)
            switch action.kind {
            case .recvActivation:
                state(mb).input = try transport.receiveActivation(at: stage.index, microBatch: mb, into: stage.arena)
            case .forward:
                if let f = input.failure, f.iteration == input.iteration, f.stage == stage.index, f.microBatch == mb {
                    throw RuntimeError.failed("stage \(stage.index): injected failure in the forward of micro-batch \(mb), iteration \(input.iteration)")
                }
                let s = state(mb)
                var x: Tensor
                if stage.index == 0 {
                    x = try Tensor(shape: input.inputShape, in: stage.arena, for: "stage 0 micro-batch \(mb) input")
                    try x.fill(from: input.inputs[mb])
                } else {
                    guard let received = s.input else { throw RuntimeError.failed("stage \(stage.index): forward of micro-batch \(mb) without its activation") }
                    x = received
                }
                s.input = nil
                if asyncUpdate != nil {
                    // Weight stashing: the backward of this micro-batch must see these weights,
                    // whatever updates land on the stage in between.
                    s.weightVersion = stage.weightVersion
                    for j in 0..<n {
                        s.stashedWeights[j] = try owned[j].parameters.map {
                            try $0.copy(to: stage.arena, for: "stage \(stage.index) layer \(stage.layers.lowerBound + j) weight version \(stage.weightVersion) for micro-batch \(mb)")
                        }
                    }
                }
                let t0 = monotonicSeconds()
                if stage.index == 0 {
                    // NaN or infinity in the host's batch: stop here, before layer 0 learns from it.
                    try FiniteCheck.require(x, "input", label: context(0, mb).label,
                                            hint: "the step's inputs must be finite (micro-batch \(mb) holds rows \(mb * x.rows)..<\((mb + 1) * x.rows) of the batch)")
                }
                for j in 0..<n {
                    if stage.policies[j] == .swap { try swapping.beforeSwapForward(aborted: aborted) }
                    let start = monotonicSeconds()
                    stage.arena.beginWindow()
                    let (y, saved) = try owned[j].forward(x, context(j, mb))
                    stretch(monotonicSeconds() - start)
                    m.forwardSeconds[j] += monotonicSeconds() - start
                    // Every layer's output (the last one's is the loss), once per micro-batch:
                    // the error names the layer that produced the first bad value.
                    if !owned[j].keepsFiniteValuesFinite { try FiniteCheck.require(y, "output", label: context(j, mb).label) }
                    // The call's temporaries beyond its output and stash, plus the output's size: when
                    // the layer is recomputed, its forward runs again while the gradient of its
                    // output (that size) is alive, which no other term of the cost model charges
                    // (measured without it: the reserve was ~0.5% short for recompute plans).
                    m.workspaceBytes = max(m.workspaceBytes, stage.arena.windowPeakBytes - uniqueBytes(saved.filter { $0 !== x && $0 !== y }))
                    m.stashBytes[j] = uniqueBytes(saved)
                    m.outputBytes[j] = y.bytes
                    switch stage.policies[j] {
                    case .keep: s.saved[j] = saved
                    case .swap:
                        let stash = SwapSlot(device: saved, bytes: m.stashBytes[j])
                        s.swaps[j] = stash
                        m.swappedBytes += stash.bytes
                        swapping.sendOut(stash, microBatch: mb, layer: j)
                    case .recompute:
                        if segments.contains(where: { $0.lowerBound == j }) { s.segmentInputs[j] = x }
                    }
                    x = y
                    swapping.prefetch(slot)
                }
                let t1 = monotonicSeconds()
                m.computeSeconds += t1 - t0
                record(.forward, mb, t0, t1)
                if last { m.losses[mb] = x.toArray().first ?? .nan }
                s.output = x
            case .sendActivation:
                guard let out = states[mb]?.output else { throw RuntimeError.failed("stage \(stage.index): nothing to send for micro-batch \(mb)") }
                try transport.sendActivation(from: stage.index, microBatch: mb, out)
                states[mb]?.output = nil
            case .swapOut, .swapIn:
                // Layer by layer instead: swap-outs leave as each SWAP layer's forward returns,
                // swap-ins follow the backwards' order inside the double buffer (SwapBuffer).
                break
            case .recompute:
                break  // done segment by segment inside the backward, so one segment is live at a time
            case .recvGradient:
                state(mb).gradientIn = try transport.receiveGradient(at: stage.index, microBatch: mb, into: stage.arena)
            case .backward:
                let s = state(mb)
                var g: Tensor
                if last {
                    g = try Tensor(shape: [1], in: stage.arena, for: "stage \(stage.index) loss gradient")
                    try g.fill(from: [1])
                } else {
                    guard let received = s.gradientIn else { throw RuntimeError.failed("stage \(stage.index): backward of micro-batch \(mb) without its gradient") }
                    g = received
                }
                s.gradientIn = nil
                // PIPEDREAM_ASYNC: run the backward (and any recompute) on the stashed weights.
                var current: [(values: [Tensor], gradients: [Tensor])] = []
                if asyncUpdate != nil {
                    for j in 0..<n {
                        current.append((owned[j].parameters, owned[j].gradients))
                        if let w = s.stashedWeights[j] { try owned[j].adopt(values: w, gradients: owned[j].gradients) }
                    }
                }
                let t0 = monotonicSeconds()
                var recomputeSeconds = 0.0
                for j in stride(from: n - 1, through: 0, by: -1) {
                    let l = stage.layers.lowerBound + j
                    let saved: [Tensor]
                    switch stage.policies[j] {
                    case .keep:
                        saved = s.saved[j] ?? []
                    case .swap:
                        guard let stash = s.swaps[j] else { throw RuntimeError.failed("stage \(stage.index): layer \(l) has no stash for micro-batch \(mb)") }
                        saved = try swapping.take(stash, microBatch: mb, layer: j, aborted: aborted, lookup: slot)
                    case .recompute:
                        if s.saved[j] == nil, let segment = segments.first(where: { $0.contains(j) }) {
                            let r0 = monotonicSeconds()
                            guard var x = s.segmentInputs[segment.lowerBound] else {
                                throw RuntimeError.failed("stage \(stage.index): recompute segment at layer \(l) lost its input")
                            }
                            for k in segment {
                                let c0 = monotonicSeconds()
                                let (y, kept) = try owned[k].forward(x, context(k, mb))
                                stretch(monotonicSeconds() - c0)
                                s.saved[k] = kept
                                x = y
                                m.recomputedLayers += 1
                            }
                            s.segmentInputs[segment.lowerBound] = nil
                            let r1 = monotonicSeconds()
                            recomputeSeconds += r1 - r0
                            record(.recompute, mb, r0, r1)
                        }
                        saved = s.saved[j] ?? []
                    }
                    let start = monotonicSeconds()
                    stage.arena.beginWindow()
                    let gIn = try owned[j].backward(g, saved: saved, context(j, mb))
                    stretch(monotonicSeconds() - start)
                    m.backwardSeconds[j] += monotonicSeconds() - start
                    if let gIn, !owned[j].keepsFiniteValuesFinite { try FiniteCheck.require(gIn, "input gradient", label: context(j, mb).label) }
                    m.workspaceBytes = max(m.workspaceBytes, stage.arena.windowPeakBytes - (gIn?.bytes ?? 0))
                    s.saved[j] = nil
                    if let stash = s.swaps[j] {
                        s.swaps[j] = nil
                        swapping.done(stash, lookup: slot)
                    }
                    if let gIn { g = gIn } else if j > 0 || stage.index > 0 {
                        throw RuntimeError.failed("stage \(stage.index): layer \(l) (\"\(owned[j].name)\") returned no input gradient but is not the first layer")
                    }
                }
                if let update = asyncUpdate {
                    // Back to the current weights, then this micro-batch's update lands at once.
                    for j in 0..<n { try owned[j].adopt(values: current[j].values, gradients: current[j].gradients) }
                    try requireFiniteGradients(owned, after: "the backward of micro-batch \(mb)")
                    s.stashedWeights = [:]
                    stage.weightVersion += 1
                    for j in 0..<n { update(stage.layers.lowerBound + j, stage.weightVersion) }
                    m.weightVersions[mb] = (s.weightVersion, s.weightVersion)
                }
                let t1 = monotonicSeconds()
                m.computeSeconds += t1 - t0
                record(.backward, mb, t0 + recomputeSeconds, t1)
                if stage.index > 0 { s.gradientOut = g }
            case .sendGradient:
                guard let g = states[mb]?.gradientOut else { throw RuntimeError.failed("stage \(stage.index): no gradient to send for micro-batch \(mb)") }
                try transport.sendGradient(from: stage.index, microBatch: mb, g)
                states[mb] = nil
            }
        }
        swapping.drain()
        // Before the optimizer may run (Pipeline.step steps it only when every stage returns):
        // finite activations can still overflow into infinite parameter gradients.
        if asyncUpdate == nil { try requireFiniteGradients(owned, after: "the backward of micro-batches 0..<\(input.microBatches)") }
        if input.calibrate {
            // The same small matrix product on every stage: its time tells the device's speed
            // apart from the layers' own costs (a slowed device slows this too).
            var best = Double.infinity
            for _ in 0..<5 {
                let t0 = monotonicSeconds()
                stage.device.runReferenceKernel()
                stretch(monotonicSeconds() - t0)
                best = min(best, monotonicSeconds() - t0)
            }
            m.calibrationSeconds = best
        }
        return m
    }

    /// Throws, naming the stage, layer and tensor, when a parameter gradient of `owned` holds a
    /// NaN or an infinity: the optimizer must not see it. O(parameters), once per step.
    func requireFiniteGradients(_ owned: [Layer], after: String) throws {
        for (j, layer) in owned.enumerated() {
            for (k, g) in layer.gradients.enumerated() {
                try FiniteCheck.require(g, "gradient of parameter tensor \(k)",
                                        label: "stage \(stage.index) layer \(stage.layers.lowerBound + j) (\"\(layer.name)\") after \(after)")
            }
        }
    }

    /// Bytes of the distinct tensors in a stash (a tensor saved twice counts once).
    func uniqueBytes(_ tensors: [Tensor]) -> Int {
        var seen = Set<ObjectIdentifier>()
        var bytes = 0
        for t in tensors where seen.insert(ObjectIdentifier(t)).inserted { bytes += t.bytes }
        return bytes
    }
}
