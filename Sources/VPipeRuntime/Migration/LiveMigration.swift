import VPipeCore

/// A live migration (vPipe §4): the step that starts it trains on the old placement while
/// the moving layers' weights and optimizer state are copied to their new stages; at the
/// flush the accumulated gradients are handed over, the optimizer steps each layer where it
/// lives from now on, and ownership switches. The loss trajectory is the one without the
/// move: the receiver steps an exact copy with the sender's gradients.
///
/// Two kinds: `LocalMigration` (every stage in this process: copies between arenas on the
/// destination's copy queue) and `RemoteMigration` (stages in several processes: the
/// transport's migration messages). `Pipeline.step` drives either through these phases.
protocol LiveMigration: AnyObject {
    /// After a failed iteration: lets transfers in flight finish and drops them.
    func abandon()
    /// At the flush of a clean iteration: completes the transfers and hands the gradients
    /// over. A migration that cannot complete reports why in the outcome (training continues
    /// on the old plan); a transport failure throws (the step fails).
    func handOver(flushedAt flush: Double) throws -> MigrationOutcome
    /// After a successful hand-over: what the optimizer steps for moved layer `layer` (its
    /// new copy), or nil for a layer that did not move here.
    func optimizerView(of layer: Int) -> (parameters: [Tensor], gradients: [Tensor], state: [[Tensor]])?
    /// After the optimizer step: the new copies replace the old in `pipeline`.
    func switchOwnership(_ pipeline: Pipeline) throws
}

/// What a live migration did (or why it did not happen).
public struct MigrationOutcome: Sendable {
    public var layersMoved: [Int]
    public var bytesMoved: Int
    /// Seconds between the end of the iteration's compute and the new placement being in
    /// place, beyond the optimizer step itself: waiting for the pre-copy, handing over the
    /// gradients, switching ownership.
    public var stallSeconds: Double
    /// nil when applied; the reason when the old plan stayed.
    public var failure: String?
}

/// The layers whose stage differs between the running placement and `target`, ascending,
/// with their old and new stage.
func movingLayers(from stages: [Stage], to target: PlanLayout) -> [(layer: Int, from: Int, to: Int)] {
    var moves: [(layer: Int, from: Int, to: Int)] = []
    for (to, range) in target.ranges.enumerated() {
        for l in range {
            guard let from = stages.firstIndex(where: { $0.layers.contains(l) }), from != to else { continue }
            moves.append((l, from, to))
        }
    }
    return moves
}
