#if canImport(Glibc)
import Glibc
#endif

/// A file that appears under its name complete or not at all: bytes go to a temporary name
/// beside it, then fsync, rename over the final name, and fsync of the directory (so the
/// rename itself survives a crash). A process killed mid-write leaves only the temporary
/// file, never a half-written checkpoint under the real name.
///
/// Writes are buffered (small tensors are many); large ones go straight to the kernel.
final class AtomicFile {
    let path: String
    let temporaryPath: String
    private var fd: Int32
    private var buffer: [UInt8] = []
    private static let bufferSize = 1 << 20
    /// Bytes written so far (the offset of the next write).
    private(set) var offset = 0
    private let timing: CheckpointTiming?

    init(path: String, timing: CheckpointTiming? = nil) throws {
        self.path = path
        self.timing = timing
        temporaryPath = "\(path).tmp-\(getpid())"
        Self.dropCachedPages(of: path)
        fd = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw CheckpointError.io(path: path, "cannot create \(temporaryPath): \(Self.reason())") }
        buffer.reserveCapacity(Self.bufferSize)
    }

    deinit { abandon() }

    /// Drops the page cache of the checkpoint file about to be replaced or superseded (durable
    /// and clean since its own save's fsync), so that the new file's pages are the ones it
    /// frees rather than memory
    /// the kernel has to find anew: two copies of a large checkpoint never crowd the cache,
    /// and on this VM, where never- or long-unused guest memory is slow to touch, writing 805
    /// MB went from 1.6–2.5 s to 0.2–0.7 s (docs/benchmarks.md). A missing file is fine.
    static func dropCachedPages(of path: String) {
        let old = open(path, O_RDONLY | O_CLOEXEC)
        guard old >= 0 else { return }
        _ = posix_fadvise(old, 0, 0, POSIX_FADV_DONTNEED)
        close(old)
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        if buffer.count + bytes.count > Self.bufferSize { try flush() }
        if bytes.count >= Self.bufferSize {
            try writeAll(bytes)
        } else {
            buffer.append(contentsOf: bytes)
        }
        offset += bytes.count
    }

    func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    private func flush() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try writeAll($0) }
        buffer.removeAll(keepingCapacity: true)
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        try timing.measure(\.write) { try writeAllUntimed(bytes) }
    }

    private func writeAllUntimed(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress!.advanced(by: done), bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { throw CheckpointError.io(path: path, "writing \(temporaryPath): \(Self.reason())") }
            done += n
        }
    }

    /// fsync, rename over `path`, fsync the directory. After this the file is durable.
    func commit() throws {
        try flush()
        let synced = timing.measure(\.fsync) { fsync(fd) == 0 }
        if !synced { throw CheckpointError.io(path: path, "fsync of \(temporaryPath): \(Self.reason())") }
        close(fd)
        fd = -1
        try timing.measure(\.rename) {
            if rename(temporaryPath, path) != 0 {
                let why = Self.reason()
                unlink(temporaryPath)
                throw CheckpointError.io(path: path, "renaming \(temporaryPath) to it: \(why)")
            }
            Self.syncDirectory(of: path)
        }
    }

    /// Drops the temporary file (an error, or a write that is no longer wanted).
    func abandon() {
        guard fd >= 0 else { return }
        close(fd)
        fd = -1
        unlink(temporaryPath)
    }

    /// fsync of the directory that holds `path`, so that a rename into it is durable.
    static func syncDirectory(of path: String) {
        let dir = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let d = open(dir.isEmpty ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if d >= 0 { _ = fsync(d); close(d) }
    }

    static func reason() -> String { String(cString: strerror(errno)) }
}
