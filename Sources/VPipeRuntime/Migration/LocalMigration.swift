import VPipeCore

/// A live migration between stages of this process: each moving layer's weights and
/// optimizer state (one run of its `ParameterMemory`) are copied into its destination's
/// arena on the destination's copy queue while the iteration computes (they are read-only
/// until the optimizer step); at the flush its gradient run is copied over. Two copies per
/// layer, whatever its tensor count.
///
/// PIPEDREAM_ASYNC updates weights during the iteration, so a copy taken then would be
/// stale: there the copy starts at the flush (the iteration drains: no micro-batch in
/// flight, no stashed version).
final class LocalMigration: LiveMigration {
    private let pipeline: Pipeline
    private let target: PlanLayout
    private let moves: [(layer: Int, from: Int, to: Int)]
    private var copies: [(layer: Int, to: Int, copy: PreCopy)] = []
    /// Per moved layer: its weights, gradients and optimizer state in the destination arena.
    private var arrived: [Int: ParameterMemory] = [:]
    private let copyAtFlush: Bool

    init(_ pipeline: Pipeline, to target: PlanLayout, copyAtFlush: Bool) {
        self.pipeline = pipeline
        self.target = target
        self.copyAtFlush = copyAtFlush
        moves = movingLayers(from: pipeline.stages, to: target)
        if !copyAtFlush { startCopies() }
    }

    private func startCopies() {
        for m in moves {
            guard let memory = pipeline.parameterMemory[m.layer] else { continue }
            let copy = PreCopy()
            let dest = pipeline.stages[m.to]
            let (l, to) = (m.layer, m.to)
            dest.device.onCopyQueue {
                do {
                    copy.finish(try memory.weightsAndState.copy(to: dest.arena, for: "stage \(to) layer \(l) migrated weights and optimizer state"), nil)
                } catch { copy.finish(nil, error) }
            }
            copies.append((l, to, copy))
        }
    }

    func abandon() {
        for c in copies { _ = try? c.copy.wait() }
    }

    func handOver(flushedAt flush: Double) throws -> MigrationOutcome {
        if copyAtFlush { startCopies() }
        var bytes = 0
        do {
            for c in copies {
                let weightsAndState = try c.copy.wait()
                guard let memory = pipeline.parameterMemory[c.layer] else { continue }
                let grads = try memory.gradientRun.copy(to: pipeline.stages[c.to].arena, for: "stage \(c.to) layer \(c.layer) handed-over gradients")
                let moved = try memory.over(weightsAndState: weightsAndState, gradients: grads)
                bytes += moved.bytes
                arrived[c.layer] = moved
            }
            return MigrationOutcome(layersMoved: copies.map(\.layer), bytesMoved: bytes, stallSeconds: 0, failure: nil)
        } catch {
            arrived = [:]  // the old placement stays; the copies are dropped
            return MigrationOutcome(layersMoved: [], bytesMoved: 0, stallSeconds: monotonicSeconds() - flush,
                                    failure: "migration abandoned, training continues on the old plan: \(error)")
        }
    }

    func optimizerView(of layer: Int) -> (parameters: [Tensor], gradients: [Tensor], state: [[Tensor]])? {
        arrived[layer].map { ($0.values, $0.gradients, $0.state) }
    }

    func switchOwnership(_ pipeline: Pipeline) throws {
        for (l, a) in arrived.sorted(by: { $0.key < $1.key }) {
            try pipeline.layers[l]?.adopt(values: a.values, gradients: a.gradients)
            pipeline.optimizerState[l] = a.state
            pipeline.parameterMemory[l] = a
        }
    }
}

/// The weights and optimizer state of a moving layer (one run of its parameter memory),
/// copied to its new stage on that stage's copy queue; `wait` returns the copy once it finished.
final class PreCopy: @unchecked Sendable {
    private let monitor = Monitor()
    private var weightsAndState: Tensor?
    private var failure: Error?
    private var done = false

    func wait() throws -> Tensor {
        try monitor.locked {
            while !done { monitor.wait() }
            if let failure { throw failure }
            guard let weightsAndState else { throw RuntimeError.failed("internal: a pre-copy finished without its copy") }
            return weightsAndState
        }
    }

    func finish(_ copy: Tensor?, _ e: Error?) {
        monitor.locked {
            weightsAndState = copy
            failure = e
            done = true
            monitor.broadcast()
        }
    }
}
