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
    /// The measurement window (one layer call): the thread that runs it, the net bytes it
    /// reserved since it began, and the most of those at once.
    private var windowThread: pthread_t?
    private var windowUsed = 0
    private var windowPeak = 0

    public init(name: String, kind: Kind, capacity: Int) {
        self.name = name
        self.kind = kind
        self.capacity = capacity
        pthread_mutex_init(&lock, nil)
    }

    deinit { pthread_mutex_destroy(&lock) }

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
        if inWindow() {
            windowUsed += bytes
            windowPeak = max(windowPeak, windowUsed)
        }
        pthread_mutex_unlock(&lock)
    }

    public func release(_ bytes: Int) {
        pthread_mutex_lock(&lock)
        used -= bytes
        if inWindow() { windowUsed -= bytes }
        pthread_mutex_unlock(&lock)
    }

    /// Whether the calling thread runs the window. Only its own reserves and releases count:
    /// the copy engine's swap-ins and swap-outs, and other stages taking this stage's sent
    /// tensors, run concurrently with a layer call and are not its workspace (counting
    /// them made the measured workspace, and so the predicted peak, depend on timing).
    private func inWindow() -> Bool {
        guard let windowThread else { return false }
        return pthread_equal(windowThread, pthread_self()) != 0
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

    /// Starts a measurement window (one layer call) on the calling thread; read the most
    /// bytes it held at once beyond what it held at the start with `windowPeakBytes`.
    /// Independent of the step-level peak.
    public func beginWindow() {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        windowThread = pthread_self()
        windowUsed = 0
        windowPeak = 0
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
