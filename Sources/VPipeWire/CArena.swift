#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Owns the C memory behind protobuf-c structs that Swift builds for packing, and frees it
/// all at once: a message tree is built, packed to bytes, and dropped.
final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    /// Zeroed storage for `count` values of `T`.
    func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let raw = calloc(max(count, 1), MemoryLayout<T>.stride)!
        blocks.append(raw)
        return raw.bindMemory(to: T.self, capacity: max(count, 1))
    }

    /// A NUL-terminated copy of `s`.
    func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        let copy = strdup(s)!
        blocks.append(UnsafeMutableRawPointer(copy))
        return copy
    }

    deinit {
        for b in blocks { free(b) }
    }
}
