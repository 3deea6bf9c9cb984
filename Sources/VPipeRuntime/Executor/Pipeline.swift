import VPipeCore

/// The layers of a model placed on stages, and one training iteration over them.
///
/// An iteration: every stage runs its action list of the schedule IR on its own thread
/// (activations and gradients through the `Transport`, swaps on the stage's copy queue);
/// after all stages finish without error, each stage applies the optimizer to its layers.
/// If any stage fails, the transport is aborted so every other stage stops waiting, the
/// step reports the first error, and no weight changes: the optimizer runs only after a
/// clean flush.
///
/// A pipeline may run a subset of its stages (`localStages`): with a transport that spans
/// processes each process runs only its own stages and builds only their layers; the
/// transport then agrees across processes that every stage finished before the optimizer
/// runs, and hands every process the last stage's loss.
final class Pipeline: @unchecked Sendable {
    let model: ModelSpec
    let cluster: ClusterSpec
    let options: TrainingOptions
    /// The model's layers by index; nil for the layers of stages that run in another process.
    /// (A migration across processes builds a layer on its new rank and drops it on the old one.)
    var layers: [Layer?]
    let optimizer: Optimizer
    var stages: [Stage]
    /// The stages this process runs (all of them in-process).
    let localStages: [Int]
    var optimizerState: [[[Tensor]]]
    /// Per model layer this process holds: where its weights, gradients and optimizer state
    /// live (views of its stage's parameter block, or of a migration's two buffers).
    var parameterMemory: [Int: ParameterMemory] = [:]
    let transport: Transport
    /// One thread per local stage, for the life of the pipeline.
    private var threads: StageThreads?
    private(set) var iteration = 0
    /// Successful optimizer steps (Adam's bias correction counts these, not attempts).
    private(set) var optimizerSteps = 0
    private var scheduleCache: PipelineSchedule?

    /// Places the model on stages per `layout`. `existing` layers and optimizer state (from a
    /// profiling run or a previous placement) are moved into the stages' arenas instead of
    /// being built anew, so training continues where it was. Each stage's parameters,
    /// gradients and optimizer state are one allocation in its arena (`ParameterMemory.pack`);
    /// new layers are built in host memory and packed into it when their stage is complete.
    init(model: ModelSpec, cluster: ClusterSpec, options: TrainingOptions, layout: PlanLayout,
         existing: (layers: [Layer?], state: [[[Tensor]]], optimizerSteps: Int)? = nil,
         transport: Transport = InProcessTransport()) throws {
        self.model = model
        self.cluster = cluster
        self.options = options
        self.transport = transport
        optimizer = options.makeOptimizer()
        var stages: [Stage] = []
        for (i, range) in layout.ranges.enumerated() {
            let d = cluster.devices[i]
            // The arena is the whole device: reserved_bytes (R_i) is the part the runtime's own
            // workspace (temporaries of a layer call) uses, which the planner sets aside.
            // Capped at the host's physical memory: these virtual devices live in it.
            let device: Device
            do {
                device = try DeviceBackends.make(options.deviceBackend, for: DeviceBackends.Request(
                    name: "stage \(i) (device \"\(d.name)\")", capacity: d.memoryBytes,
                    bandwidth: options.throttleCopies ? d.hostBandwidth : nil))
            } catch {
                for s in stages { s.device.shutdown() }
                throw error
            }
            stages.append(Stage(index: i, device: device, layers: range, policies: Array(layout.policies[range])))
        }
        self.stages = stages
        if stages.count > 1 { BLASThreads.set(1) }
        var layers: [Layer?] = []
        var state: [[[Tensor]]] = []
        var local: [Int] = []
        var memory: [Int: ParameterMemory] = [:]
        var started: StageThreads?
        do {
            local = try transport.localStages(stageCount: stages.count)
            started = try StageThreads(stages: local, failingStart: options.threadStartFailure)
            for (l, spec) in model.layers.enumerated() {
                guard let kind = spec.kind else {
                    throw VPipeError.invalidField(field: "model.layers[\(l)]", message: "has no kind (linear, activation, ...): a session can only train layers it can build")
                }
                guard let stage = stages.first(where: { $0.layers.contains(l) }) else {
                    throw VPipeError.invalidField(field: "plan.stages", message: "no stage owns layer \(l)")
                }
                guard local.contains(stage.index) else {
                    layers.append(nil)
                    state.append([])
                    continue
                }
                if let existing, l < existing.layers.count, let layer = existing.layers[l] {
                    layers.append(layer)
                    state.append(existing.state[l])
                } else {
                    layers.append(try makeLayer(kind: kind, name: spec.name, index: l, seed: options.seed, in: nil))
                    state.append([])  // fresh: zeros in the block
                }
                if l == stage.layers.upperBound - 1 {
                    let owned = stage.layers.compactMap { k in
                        layers[k].map { (index: k, layer: $0, state: state[k].isEmpty && !$0.parameters.isEmpty ? nil : state[k]) }
                    }
                    let packed = try ParameterMemory.pack(owned, statesPerParameter: optimizer.statesPerParameter, in: stage.arena,
                                                          label: "stage \(stage.index) parameters, gradients and optimizer state of layers \(stage.layers)")
                    for (k, m) in packed {
                        memory[k] = m
                        state[k] = m.state
                    }
                }
            }
        } catch {
            started?.shutdown()
            for s in stages { s.device.shutdown() }
            throw error
        }
        localStages = local
        threads = started
        self.layers = layers
        optimizerState = state
        parameterMemory = memory
        optimizerSteps = existing?.optimizerSteps ?? 0
    }

    deinit { threads?.shutdown() }

    /// A resumed checkpoint's counters (the rest of its state goes into the tensors).
    func restoreCounters(iteration: Int, optimizerSteps: Int) {
        self.iteration = iteration
        self.optimizerSteps = optimizerSteps
    }

    /// Stops the stage threads and devices; the transport stays open (the session moves
    /// from its profiling pipeline to the planned one on the same transport).
    func shutdownStages() {
        threads?.shutdown()
        for s in stages { s.device.shutdown() }
    }

    /// Stops everything, the transport included; the pipeline cannot step afterwards.
    func shutdown() {
        shutdownStages()
        transport.close()
    }

    var layout: PlanLayout { PlanLayout(ranges: stages.map(\.layers), policies: stages.flatMap(\.policies)) }

    func schedule() throws -> PipelineSchedule {
        if let scheduleCache { return scheduleCache }
        let s = try ScheduleSource.schedule(for: options, stagePolicies: stages.map(\.policies))
        scheduleCache = s
        return s
    }

    struct StepResult {
        var loss: Float
        var seconds: Double
        var measurements: [StageMeasurement]
        var peaks: [Int]
        var epoch: Double
        var migration: MigrationOutcome?
        /// The stages' layer ranges during the iteration (before any migration it ended with).
        var ranges: [Range<Int>]
    }

    /// One iteration on a mini-batch of `rows` rows: `inputs` holds rows × features values,
    /// `targets` one class per row. With `target`, the iteration also migrates to that
    /// layout (live: the loss is the one without the move).
    func step(inputs: UnsafeBufferPointer<Float>, features: Int, targets: UnsafeBufferPointer<Int32>,
              migrateTo target: PlanLayout? = nil, calibrate: Bool = false) throws -> StepResult {
        let schedule = try schedule()
        let input = try iterationInput(inputs: inputs, features: features, targets: targets, calibrate: calibrate)
        if let poisoned = transport.poisoned {
            throw RuntimeError.failed("the distributed session stopped at an earlier failure and cannot step again: \(poisoned)")
        }
        transport.reset()
        for s in stages { s.arena.resetPeak() }
        let ranges = stages.map(\.layers)
        // PIPEDREAM_ASYNC updates weights during the iteration, so a copy of them taken then
        // would be stale: it drains first, and the migration copies at the flush.
        let async = options.schedule == .pipedreamAsync
        var migration: LiveMigration?
        if let target {
            do {
                migration = transport.spansProcesses ? try RemoteMigration(self, to: target, copyAtFlush: async)
                                                     : LocalMigration(self, to: target, copyAtFlush: async)
            } catch {
                transport.abort(error)
            }
        }
        let measurements = runStages(schedule, input)
        let loss: Float
        do {
            loss = try transport.agree(localError: transport.abortError, loss: lastStageLoss(measurements), lossRank: stages.count - 1,
                                       migration: target.map(RemoteMigration.fingerprint) ?? 0)
        } catch {
            migration?.abandon()
            zeroGradients()
            throw error
        }
        let flush = monotonicSeconds()
        var outcome: MigrationOutcome?
        if let migration {
            do { outcome = try migration.handOver(flushedAt: flush) } catch {
                zeroGradients()
                throw error
            }
        }
        let handover = monotonicSeconds() - flush
        let applied = target != nil && outcome?.failure == nil ? migration : nil
        if !async {
            optimizerSteps += 1
            applyOptimizer(owners: (applied != nil ? target?.ranges : nil) ?? stages.map(\.layers), migration: applied)
        }
        if let applied, let target {
            let switchStart = monotonicSeconds()
            do {
                try applied.switchOwnership(self)
                for (i, range) in target.ranges.enumerated() {
                    stages[i].layers = range
                    stages[i].policies = Array(target.policies[range])
                }
                scheduleCache = nil
                outcome?.stallSeconds = handover + (monotonicSeconds() - switchStart)
            } catch {
                outcome?.failure = "internal: switching ownership failed: \(error)"
            }
        }
        return StepResult(loss: loss, seconds: monotonicSeconds() - input.epoch, measurements: measurements,
                          peaks: stages.map { $0.arena.peakBytes }, epoch: input.epoch, migration: outcome, ranges: ranges)
    }

    /// Splits the mini-batch into micro-batches, checking that it does split.
    private func iterationInput(inputs: UnsafeBufferPointer<Float>, features: Int, targets: UnsafeBufferPointer<Int32>,
                                calibrate: Bool) throws -> IterationInput {
        let m = options.microBatches
        guard features > 0, inputs.count % features == 0 else {
            throw VPipeError.invalidField(field: "inputs", message: "\(inputs.count) values is not a whole number of rows of \(features) features")
        }
        let rows = inputs.count / features
        guard rows > 0, rows % m == 0 else {
            throw VPipeError.invalidField(field: "inputs", message: "\(rows) rows do not split into \(m) equal micro-batches")
        }
        guard targets.count == rows else {
            throw VPipeError.invalidField(field: "targets", message: "expected one target per row (\(rows)), got \(targets.count)")
        }
        let per = rows / m
        let mbInputs = (0..<m).map { k in Array(inputs[(k * per * features)..<((k + 1) * per * features)]) }
        let mbTargets = (0..<m).map { k in Array(targets[(k * per)..<((k + 1) * per)]) }
        iteration += 1
        let slowdown = stages.indices.map { i -> Double in
            if let s = options.effectiveSlowdown, s.stage == i, iteration >= s.fromIteration { return s.factor * options.deviceSlowdown }
            return options.deviceSlowdown
        }
        return IterationInput(microBatches: m, inputs: mbInputs, inputShape: features == 1 ? [per, 1] : [per, features], targets: mbTargets,
                              lossScale: 1 / Float(rows), iteration: iteration, failure: options.failure, epoch: monotonicSeconds(),
                              slowdown: slowdown, calibrate: calibrate)
    }

    /// Every local stage runs its action list on its thread; a failing stage aborts the
    /// transport (so the others stop waiting) and measures nothing.
    private func runStages(_ schedule: PipelineSchedule, _ input: IterationInput) -> [StageMeasurement] {
        final class Results: @unchecked Sendable {
            let monitor = Monitor()
            var measurements: [StageMeasurement?]
            init(_ p: Int) { measurements = Array(repeating: nil, count: p) }
        }
        let results = Results(stages.count)
        let local = localStages
        threads?.run { [self] k in
            let i = local[k]
            var worker = StageWorker(stage: stages[i], stageCount: stages.count, layers: layers, transport: transport, actions: schedule.stages[i])
            if options.schedule == .pipedreamAsync {
                worker.asyncUpdate = { [self] l, version in
                    guard let layer = layers[l] else { return }
                    optimizer.step(parameters: layer.parameters, gradients: layer.gradients, state: optimizerState[l], iteration: version)
                    for g in layer.gradients { g.zero() }
                }
            }
            do {
                try transport.prepare(stage: i, actions: schedule.stages[i], space: stages[i].arena)
                let r = try worker.run(input)
                results.monitor.locked { results.measurements[i] = r }
            } catch {
                transport.abort(error)
            }
        }
        return results.measurements.map { $0 ?? StageMeasurement() }
    }

    /// The loss of the last stage summed over micro-batches in order, where this process
    /// runs the last stage (nil elsewhere: the transport's agreement brings it).
    private func lastStageLoss(_ measurements: [StageMeasurement]) -> Float? {
        guard let last = localStages.last, last == stages.count - 1 else { return nil }
        return (0..<options.microBatches).reduce(Float(0)) { $0 + (measurements[last].losses[$1] ?? .nan) }
    }

    /// A clean flush: every local stage applies the optimizer to the layers it owns from now
    /// on (`owners`), in parallel; a moved layer's receiver steps its new copy, which
    /// therefore equals what the sender would have produced.
    private func applyOptimizer(owners: [Range<Int>], migration: LiveMigration?) {
        let step = optimizerSteps, local = localStages
        threads?.run { [self] k in
            for l in owners[local[k]] {
                if let moved = migration?.optimizerView(of: l) {
                    optimizer.step(parameters: moved.parameters, gradients: moved.gradients, state: moved.state, iteration: step)
                    for g in moved.gradients { g.zero() }
                } else if let layer = layers[l] {
                    optimizer.step(parameters: layer.parameters, gradients: layer.gradients, state: optimizerState[l], iteration: step)
                    for g in layer.gradients { g.zero() }
                }
            }
        }
    }

    /// After a failed step: no gradient of it survives.
    private func zeroGradients() {
        for case let layer? in layers { for g in layer.gradients { g.zero() } }
    }
}
