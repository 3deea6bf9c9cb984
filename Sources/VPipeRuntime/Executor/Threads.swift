#if canImport(Glibc)
import Glibc
#endif

/// Marks the threads that run pipeline stages, so that the C ABI can refuse a call into a
/// session from inside a layer callback (it would wait on the step that is waiting for it).
public enum StageThread {
    static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    static func mark() { pthread_setspecific(key, UnsafeRawPointer(bitPattern: 1)) }

    /// True on a stage worker thread.
    public static var isCurrent: Bool { pthread_getspecific(key) != nil }
}

/// A mutex and a condition variable, for the few hand-offs the executor has (one per
/// micro-batch and stage boundary, never per layer).
final class Monitor: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()

    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }

    /// Waits (the mutex held by the caller, inside `locked`) until signalled.
    func wait() { pthread_cond_wait(&cond, &mutex) }

    func broadcast() { pthread_cond_broadcast(&cond) }
}

/// Seconds on a monotonic clock.
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Nanoseconds on the same clock (for sums of many short intervals).
func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

func sleepSeconds(_ s: Double) {
    guard s > 0 else { return }
    var ts = timespec(tv_sec: Int(s), tv_nsec: Int((s - Double(Int(s))) * 1e9))
    nanosleep(&ts, nil)
}
