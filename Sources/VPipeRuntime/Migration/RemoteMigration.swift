import VPipeCore

/// A live migration between processes (stages on different ranks): every rank computes the
/// same list of moving layers; the receiver builds each moving layer and packs it into one
/// allocation in its stage's arena and posts receives, the sender posts non-blocking sends of weights and optimizer state
/// (the pre-copy, during the iteration; at the flush for PIPEDREAM_ASYNC) and, at the flush,
/// of the gradients. Then every rank agrees that every receiver could place its layers;
/// otherwise every rank keeps the old plan. Both sides post layer by layer in ascending
/// order, so the transfers match.
final class RemoteMigration: LiveMigration {
    private let pipeline: Pipeline
    private let transport: Transport
    private let rank: Int
    /// Every moving layer (the same list on every rank), ascending.
    private let moves: [(layer: Int, from: Int, to: Int)]
    /// The layers this rank receives: their parameter memory in its stage's arena, weights
    /// and state overwritten by the transfers.
    private var incoming: [Int: (layer: Layer, memory: ParameterMemory)] = [:]
    /// Why this rank cannot take its layers (then every rank keeps the old plan).
    private var failure: String?
    /// The received layers, once every rank agreed.
    private var adopted: [Int: (layer: Layer, memory: ParameterMemory)] = [:]
    private let copyAtFlush: Bool

    /// Builds the incoming layers (outside the arena when it is full, so that the transfers
    /// still match; the failure is reported at the agreement) and, unless `copyAtFlush`,
    /// posts the pre-copy.
    init(_ pipeline: Pipeline, to target: PlanLayout, copyAtFlush: Bool) throws {
        self.pipeline = pipeline
        transport = pipeline.transport
        rank = pipeline.transport.rank
        self.copyAtFlush = copyAtFlush
        moves = movingLayers(from: pipeline.stages, to: target)
        for m in moves where m.to == rank {
            guard let kind = pipeline.model.layers[m.layer].kind else { continue }
            let name = pipeline.model.layers[m.layer].name, seed = pipeline.options.seed
            let layer = try makeLayer(kind: kind, name: name, index: m.layer, seed: seed, in: nil)
            let k = pipeline.optimizer.statesPerParameter
            do {
                let packed = try ParameterMemory.pack([(m.layer, layer, nil)], statesPerParameter: k, in: pipeline.stages[m.to].arena,
                                                      label: "stage \(m.to) layer \(m.layer) migrated parameters, gradients and optimizer state")
                if let memory = packed[m.layer] { incoming[m.layer] = (layer, memory) }
            } catch {
                if failure == nil { failure = "rank \(rank) cannot take layer \(m.layer): \(error)" }
                // Still receive (uncharged), so that every transfer the sender posts completes.
                let discard = MemorySpace(name: "discarded migration", kind: .host, capacity: Int.max)
                if let memory = try ParameterMemory.pack([(m.layer, layer, nil)], statesPerParameter: k, in: discard,
                                                         label: "discarded migration")[m.layer] {
                    incoming[m.layer] = (layer, memory)
                }
            }
        }
        if !copyAtFlush { try post(gradients: false) }
    }

    /// Posts this rank's sends and receives of weights + optimizer state, or of gradients:
    /// one run of the layer's parameter memory each, so one message per layer and phase.
    private func post(gradients: Bool) throws {
        for m in moves {
            if m.from == rank, let memory = pipeline.parameterMemory[m.layer] {
                try transport.migrationSend([gradients ? memory.gradientRun : memory.weightsAndState], to: m.to, gradients: gradients)
            } else if m.to == rank, let a = incoming[m.layer] {
                try transport.migrationReceive([gradients ? a.memory.gradientRun : a.memory.weightsAndState], from: m.from, gradients: gradients)
            }
        }
    }

    func abandon() {}

    func handOver(flushedAt flush: Double) throws -> MigrationOutcome {
        if copyAtFlush { try post(gradients: false) }
        MigrationTestHooks.atRemoteFlush?()
        try post(gradients: true)
        let bytes = try transport.completeMigration()
        guard try transport.agreeMigration(ok: failure == nil) else {
            return MigrationOutcome(layersMoved: [], bytesMoved: 0, stallSeconds: monotonicSeconds() - flush,
                                    failure: "migration abandoned on every rank, training continues on the old plan: " +
                                        (failure ?? "a receiving rank could not place its layers"))
        }
        adopted = incoming
        return MigrationOutcome(layersMoved: moves.map(\.layer), bytesMoved: bytes, stallSeconds: 0, failure: nil)
    }

    func optimizerView(of layer: Int) -> (parameters: [Tensor], gradients: [Tensor], state: [[Tensor]])? {
        adopted[layer].map { ($0.layer.parameters, $0.layer.gradients, $0.memory.state) }
    }

    /// The senders drop their copies (released with the last reference); the receivers
    /// take the layers they built.
    func switchOwnership(_ pipeline: Pipeline) throws {
        for m in moves where m.from == rank {
            pipeline.layers[m.layer] = nil
            pipeline.optimizerState[m.layer] = []
            pipeline.parameterMemory[m.layer] = nil
        }
        for (l, a) in adopted {
            pipeline.layers[l] = a.layer
            pipeline.optimizerState[l] = a.memory.state
            pipeline.parameterMemory[l] = a.memory
        }
    }

    /// A fingerprint of a migration target, the same in every process (never 0): the
    /// transport's end-of-step agreement checks that every rank starts the same migration.
    static func fingerprint(_ target: PlanLayout) -> Int32 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ v: Int) { for b in withUnsafeBytes(of: Int64(v).littleEndian, Array.init) { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 } }
        for r in target.ranges { mix(r.lowerBound); mix(r.upperBound) }
        for p in target.policies { mix(p.rawValue) }
        return Int32(truncatingIfNeeded: h & 0x3fff_ffff) | 1
    }
}

/// Test hooks of live migration between processes.
public enum MigrationTestHooks {
    /// Runs on this process at the flush of a migrating step, before its gradients are
    /// handed over (the MPI failure tests make a rank die there).
    nonisolated(unsafe) public static var atRemoteFlush: (() -> Void)?
}
