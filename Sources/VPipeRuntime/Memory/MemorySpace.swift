#if canImport(Glibc)
import Glibc
#endif

/// A region of memory with a hard capacity that every `Tensor` in it is charged to: a
/// device's arena (a virtual GPU's memory) or the host pool its swapped stashes go to. The
/// accounting is the same for every backend; the bytes come from the space's `device`.
///
/// An allocation that would exceed the capacity fails like a GPU out-of-memory, naming the
/// stage, what was being allocated and the bytes; nothing is allocated then. Thread-safe:
/// a stage's worker and its copy engine allocate and free concurrently.
public final class MemorySpace: @unchecked Sendable {
    public enum Kind: Sendable { case device, host }

    public let name: String
    public let kind: Kind
    public let capacity: Int
    /// The device whose memory this is (set by the device that creates it); a space made
    /// on its own belongs to the host CPU device.
    weak var owner: Device?
    public var device: Device { owner ?? CPUDevice.host }
    private var lock = pthread_mutex_t()
    private var used = 0
    private var peak = 0
    private var windowPeak = 0

    public init(name: String, kind: Kind, capacity: Int) {
        self.name = name
        self.kind = kind
        self.capacity = capacity
        pthread_mutex_init(&lock, nil)
    }

    deinit { pthread_mutex_destroy(&lock) }

    /// Marks the calling thread as a copy engine (see `reserve`).
    static let copyThreadKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    static func markCopyEngineThread() {
        pthread_setspecific(copyThreadKey, UnsafeRawPointer(bitPattern: 1))
    }

    /// Charges `bytes` for `label` (e.g. `layer 3 ("block1") output`); throws `RuntimeError.outOfMemory`.
    public func reserve(_ bytes: Int, for label: @autoclosure () -> String) throws {
        pthread_mutex_lock(&lock)
        if bytes > capacity - used {  // not used + bytes: that may overflow for a huge request
            let inUse = used
            pthread_mutex_unlock(&lock)
            throw RuntimeError.outOfMemory(space: name, what: label(), requested: bytes, inUse: inUse, capacity: capacity)
        }
        used += bytes
        if used > peak { peak = used }
        // The copy engine's allocations (swap-ins, migration copies) run concurrently with a
        // layer call; they are not that call's workspace.
        if used > windowPeak && pthread_getspecific(MemorySpace.copyThreadKey) == nil { windowPeak = used }
        pthread_mutex_unlock(&lock)
    }

    public func release(_ bytes: Int) {
        pthread_mutex_lock(&lock)
        used -= bytes
        pthread_mutex_unlock(&lock)
    }

    public var bytesInUse: Int {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return used
    }

    public var peakBytes: Int {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return peak
    }

    /// Starts a measurement window (one layer call) and returns the bytes in use now; read
    /// the window's peak with `windowPeakBytes`. Independent of the step-level peak.
    public func beginWindow() -> Int {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        windowPeak = used
        return used
    }

    public var windowPeakBytes: Int {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return windowPeak
    }

    /// Starts a new peak measurement from the current use.
    public func resetPeak() {
        pthread_mutex_lock(&lock)
        peak = used
        pthread_mutex_unlock(&lock)
    }
}
