import VPipeCore

/// How a session's stages reach each other, and everything that depends on where they run:
/// how many processes the session spans and which stages are this process's, the plan
/// every process must agree on, activations and gradients between neighbouring stages, the
/// end-of-iteration agreement (did every stage finish? the loss), failure detection, and
/// the messages of a live migration between processes.
///
/// Two implementations: `InProcessTransport` (every stage a thread of this process,
/// Transport/InProcess/) and `MPITransport` (one MPI rank per stage, Transport/MPI/).
/// `Transports.open` is the one place that chooses; a new transport (gloo, NCCL, TCP) is a
/// folder of its own plus a line there. Session and pipeline code never name a transport.
///
/// A receive blocks until the message arrives or the transport is aborted; after `abort`
/// every pending and future receive throws, so one failing stage stops them all.
public protocol Transport: AnyObject, Sendable {
    // MARK: Where the stages run

    /// True when the stages live in several processes (each builds only its own stages'
    /// layers, so layers migrate as messages, and a failed step poisons the session).
    var spansProcesses: Bool { get }
    /// This process's rank (0 in-process), and how many processes the session spans.
    var rank: Int { get }
    var processCount: Int { get }
    /// The stages this process runs in a pipeline of `stageCount` stages; throws when the
    /// transport cannot run that many (e.g. MPI runs one rank per stage).
    func localStages(stageCount: Int) throws -> [Int]
    /// Rank `root`'s bytes on every process (a plan, a re-planning decision). `error` on the
    /// root fails every process with that message instead.
    func broadcast(_ bytes: [UInt8]?, error: String?, root: Int) throws -> [UInt8]
    /// The error that stopped the session (after a failed step, peers are in unknown states).
    var poisoned: Error? { get }

    // MARK: Activations and gradients

    /// Stage `stage` sends micro-batch `microBatch`'s activation to stage + 1.
    func sendActivation(from stage: Int, microBatch: Int, _ tensor: Tensor) throws
    /// Stage `stage` receives micro-batch `microBatch`'s activation from stage − 1, as a copy in `space`.
    func receiveActivation(at stage: Int, microBatch: Int, into space: MemorySpace?) throws -> Tensor
    /// Stage `stage` sends micro-batch `microBatch`'s input gradient to stage − 1.
    func sendGradient(from stage: Int, microBatch: Int, _ tensor: Tensor) throws
    /// Stage `stage` receives micro-batch `microBatch`'s output gradient from stage + 1.
    func receiveGradient(at stage: Int, microBatch: Int, into space: MemorySpace?) throws -> Tensor
    /// Before stage `stage` runs `actions`: posts the receives it will need into `space`.
    func prepare(stage: Int, actions: [ScheduleAction], space: MemorySpace?) throws
    /// Fails every pending and future receive with `error` (the first abort wins).
    func abort(_ error: Error)
    /// The error of the first abort, if any.
    var abortError: Error? { get }
    /// Clears mailboxes and the abort state before an iteration.
    func reset()
    /// After the local stages ran: agrees across processes that every stage finished
    /// cleanly (throws the first failure otherwise) and returns the loss of the last
    /// stage (`loss` where this process runs it). `migration`: a fingerprint of the migration
    /// this process starts with the step (0: none); every process must start the same.
    func agree(localError: Error?, loss: Float?, lossRank: Int, migration: Int32) throws -> Float

    // MARK: Live migration between processes (used only when `spansProcesses`)

    /// Posts non-blocking sends of `tensors` to rank `peer` (weights and optimizer state,
    /// or gradients), in order; the tensors stay referenced until `completeMigration`.
    func migrationSend(_ tensors: [Tensor], to peer: Int, gradients: Bool) throws
    /// Posts the matching receives, straight into `tensors` (same order, same sizes).
    func migrationReceive(_ tensors: [Tensor], from peer: Int, gradients: Bool) throws
    /// Waits until every posted migration transfer completed; returns the bytes moved.
    func completeMigration() throws -> Int
    /// Every process's `ok` (e.g. the receiver could place the layer), AND-ed.
    func agreeMigration(ok: Bool) throws -> Bool

    /// Cancels what is pending; the transport cannot be used afterwards.
    func close()
}

/// What a transport whose stages all live in this process does for the distributed part:
/// every stage is local, a broadcast is the bytes themselves, the agreement is the local
/// outcome, and layers migrate by copying (never through migration messages).
extension Transport {
    public var spansProcesses: Bool { false }
    public var rank: Int { 0 }
    public var processCount: Int { 1 }
    public var poisoned: Error? { nil }
    public func localStages(stageCount: Int) throws -> [Int] { Array(0..<stageCount) }

    public func broadcast(_ bytes: [UInt8]?, error: String?, root: Int) throws -> [UInt8] {
        if let error { throw RuntimeError.failed(error) }
        return bytes ?? []
    }

    public func prepare(stage: Int, actions: [ScheduleAction], space: MemorySpace?) throws {}

    /// Every process's `bytes`, in rank order, on every process: one broadcast per rank
    /// (collective; for the small messages of re-planning between steps).
    public func allGather(_ bytes: [UInt8]) throws -> [[UInt8]] {
        try (0..<processCount).map { root in try broadcast(root == rank ? bytes : nil, error: nil, root: root) }
    }

    public func agree(localError: Error?, loss: Float?, lossRank: Int, migration: Int32) throws -> Float {
        if let localError { throw localError }
        return loss ?? .nan
    }

    public func migrationSend(_ tensors: [Tensor], to peer: Int, gradients: Bool) throws { throw Self.noMigrationMessages }
    public func migrationReceive(_ tensors: [Tensor], from peer: Int, gradients: Bool) throws { throw Self.noMigrationMessages }
    public func completeMigration() throws -> Int { 0 }
    public func agreeMigration(ok: Bool) throws -> Bool { ok }
    public func close() {}

    private static var noMigrationMessages: Error {
        RuntimeError.failed("internal: a transport whose stages share one process migrates layers by copying, not by messages")
    }
}
