import CMPI
#if canImport(Glibc)
import Glibc
#endif

/// Broadcasts between steps that cannot hang on a dead rank, and long local work between
/// steps (writing or reading a checkpoint shard) during which this rank stays alive to its
/// peers. Both poll like the end-of-iteration agreement (`wait`): a silent peer is pinged
/// after `timeout` seconds and declared lost after the grace period, which fails every rank
/// with an error naming it.
extension MPITransport {
    /// Rank `root`'s bytes on every rank (`error` on the root fails every rank with it):
    /// MPI_Ibcast of the length, then of the bytes, each waited for with failure detection.
    func boundedBroadcast(_ bytes: [UInt8]?, error: String?, root: Int, _ what: String) throws -> [UInt8] {
        if let poisoned { throw poisoned }
        var payload: [UInt8] = []
        var length: Int64 = 0
        if let bytes { length = Int64(bytes.count); payload = bytes }
        if let error { payload = Array(error.utf8); length = -Int64(payload.count) - 1 }
        let header = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
        header.pointee = length
        try ibcast(UnsafeMutableRawPointer(header), count: 8, root: root, what)
        length = header.pointee
        header.deallocate()
        let count = length >= 0 ? Int(length) : Int(-length - 1)
        if count > 0 {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 8)
            if rank == root { payload.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: count) } }
            try ibcast(buffer, count: count, root: root, what)
            payload = Array(UnsafeRawBufferPointer(start: buffer, count: count))
            buffer.deallocate()
        } else {
            payload = []
        }
        if length < 0 { throw RuntimeError.failed("rank \(root): \(String(decoding: payload, as: UTF8.self))") }
        return payload
    }

    /// One MPI_Ibcast of `count` bytes at `buffer`, waited for while watching every other
    /// rank. On failure the buffer is left allocated on purpose: the request may still be
    /// pending inside MPI (a dead peer), which could write into it.
    private func ibcast(_ buffer: UnsafeMutableRawPointer, count: Int, root: Int, _ what: String) throws {
        var request: MPI_Request?
        try MPIRuntime.check(vp_mpi_ibcast(buffer, Int32(count), vp_mpi_byte(), Int32(root), comm, &request), "MPI_Ibcast")
        let others = (0..<size).filter { $0 != rank }
        do {
            try wait(peers: others, what) { try self.test(&request) }
        } catch {
            throw poison(failure ?? error)
        }
    }

    /// Runs `work` on a helper thread while this (the MPI) thread keeps answering its peers'
    /// pings, so that a long local step (a shard of hundreds of MB written to disk) is not
    /// taken for a dead rank. `work` must not call MPI. A failure another rank reported
    /// meanwhile is thrown after `work` finished.
    func answeringPeers<T>(while what: String, _ work: @escaping () throws -> T) throws -> T {
        let box = WorkResult<T>()
        var thread = pthread_t()
        let context = Unmanaged.passRetained(WorkThread(box: box, work: work)).toOpaque()
        guard pthread_create(&thread, nil, { raw in
            let job = Unmanaged<AnyObject>.fromOpaque(raw!).takeRetainedValue() as! WorkRunning
            job.run()
            return nil
        }, context) == 0 else {
            Unmanaged<AnyObject>.fromOpaque(context).release()
            return try work()
        }
        try? wait(peers: [], what, throwOnFailure: false) { box.finished }
        pthread_join(thread, nil)
        let result = try box.get()
        if let failure { throw poison(failure) }
        return result
    }
}

private protocol WorkRunning: AnyObject { func run() }

/// What `answeringPeers` hands its helper thread.
private final class WorkThread<T>: WorkRunning, @unchecked Sendable {
    let box: WorkResult<T>
    let work: () throws -> T
    init(box: WorkResult<T>, work: @escaping () throws -> T) { self.box = box; self.work = work }
    func run() { box.set(Result { try work() }) }
}

/// The helper thread's result, published under a lock.
private final class WorkResult<T>: @unchecked Sendable {
    private let monitor = Monitor()
    private var result: Result<T, Error>?
    var finished: Bool { monitor.locked { result != nil } }
    func set(_ r: Result<T, Error>) { monitor.locked { result = r } }
    func get() throws -> T { try monitor.locked { result! }.get() }
}
