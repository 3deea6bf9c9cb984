#if canImport(Glibc)
import Glibc
#endif

/// The per-thread message behind `vp_last_error()`. Each thread owns one malloc'd C string,
/// replaced on the next failure on that thread and freed when the thread exits.
enum LastError {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { free($0) }
        return key
    }()

    static func set(_ message: String) {
        let old = pthread_getspecific(key)
        pthread_setspecific(key, strdup(message))
        free(old)
    }

    static var current: UnsafePointer<CChar> {
        if let p = pthread_getspecific(key) { return UnsafePointer(p.assumingMemoryBound(to: CChar.self)) }
        return emptyMessage
    }

    /// Static storage for "" so an untouched thread never allocates.
    nonisolated(unsafe) private static let emptyMessage: UnsafePointer<CChar> = {
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: 1)
        p.pointee = 0
        return UnsafePointer(p)
    }()
}
