/// Failures of the training runtime. Messages name the stage, layer and bytes.
public enum RuntimeError: Error, Sendable, CustomStringConvertible, Equatable {
    case outOfMemory(space: String, what: String, requested: Int, inUse: Int, capacity: Int)
    case invalidShape(String)
    case failed(String)

    public var description: String {
        switch self {
        case let .outOfMemory(space, what, requested, inUse, capacity):
            // Overflow-safe, and never a negative "over": a host allocation can fail below the
            // space's capacity (the memory is held outside it).
            let (total, overflow) = inUse.addingReportingOverflow(requested)
            let over = overflow ? "more than \(Int.max) bytes in all"
                : total > capacity ? "\(total - capacity) bytes over"
                : "the allocator could not provide them although that is within the capacity (memory is held outside this space)"
            return "\(space) out of memory allocating \(requested) bytes for \(what): \(inUse) of \(capacity) bytes in use, " + over
        case let .invalidShape(message): return message
        case let .failed(message): return message
        }
    }
}
