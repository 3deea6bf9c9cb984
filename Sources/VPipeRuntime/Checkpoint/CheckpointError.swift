/// Why a checkpoint could not be written or read. Every case names the file; a load that
/// throws leaves the session exactly as it was.
public enum CheckpointError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The file system refused (open, write, fsync, rename), with the system's reason.
    case io(path: String, String)
    /// Truncated, a checksum mismatch, or bytes that are not a checkpoint.
    case damaged(path: String, String)
    /// Written by a newer libvpipe whose format this one cannot read.
    case newerFormat(path: String, found: Int, supported: Int)
    /// A sound checkpoint that does not fit this session: another model, optimizer or layout.
    case mismatch(path: String, String)

    public var description: String {
        switch self {
        case let .io(path, message): return "checkpoint \(path): \(message)"
        case let .damaged(path, message): return "checkpoint \(path) is damaged: \(message)"
        case let .newerFormat(path, found, supported):
            return "checkpoint \(path) has format version \(found); this libvpipe reads versions up to \(supported) (written by a newer libvpipe)"
        case let .mismatch(path, message): return "checkpoint \(path) does not fit this session: \(message)"
        }
    }
}
