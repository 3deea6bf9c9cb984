import CMPI
#if canImport(Glibc)
import Glibc
#endif
import VPipeCore

/// Stage-to-stage traffic as MPI point-to-point messages, one rank per stage (rank i runs
/// stage i). Each transfer is two messages tagged by (micro-batch, direction): a fixed-size
/// header (the shape) and the payload (float32). Receives are posted before the stage
/// runs (headers at `prepare`, payloads as soon as their header arrives, while the stage
/// computes or waits), sends are MPI_Isend and are completed when the iteration ends, so
/// transfers overlap computation.
///
/// Failure: waits poll (MPI_Test) with a timeout. After `timeout` seconds without progress
/// a waiting rank pings the ranks it waits on; one that does not answer within a grace
/// period is declared lost ("rank R (stage S) did not answer within T s"). A rank that
/// fails, or finds a peer lost, sends an abort message (a dedicated tag) to every rank; a
/// rank that receives one stops with an error naming the origin. A rank alive but itself
/// waiting answers pings, so only the rank that is really gone is named.
public final class MPITransport: Transport, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    public let timeout: Double
    let comm: MPI_Comm
    var grace: Double { max(0.5, timeout / 4) }

    static let abortTag: Int32 = 1, pingTag: Int32 = 2, pongTag: Int32 = 3
    /// Live migration: weights + optimizer state (pre-copy), and gradients (at the flush).
    /// Below the activation/gradient tags (16 and up), apart from the control tags.
    static let migrationTag: Int32 = 4, migrationGradientTag: Int32 = 5
    static let headerWords = 8
    static func headerTag(_ mb: Int, gradient: Bool) -> Int32 { Int32(16 + 4 * mb + (gradient ? 2 : 0)) }

    struct Key: Hashable { let gradient: Bool, microBatch: Int }

    final class Incoming {
        let source: Int
        let tag: Int32
        let header = UnsafeMutablePointer<Int64>.allocate(capacity: MPITransport.headerWords)
        var headerRequest: MPI_Request?
        var payloadRequest: MPI_Request?
        var tensor: Tensor?
        var complete = false
        init(source: Int, tag: Int32) { self.source = source; self.tag = tag }
        deinit { header.deallocate() }
    }

    final class Outgoing {
        let destination: Int
        let header = UnsafeMutablePointer<Int64>.allocate(capacity: MPITransport.headerWords)
        var requests: [MPI_Request?] = [nil, nil]
        let tensor: Tensor
        init(destination: Int, tensor: Tensor) { self.destination = destination; self.tensor = tensor }
        deinit { header.deallocate() }
    }

    /// A small message in flight (abort, ping, pong) and its buffer.
    final class Control {
        var request: MPI_Request?
        let buffer: UnsafeMutableRawPointer
        let capacity: Int
        init(capacity: Int) { self.capacity = capacity; buffer = .allocate(byteCount: capacity, alignment: 8) }
        deinit { buffer.deallocate() }
    }

    /// A migration transfer in flight: one tensor to or from `peer`.
    final class Transfer {
        let peer: Int
        let receive: Bool
        let tensor: Tensor
        var request: MPI_Request?
        init(peer: Int, receive: Bool, tensor: Tensor) { self.peer = peer; self.receive = receive; self.tensor = tensor }
    }

    var incoming: [Key: Incoming] = [:]
    var transfers: [Transfer] = []
    var transferBytes = 0
    var outgoing: [Outgoing] = []
    var space: MemorySpace?
    let abortReceive = Control(capacity: 1024)
    let pingReceive = Control(capacity: 8)
    let pongReceive = Control(capacity: 8)
    var controlSends: [Control] = []
    var lastPong: [Int: Double] = [:]
    var failure: Error?
    var peerLost = false
    public internal(set) var poisoned: Error?

    /// Records `error` as the failure that ends this distributed session, and returns it to throw.
    func poison(_ error: Error) -> Error {
        poisoned = error
        return error
    }
    var closed = false
    /// Seconds spent waiting in the transport during the last iteration (for the benchmark).
    public internal(set) var waitSeconds = 0.0

    /// `comm` from `MPIRuntime.duplicateWorld()`; its size is the stage count.
    public init(comm: MPI_Comm, timeout: Double) throws {
        self.comm = comm
        var r: Int32 = 0, s: Int32 = 0
        vp_mpi_comm_rank(comm, &r)
        vp_mpi_comm_size(comm, &s)
        rank = Int(r)
        size = Int(s)
        self.timeout = timeout
        try postControl(abortReceive, tag: Self.abortTag)
        try postControl(pingReceive, tag: Self.pingTag)
        try postControl(pongReceive, tag: Self.pongTag)
        MPIRuntime.adjustOpen(+1)
    }

    deinit { close() }

    func postControl(_ c: Control, tag: Int32) throws {
        try MPIRuntime.check(vp_mpi_irecv(c.buffer, Int32(c.capacity), vp_mpi_byte(), vp_mpi_any_source(), tag, comm, &c.request), "MPI_Irecv")
    }

    // MARK: Transport

    public func sendActivation(from stage: Int, microBatch: Int, _ tensor: Tensor) throws {
        try send(Key(gradient: false, microBatch: microBatch), to: stage + 1, tensor)
    }

    public func sendGradient(from stage: Int, microBatch: Int, _ tensor: Tensor) throws {
        try send(Key(gradient: true, microBatch: microBatch), to: stage - 1, tensor)
    }

    public func receiveActivation(at stage: Int, microBatch: Int, into space: MemorySpace?) throws -> Tensor {
        try receive(Key(gradient: false, microBatch: microBatch), "stage \(stage) activation of micro-batch \(microBatch)")
    }

    public func receiveGradient(at stage: Int, microBatch: Int, into space: MemorySpace?) throws -> Tensor {
        try receive(Key(gradient: true, microBatch: microBatch), "stage \(stage) gradient of micro-batch \(microBatch)")
    }

    public func abort(_ error: Error) { fail(error, lost: false, broadcast: true) }

    public var abortError: Error? { failure }

    public func reset() {
        if poisoned == nil { failure = nil }
        waitSeconds = 0
    }

    // MARK: Where the stages run

    /// The MPI transport of a session: MPI initialised on first use, a private
    /// communicator over the world, one rank per stage.
    static func open(failureTimeout: Double) throws -> MPITransport {
        try MPITransport(comm: MPIRuntime.duplicateWorld(), timeout: failureTimeout)
    }

    public var spansProcesses: Bool { true }
    public var processCount: Int { size }

    public func localStages(stageCount: Int) throws -> [Int] {
        guard stageCount == size else {
            throw VPipeError.invalidField(field: "training.transport", message: "TRANSPORT_MPI runs one rank per stage: the plan has \(stageCount) stages but the MPI world has \(size) ranks; launch with mpirun -np \(stageCount)")
        }
        return [rank]
    }

    public func broadcast(_ bytes: [UInt8]?, error: String?, root: Int) throws -> [UInt8] {
        try MPIRuntime.broadcast(bytes, error: error, root: root, comm: comm)
    }

    // MARK: Stage preparation and the end-of-iteration agreement

    public func prepare(stage: Int, actions: [ScheduleAction], space: MemorySpace?) throws {
        if let poisoned { throw poisoned }
        self.space = space
        let m = actions.map(\.microBatch).max() ?? 0
        guard Int(Self.headerTag(m, gradient: true)) + 1 <= Int(vp_mpi_tag_ub()) else {
            throw VPipeError.invalidField(field: "training.micro_batches", message: "\(m + 1) micro-batches need more MPI tags than this MPI offers (\(vp_mpi_tag_ub()))")
        }
        for a in actions where a.kind == .recvActivation || a.kind == .recvGradient {
            let gradient = a.kind == .recvGradient
            let key = Key(gradient: gradient, microBatch: a.microBatch)
            let source = gradient ? stage + 1 : stage - 1
            let inc = Incoming(source: source, tag: Self.headerTag(a.microBatch, gradient: gradient))
            try MPIRuntime.check(vp_mpi_irecv(inc.header, Int32(Self.headerWords * 8), vp_mpi_byte(), Int32(source),
                                           inc.tag, comm, &inc.headerRequest), "MPI_Irecv")
            incoming[key] = inc
        }
    }

    /// The end of a step on every rank: sends completed, then a vote (did every stage
    /// finish, did every rank start the same migration), then the loss from `lossRank`.
    public func agree(localError: Error?, loss: Float?, lossRank: Int, migration: Int32 = 0) throws -> Float {
        if let localError { fail(localError, lost: false, broadcast: true) }
        if failure == nil { try? finishSends() }
        if peerLost, let failure {
            poisoned = failure
            throw failure
        }
        try vote(migration: migration)
        return try broadcastLoss(loss ?? 0, from: lossRank)
    }

    /// Every rank, failed or not, joins the vote, so no collective is left dangling.
    /// [ok, migration, -migration] MIN-reduced: min(migration) == max(migration) iff every
    /// rank starts the same migration (or none) with this step.
    private func vote(migration: Int32) throws {
        let flags = UnsafeMutablePointer<Int32>.allocate(capacity: 6)
        defer { flags.deallocate() }
        flags[0] = failure == nil ? 1 : 0
        flags[1] = migration
        flags[2] = -migration
        var request: MPI_Request?
        do {
            try MPIRuntime.check(vp_mpi_iallreduce(flags, flags + 3, 3, vp_mpi_int(), vp_mpi_min(), comm, &request), "MPI_Iallreduce")
            try wait(peers: (0..<size).filter { $0 != rank }, "agreeing that every stage finished", throwOnFailure: failure == nil) { try self.test(&request) }
        } catch {
            throw poison(failure ?? error)
        }
        if let failure {
            poisoned = failure
            throw failure
        }
        if flags[3] != 0 && flags[4] != -flags[5] {
            throw poison(RuntimeError.failed("the ranks did not all apply the same plan before this step (rank \(rank) \(migration == 0 ? "applied none" : "applied one")): with TRANSPORT_MPI every rank's host must call vp_session_apply_plan with the same plan between the same two steps"))
        }
        if flags[3] == 0 {
            // Another rank failed; its abort message names it.
            let deadline = monotonicSeconds() + grace
            while monotonicSeconds() < deadline && failure == nil { pollControl(); sleepSeconds(0.0005) }
            throw poison(failure ?? RuntimeError.failed("another rank failed the step"))
        }
    }

    private func broadcastLoss(_ loss: Float, from lossRank: Int) throws -> Float {
        let value = UnsafeMutablePointer<Float>.allocate(capacity: 1)
        defer { value.deallocate() }
        value.pointee = loss
        var request: MPI_Request?
        do {
            try MPIRuntime.check(vp_mpi_ibcast(value, 1, vp_mpi_float(), Int32(lossRank), comm, &request), "MPI_Ibcast")
            try wait(peers: rank == lossRank ? [] : [lossRank], "receiving the loss") { try self.test(&request) }
        } catch {
            throw poison(failure ?? error)
        }
        return value.pointee
    }

    /// Waits until every send of this rank completed (their buffers may be reused).
    public func finishSends() throws {
        try wait(peers: Array(Set(outgoing.map(\.destination))).sorted(), "completing the sends") { try self.testSends(); return self.outgoing.isEmpty }
    }

    public func close() {
        if closed { return }
        closed = true
        MPIRuntime.adjustOpen(-1)
        var pending = [abortReceive.request, pingReceive.request, pongReceive.request]
        pending += incoming.values.flatMap { [$0.headerRequest, $0.payloadRequest] }
        pending += transfers.filter(\.receive).map(\.request)
        // A migration send still pending has no receiver any more: MPI_Finalize could wait for it.
        if transfers.contains(where: { !$0.receive && Self.active($0.request) }) { MPIRuntime.peerLost = true }
        for var r in pending where Self.active(r) {
            vp_mpi_cancel(&r)
            if !peerLost { vp_mpi_wait(&r, vp_mpi_status_ignore()) }
        }
        incoming.removeAll()
    }
}
