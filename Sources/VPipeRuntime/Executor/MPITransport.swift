import CMPI
#if canImport(Glibc)
import Glibc
#endif
import VPipeCore

/// Process-wide MPI state. MPI is initialised lazily, by the first session that asks for
/// the MPI transport, so that libvpipe.so stays usable in a process that no `mpirun`
/// started and that never asks for MPI. A host that initialised MPI itself (mpi4py, a C
/// host) keeps its MPI; it must have asked for MPI_THREAD_SERIALIZED or more, because a
/// stage runs on its own thread.
public enum MPIRuntime {
    private static let monitor = Monitor()
    nonisolated(unsafe) private static var initialized = false
    /// A peer process is gone: MPI_Finalize would wait for it forever, so the exit handler
    /// skips it.
    nonisolated(unsafe) static var peerLost = false
    /// MPI transports not yet closed. A process that exits with one open (exit() mid-run)
    /// is crashing as far as its peers know: finalizing would wait for them forever.
    nonisolated(unsafe) static var openTransports = 0

    public static func ensureInitialized() throws {
        try monitor.locked {
            if initialized { return }
            var flag: Int32 = 0
            MPI_Initialized(&flag)
            var provided: Int32 = 0
            if flag != 0 {
                MPI_Query_thread(&provided)
            } else {
                // Open MPI's plug-ins resolve libmpi's symbols globally; a host that loaded
                // libvpipe.so with RTLD_LOCAL (Python's ctypes) did not make them global.
                for name in ["libmpi.so.40", "libmpi.so"] where dlopen(name, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD) != nil { break }
                let rc = MPI_Init_thread(nil, nil, vp_mpi_thread_serialized(), &provided)
                guard rc == vp_mpi_success() else { throw RuntimeError.failed("MPI_Init_thread failed (code \(rc))") }
                MPI_Comm_set_errhandler(vp_mpi_comm_world(), vp_mpi_errors_return())
                atexit { MPIRuntime.finalizeAtExit() }
            }
            guard provided >= vp_mpi_thread_serialized() else {
                throw RuntimeError.failed("MPI was initialised with thread level \(provided); the MPI transport needs MPI_THREAD_SERIALIZED or more (a stage runs on its own thread)")
            }
            initialized = true
        }
    }

    static func finalizeAtExit() {
        var done: Int32 = 0
        MPI_Finalized(&done)
        if done != 0 || peerLost || monitor.locked({ openTransports }) > 0 { return }
        MPI_Finalize()
    }

    static func adjustOpen(_ d: Int) { monitor.locked { openTransports += d } }

    /// This process's rank and the world's size.
    public static func world() throws -> (rank: Int, size: Int) {
        try ensureInitialized()
        var rank: Int32 = 0, size: Int32 = 0
        MPI_Comm_rank(vp_mpi_comm_world(), &rank)
        MPI_Comm_size(vp_mpi_comm_world(), &size)
        return (Int(rank), Int(size))
    }

    /// A private communicator over MPI_COMM_WORLD (collective: every rank calls it), with
    /// errors returned rather than fatal.
    public static func duplicateWorld() throws -> MPI_Comm {
        try ensureInitialized()
        var comm: MPI_Comm? = nil
        let rc = MPI_Comm_dup(vp_mpi_comm_world(), &comm)
        guard rc == vp_mpi_success(), let comm else { throw RuntimeError.failed("MPI_Comm_dup failed (code \(rc))") }
        MPI_Comm_set_errhandler(comm, vp_mpi_errors_return())
        return comm
    }

    /// Rank `root`'s bytes on every rank (length first, then the bytes). A negative length
    /// carries an error message instead, so a failure on the root fails every rank.
    static func broadcast(_ bytes: [UInt8]?, error: String?, root: Int, comm: MPI_Comm) throws -> [UInt8] {
        var length: Int64 = 0
        var payload: [UInt8] = []
        if let bytes { length = Int64(bytes.count); payload = bytes }
        if let error { payload = Array(error.utf8); length = -Int64(payload.count) - 1 }
        try check(MPI_Bcast(&length, 1, vp_mpi_int64(), Int32(root), comm), "MPI_Bcast")
        let count = length >= 0 ? Int(length) : Int(-length - 1)
        if payload.count != count { payload = Array(repeating: 0, count: count) }
        if count > 0 {
            try payload.withUnsafeMutableBytes { try check(MPI_Bcast($0.baseAddress, Int32(count), vp_mpi_byte(), Int32(root), comm), "MPI_Bcast") }
        }
        if length < 0 { throw RuntimeError.failed("rank \(root): \(String(decoding: payload, as: UTF8.self))") }
        return payload
    }

    static func check(_ rc: Int32, _ what: String) throws {
        guard rc == vp_mpi_success() else { throw RuntimeError.failed("\(what) failed (MPI error \(rc))") }
    }
}

/// A transport whose stages live in several processes.
protocol DistributedTransport: Transport {
    var rank: Int { get }
    var size: Int { get }
    /// The error that stopped the session (a failed step leaves peers in unknown states).
    var poisoned: Error? { get }
    /// Before stage `stage` runs `actions`: posts the receives it will need into `space`.
    func prepare(stage: Int, actions: [ScheduleAction], space: MemorySpace?) throws
    /// After the local stages ran: completes the sends, agrees across ranks that every
    /// stage finished cleanly, and returns rank `lossRank`'s loss. Throws if any rank failed.
    /// `migration`: a fingerprint of the migration this rank starts with the step (0: none);
    /// every rank must have the same, else every rank fails naming the disagreement.
    func agree(localError: Error?, loss: Float?, lossRank: Int, migration: Int32) throws -> Float
    /// Live migration: posts non-blocking sends of `tensors` to rank `peer` (weights and
    /// optimizer state on the pre-copy tag, gradients on the gradient tag), in order. The
    /// tensors stay referenced until `completeMigration`.
    func migrationSend(_ tensors: [Tensor], to peer: Int, gradients: Bool) throws
    /// Posts the matching receives, straight into `tensors` (same order, same sizes).
    func migrationReceive(_ tensors: [Tensor], from peer: Int, gradients: Bool) throws
    /// Waits (with the failure protocol) until every posted migration transfer completed;
    /// returns the bytes this rank sent and received. A failure poisons the session.
    func completeMigration() throws -> Int
    /// Every rank's `ok` (e.g. the receiver could place the layer in its arena), MIN-reduced.
    func agreeMigration(ok: Bool) throws -> Bool
    /// Cancels pending receives.
    func close()
}

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
public final class MPITransport: DistributedTransport, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    public let timeout: Double
    let comm: MPI_Comm
    var grace: Double { max(0.5, timeout / 4) }

    static let abortTag: Int32 = 1, pingTag: Int32 = 2, pongTag: Int32 = 3
    /// Live migration: weights + optimizer state (pre-copy), and gradients (at the flush).
    /// Below the activation/gradient tags (16 and up), apart from the control tags.
    static let migrationTag: Int32 = 4, migrationGradientTag: Int32 = 5
    /// Test hook: runs on this process at the flush of a migrating step, before its
    /// gradients are handed over (the failure tests make a rank die there).
    nonisolated(unsafe) public static var testHookAtMigrationFlush: (() -> Void)?
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

    private var incoming: [Key: Incoming] = [:]
    private var transfers: [Transfer] = []
    private var transferBytes = 0
    private var outgoing: [Outgoing] = []
    private var space: MemorySpace?
    private let abortReceive = Control(capacity: 1024)
    private let pingReceive = Control(capacity: 8)
    private let pongReceive = Control(capacity: 8)
    private var controlSends: [Control] = []
    private var lastPong: [Int: Double] = [:]
    private var failure: Error?
    private var peerLost = false
    private(set) var poisoned: Error?

    /// Records `error` as the failure that ends this distributed session, and returns it to throw.
    private func poison(_ error: Error) -> Error {
        poisoned = error
        return error
    }
    private var closed = false
    /// Seconds spent waiting in the transport during the last iteration (for the benchmark).
    public private(set) var waitSeconds = 0.0

    /// `comm` from `MPIRuntime.duplicateWorld()`; its size is the stage count.
    public init(comm: MPI_Comm, timeout: Double) throws {
        self.comm = comm
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r)
        size = Int(s)
        self.timeout = timeout
        try postControl(abortReceive, tag: Self.abortTag)
        try postControl(pingReceive, tag: Self.pingTag)
        try postControl(pongReceive, tag: Self.pongTag)
        MPIRuntime.adjustOpen(+1)
    }

    deinit { close() }

    private func postControl(_ c: Control, tag: Int32) throws {
        try MPIRuntime.check(MPI_Irecv(c.buffer, Int32(c.capacity), vp_mpi_byte(), vp_mpi_any_source(), tag, comm, &c.request), "MPI_Irecv")
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

    // MARK: DistributedTransport

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
            try MPIRuntime.check(MPI_Irecv(inc.header, Int32(Self.headerWords * 8), vp_mpi_byte(), Int32(source),
                                           inc.tag, comm, &inc.headerRequest), "MPI_Irecv")
            incoming[key] = inc
        }
    }

    public func agree(localError: Error?, loss: Float?, lossRank: Int, migration: Int32 = 0) throws -> Float {
        if let localError { fail(localError, lost: false, broadcast: true) }
        let others = (0..<size).filter { $0 != rank }
        if failure == nil {
            do {
                try wait(peers: Array(Set(outgoing.map(\.destination))).sorted(), "completing the sends") { try self.testSends(); return self.outgoing.isEmpty }
            } catch {}
        }
        if peerLost, let failure {
            poisoned = failure
            throw failure
        }
        // Every rank, failed or not, joins the agreement, so no collective is left dangling.
        // [ok, migration, -migration] MIN-reduced: min(migration) == max(migration) iff every
        // rank starts the same migration (or none) with this step.
        let flags = UnsafeMutablePointer<Int32>.allocate(capacity: 6)
        defer { flags.deallocate() }
        flags[0] = failure == nil ? 1 : 0
        flags[1] = migration
        flags[2] = -migration
        var request: MPI_Request?
        do {
            try MPIRuntime.check(MPI_Iallreduce(flags, flags + 3, 3, vp_mpi_int(), vp_mpi_min(), comm, &request), "MPI_Iallreduce")
            try wait(peers: others, "agreeing that every stage finished", throwOnFailure: failure == nil) { try self.test(&request) }
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
        let value = UnsafeMutablePointer<Float>.allocate(capacity: 1)
        defer { value.deallocate() }
        value.pointee = loss ?? 0
        do {
            try MPIRuntime.check(MPI_Ibcast(value, 1, vp_mpi_float(), Int32(lossRank), comm, &request), "MPI_Ibcast")
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
            MPI_Cancel(&r)
            if !peerLost { MPI_Wait(&r, vp_mpi_status_ignore()) }
        }
        incoming.removeAll()
    }

    // MARK: Live migration

    public func migrationSend(_ tensors: [Tensor], to peer: Int, gradients: Bool) throws {
        try postTransfers(tensors, peer: peer, receive: false, tag: gradients ? Self.migrationGradientTag : Self.migrationTag)
    }

    public func migrationReceive(_ tensors: [Tensor], from peer: Int, gradients: Bool) throws {
        try postTransfers(tensors, peer: peer, receive: true, tag: gradients ? Self.migrationGradientTag : Self.migrationTag)
    }

    private func postTransfers(_ tensors: [Tensor], peer: Int, receive: Bool, tag: Int32) throws {
        if let failure { throw failure }
        guard peer >= 0 && peer < size && peer != rank else {
            throw RuntimeError.failed("rank \(rank): no rank \(peer) to migrate to or from (the world has \(size) ranks)")
        }
        for t in tensors {
            guard t.count < Int(Int32.max) else { throw RuntimeError.failed("rank \(rank): cannot migrate a tensor of shape \(t.shape) over MPI") }
            let x = Transfer(peer: peer, receive: receive, tensor: t)
            if receive {
                try MPIRuntime.check(MPI_Irecv(try t.hostAddressForTransfer(), Int32(t.count), vp_mpi_float(), Int32(peer), tag, comm, &x.request), "MPI_Irecv")
            } else {
                try MPIRuntime.check(MPI_Isend(try t.hostAddressForTransfer(), Int32(t.count), vp_mpi_float(), Int32(peer), tag, comm, &x.request), "MPI_Isend")
            }
            transfers.append(x)
            transferBytes += t.bytes
        }
    }

    public func completeMigration() throws -> Int {
        do {
            if let poisoned { throw poisoned }
            let peers = Array(Set(transfers.map(\.peer))).sorted()
            try wait(peers: peers, "migrating layers") {
                var keep: [Transfer] = []
                for x in self.transfers where !(try self.test(&x.request)) { keep.append(x) }
                self.transfers = keep
                return keep.isEmpty
            }
        } catch {
            throw poison(failure ?? error)
        }
        defer { transferBytes = 0 }
        return transferBytes
    }

    public func agreeMigration(ok: Bool) throws -> Bool {
        let flags = UnsafeMutablePointer<Int32>.allocate(capacity: 2)
        defer { flags.deallocate() }
        flags[0] = ok ? 1 : 0
        flags[1] = 0
        var request: MPI_Request?
        do {
            if let poisoned { throw poisoned }
            try MPIRuntime.check(MPI_Iallreduce(flags, flags + 1, 1, vp_mpi_int(), vp_mpi_min(), comm, &request), "MPI_Iallreduce")
            try wait(peers: (0..<size).filter { $0 != rank }, "agreeing on the migration") { try self.test(&request) }
        } catch {
            throw poison(failure ?? error)
        }
        return flags[1] != 0
    }

    // MARK: Messages

    private func send(_ key: Key, to destination: Int, _ tensor: Tensor) throws {
        if let failure { throw failure }
        guard destination >= 0 && destination < size else {
            throw RuntimeError.failed("rank \(rank): no rank \(destination) to send to (the world has \(size) ranks)")
        }
        guard tensor.shape.count < Self.headerWords, tensor.count < Int(Int32.max) else {
            throw RuntimeError.failed("rank \(rank): cannot send a tensor of shape \(tensor.shape) over MPI")
        }
        let o = Outgoing(destination: destination, tensor: tensor)
        o.header[0] = Int64(tensor.shape.count)
        for (d, v) in tensor.shape.enumerated() { o.header[d + 1] = Int64(v) }
        let tag = Self.headerTag(key.microBatch, gradient: key.gradient)
        try MPIRuntime.check(MPI_Isend(o.header, Int32(Self.headerWords * 8), vp_mpi_byte(), Int32(destination), tag, comm, &o.requests[0]), "MPI_Isend")
        try MPIRuntime.check(MPI_Isend(try tensor.hostAddressForTransfer(), Int32(tensor.count), vp_mpi_float(), Int32(destination), tag + 1, comm, &o.requests[1]), "MPI_Isend")
        outgoing.append(o)
        try testSends()
    }

    private func receive(_ key: Key, _ label: String) throws -> Tensor {
        if let failure { throw failure }
        guard let inc = incoming[key] else { throw RuntimeError.failed("rank \(rank): \(label) was not expected by the schedule") }
        try wait(peers: [inc.source], label) { try self.progress(inc) }
        incoming[key] = nil
        guard let t = inc.tensor else { throw RuntimeError.failed("rank \(rank): \(label) arrived without a payload") }
        return t
    }

    /// Advances one receive: header arrived → post the payload receive; payload arrived → done.
    private func progress(_ inc: Incoming) throws -> Bool {
        if inc.complete { return true }
        if inc.headerRequest != nil {
            guard try test(&inc.headerRequest) else { return false }
            let dims = Int(inc.header[0])
            guard dims >= 0 && dims < Self.headerWords else { throw RuntimeError.failed("rank \(rank): malformed message header from rank \(inc.source)") }
            let shape = (0..<dims).map { Int(inc.header[$0 + 1]) }
            let t = try Tensor(shape: shape, in: space, for: "rank \(rank) receive buffer from rank \(inc.source)")
            inc.tensor = t
            try MPIRuntime.check(MPI_Irecv(try t.hostAddressForTransfer(), Int32(t.count), vp_mpi_float(), Int32(inc.source), inc.tag + 1, comm, &inc.payloadRequest), "MPI_Irecv")
        }
        guard inc.payloadRequest != nil else { return inc.complete }
        if try test(&inc.payloadRequest) { inc.complete = true }
        return inc.complete
    }

    /// A request not yet completed (completion leaves nil or MPI_REQUEST_NULL).
    static func active(_ r: MPI_Request?) -> Bool { r != nil && r != vp_mpi_request_null() }

    private func test(_ request: inout MPI_Request?) throws -> Bool {
        if !Self.active(request) { return true }
        var flag: Int32 = 0
        try MPIRuntime.check(MPI_Test(&request, &flag, vp_mpi_status_ignore()), "MPI_Test")
        if flag != 0 { request = nil }
        return flag != 0
    }

    /// Releases the sends that completed (their buffers may be reused).
    private func testSends() throws {
        var keep: [Outgoing] = []
        for o in outgoing {
            let a = try test(&o.requests[0]), b = try test(&o.requests[1])
            if !(a && b) { keep.append(o) }
        }
        outgoing = keep
    }

    // MARK: Control: abort, ping, pong

    /// Answers pings, notes pongs, reaps control sends, and notes an abort from another rank.
    private func pollControl() {
        var status = MPI_Status()
        var flag: Int32 = 0
        if Self.active(pingReceive.request), MPI_Test(&pingReceive.request, &flag, &status) == vp_mpi_success(), flag != 0 {
            sendControl(to: Int(status.MPI_SOURCE), tag: Self.pongTag, [0])
            try? postControl(pingReceive, tag: Self.pingTag)
        }
        flag = 0
        if Self.active(pongReceive.request), MPI_Test(&pongReceive.request, &flag, &status) == vp_mpi_success(), flag != 0 {
            lastPong[Int(status.MPI_SOURCE)] = monotonicSeconds()
            try? postControl(pongReceive, tag: Self.pongTag)
        }
        flag = 0
        if Self.active(abortReceive.request), MPI_Test(&abortReceive.request, &flag, &status) == vp_mpi_success(), flag != 0 {
            var count: Int32 = 0
            MPI_Get_count(&status, vp_mpi_byte(), &count)
            let bytes = UnsafeRawBufferPointer(start: abortReceive.buffer, count: Int(max(0, count)))
            let source = Int(status.MPI_SOURCE)
            let lost = bytes.first == 1
            let text = String(decoding: bytes.dropFirst(), as: UTF8.self)
            let e = RuntimeError.failed(lost ? "rank \(source) (stage \(source)) stopped the step: \(text)" : "rank \(source) (stage \(source)) failed: \(text)")
            fail(e, lost: lost, broadcast: false)
        }
        controlSends.removeAll { c in
            var f: Int32 = 0
            return MPI_Test(&c.request, &f, vp_mpi_status_ignore()) != vp_mpi_success() || f != 0
        }
    }

    private func sendControl(to destination: Int, tag: Int32, _ bytes: [UInt8]) {
        let c = Control(capacity: max(1, bytes.count))
        bytes.withUnsafeBytes { c.buffer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        if MPI_Isend(c.buffer, Int32(bytes.count), vp_mpi_byte(), Int32(destination), tag, comm, &c.request) == vp_mpi_success() {
            controlSends.append(c)
        }
    }

    /// Records the first failure; tells every other rank when it is ours to tell.
    private func fail(_ error: Error, lost: Bool, broadcast: Bool) {
        if lost {
            peerLost = true
            MPIRuntime.peerLost = true
        }
        guard failure == nil else { return }
        failure = error
        guard broadcast else { return }
        let text = Array("\(error)".utf8.prefix(1000))
        for r in 0..<size where r != rank { sendControl(to: r, tag: Self.abortTag, [lost ? 1 : 0] + text) }
        // Small messages leave eagerly; give them a moment to do so before the caller may exit.
        let deadline = monotonicSeconds() + 0.2
        while !controlSends.isEmpty && monotonicSeconds() < deadline { pollControl(); sleepSeconds(0.0002) }
    }

    /// Polls until `done` (progressing every posted receive meanwhile). After `timeout` s
    /// without completion, pings `peers`; one that does not answer within the grace period
    /// is lost. With `throwOnFailure`, stops at the first failure (local or from a peer).
    private func wait(peers: [Int], _ what: String, throwOnFailure: Bool = true, _ done: () throws -> Bool) throws {
        let start = monotonicSeconds()
        defer { waitSeconds += monotonicSeconds() - start }
        var deadline = start + timeout
        var pingedAt: Double?
        var spins = 0
        while true {
            if try done() { return }
            pollControl()
            if throwOnFailure, let failure { throw failure }
            for inc in incoming.values { _ = try progress(inc) }
            try testSends()
            let now = monotonicSeconds()
            if let t = pingedAt {
                let silent = peers.filter { lastPong[$0, default: -1] < t }
                if silent.isEmpty {
                    pingedAt = nil
                    deadline = now + timeout
                } else if now > t + grace {
                    let r = silent[0]
                    let e = RuntimeError.failed("rank \(r) (stage \(r)) did not answer within \(formatTimeout(timeout)) s (rank \(rank) was \(what))")
                    fail(e, lost: true, broadcast: true)
                    throw failure ?? e
                }
            } else if now > deadline {
                if peers.isEmpty { deadline = now + timeout; continue }
                pingedAt = now
                for p in peers { sendControl(to: p, tag: Self.pingTag, [0]) }
            }
            spins += 1
            if spins > 200 { sleepSeconds(0.00005) }
        }
    }

    private func formatTimeout(_ t: Double) -> String {
        t == t.rounded() ? String(Int(t)) : String(t)
    }
}
