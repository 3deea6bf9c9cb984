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
