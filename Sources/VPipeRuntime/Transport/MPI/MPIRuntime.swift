import CMPI
#if canImport(Glibc)
import Glibc
#endif
import VPipeCore

/// Process-wide MPI state. MPI is loaded and initialised lazily, by the first session that
/// asks for the MPI transport, so that libvpipe.so stays usable in a process that no `mpirun`
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
            try loadLibrary()
            var flag: Int32 = 0
            vp_mpi_initialized(&flag)
            var provided: Int32 = 0
            if flag != 0 {
                vp_mpi_query_thread(&provided)
            } else {
                let rc = vp_mpi_init_thread(nil, nil, vp_mpi_thread_serialized(), &provided)
                guard rc == vp_mpi_success() else { throw RuntimeError.failed("MPI_Init_thread failed (code \(rc))") }
                vp_mpi_comm_set_errhandler(vp_mpi_comm_world(), vp_mpi_errors_return())
                atexit { MPIRuntime.finalizeAtExit() }
            }
            guard provided >= vp_mpi_thread_serialized() else {
                throw RuntimeError.failed("MPI was initialised with thread level \(provided); the MPI transport needs MPI_THREAD_SERIALIZED or more (a stage runs on its own thread)")
            }
            initialized = true
        }
    }

    /// libvpipe.so does not link libmpi (a host without Open MPI loads it all the same):
    /// the first MPI session loads it (Sources/CMPI/mpi.c). A missing library is an error
    /// naming what was looked for and the package that provides it.
    private static func loadLibrary() throws {
        var message = [CChar](repeating: 0, count: 2048)
        guard vp_mpi_load(&message, message.count) == 0 else {
            throw RuntimeError.failed(String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
    }

    static func finalizeAtExit() {
        var done: Int32 = 0
        vp_mpi_finalized(&done)
        if done != 0 || peerLost || monitor.locked({ openTransports }) > 0 { return }
        vp_mpi_finalize()
    }

    static func adjustOpen(_ d: Int) { monitor.locked { openTransports += d } }

    /// This process's rank and the world's size.
    public static func world() throws -> (rank: Int, size: Int) {
        try ensureInitialized()
        var rank: Int32 = 0, size: Int32 = 0
        vp_mpi_comm_rank(vp_mpi_comm_world(), &rank)
        vp_mpi_comm_size(vp_mpi_comm_world(), &size)
        return (Int(rank), Int(size))
    }

    /// A private communicator over MPI_COMM_WORLD (collective: every rank calls it), with
    /// errors returned rather than fatal.
    public static func duplicateWorld() throws -> MPI_Comm {
        try ensureInitialized()
        var comm: MPI_Comm? = nil
        let rc = vp_mpi_comm_dup(vp_mpi_comm_world(), &comm)
        guard rc == vp_mpi_success(), let comm else { throw RuntimeError.failed("MPI_Comm_dup failed (code \(rc))") }
        vp_mpi_comm_set_errhandler(comm, vp_mpi_errors_return())
        return comm
    }

    /// Rank `root`'s bytes on every rank (length first, then the bytes). A negative length
    /// carries an error message instead, so a failure on the root fails every rank.
    static func broadcast(_ bytes: [UInt8]?, error: String?, root: Int, comm: MPI_Comm) throws -> [UInt8] {
        var length: Int64 = 0
        var payload: [UInt8] = []
        if let bytes { length = Int64(bytes.count); payload = bytes }
        if let error { payload = Array(error.utf8); length = -Int64(payload.count) - 1 }
        try check(vp_mpi_bcast(&length, 1, vp_mpi_int64(), Int32(root), comm), "MPI_Bcast")
        let count = length >= 0 ? Int(length) : Int(-length - 1)
        if payload.count != count { payload = Array(repeating: 0, count: count) }
        if count > 0 {
            try payload.withUnsafeMutableBytes { try check(vp_mpi_bcast($0.baseAddress, Int32(count), vp_mpi_byte(), Int32(root), comm), "MPI_Bcast") }
        }
        if length < 0 { throw RuntimeError.failed("rank \(root): \(String(decoding: payload, as: UTF8.self))") }
        return payload
    }

    static func check(_ rc: Int32, _ what: String) throws {
        guard rc == vp_mpi_success() else { throw RuntimeError.failed("\(what) failed (MPI error \(rc))") }
    }
}
