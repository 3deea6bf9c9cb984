import VPipeCore

/// A live migration between stages of this process: each moving layer's weights and
/// optimizer state are copied into its destination's arena on the destination's copy queue
/// while the iteration computes (they are read-only until the optimizer step); at the flush
/// the gradients are copied over.
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
    private var arrived: [Int: (values: [Tensor], gradients: [Tensor], state: [[Tensor]])] = [:]
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
            guard let layer = pipeline.layers[m.layer] else { continue }
            let copy = PreCopy()
            let state = pipeline.optimizerState[m.layer], dest = pipeline.stages[m.to]
            let (l, to) = (m.layer, m.to)
            dest.device.onCopyQueue {
                do {
                    let v = try layer.parameters.map { try $0.copy(to: dest.arena, for: "stage \(to) layer \(l) migrated weights") }
                    let s = try state.map { try $0.map { try $0.copy(to: dest.arena, for: "stage \(to) layer \(l) migrated optimizer state") } }
                    copy.finish(v, s, nil)
                } catch { copy.finish(nil, nil, error) }
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
                let (values, state) = try c.copy.wait()
                let grads = try (pipeline.layers[c.layer]?.gradients ?? []).map {
                    try $0.copy(to: pipeline.stages[c.to].arena, for: "stage \(c.to) layer \(c.layer) handed-over gradients")
                }
                bytes += values.reduce(0) { $0 + $1.bytes } + grads.reduce(0) { $0 + $1.bytes } + state.joined().reduce(0) { $0 + $1.bytes }
                arrived[c.layer] = (values, grads, state)
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
        }
    }
}

/// The weights and optimizer state of a moving layer, copied to its new stage on that
/// stage's copy queue; `wait` returns them once the copy finished.
final class PreCopy: @unchecked Sendable {
    private let monitor = Monitor()
    private var values: [Tensor]?
    private var state: [[Tensor]]?
    private var failure: Error?
    private var done = false

    func wait() throws -> (values: [Tensor], state: [[Tensor]]) {
        try monitor.locked {
            while !done { monitor.wait() }
            if let failure { throw failure }
            return (values ?? [], state ?? [])
        }
    }

    func finish(_ v: [Tensor]?, _ s: [[Tensor]]?, _ e: Error?) {
        monitor.locked {
            values = v
            state = s
            failure = e
            done = true
            monitor.broadcast()
        }
    }
}
