#if canImport(Glibc)
import Glibc
#endif

/// A stage's device<->host copy engine: one thread that runs copies in the order they are
/// submitted, while the stage's worker computes. Optionally throttled so that a copy of b
/// bytes takes at least b / bandwidth seconds, the way a PCIe link would.
final class CopyEngine: @unchecked Sendable {
    private let monitor = Monitor()
    private var queue: [() -> Void] = []
    private var closed = false
    private var thread = pthread_t()
    private var started = false
    let bandwidth: Double?

    init(bandwidth: Double?) {
        self.bandwidth = bandwidth
        let box = Unmanaged.passRetained(self).toOpaque()
        started = pthread_create(&thread, nil, { raw in
            let engine = Unmanaged<CopyEngine>.fromOpaque(raw!).takeRetainedValue()
            engine.loop()
            return nil
        }, box) == 0
        if !started { Unmanaged<CopyEngine>.fromOpaque(box).release() }
    }

    func submit(_ job: @escaping () -> Void) {
        guard started else { job(); return }
        monitor.locked {
            queue.append(job)
            monitor.broadcast()
        }
    }

    /// Stops the thread; called when the session closes. Queued copies are dropped (their
    /// results could no longer be used) and a throttled copy stops waiting, so closing never
    /// waits out bytes / bandwidth.
    func shutdown() {
        monitor.locked {
            closed = true
            queue.removeAll()
            monitor.broadcast()
        }
        if started { pthread_join(thread, nil) }
        started = false
    }

    private func loop() {
        MemorySpace.markCopyEngineThread()
        while true {
            let job: (() -> Void)? = monitor.locked {
                while queue.isEmpty && !closed { monitor.wait() }
                return queue.isEmpty ? nil : queue.removeFirst()
            }
            guard let job else { return }
            job()
        }
    }

    /// Copies `tensors` to `space`, then waits out the rest of the throttled duration.
    func copy(_ tensors: [Tensor], to space: MemorySpace?, label: String) throws -> [Tensor] {
        let start = monotonicSeconds()
        let copies = try tensors.map { try $0.copy(to: space, for: label) }
        if let bandwidth {
            let bytes = Double(tensors.reduce(0) { $0 + $1.bytes })
            let until = start + bytes / bandwidth
            // In slices, so that a closing session does not wait for the whole duration.
            while monotonicSeconds() < until && !monitor.locked({ closed }) {
                sleepSeconds(min(0.01, until - monotonicSeconds()))
            }
        }
        return copies
    }
}

/// The stash of one SWAP layer for one micro-batch, as it moves: on the device after the
/// forward, on the host after the swap-out, back on the device after the swap-in.
final class SwapSlot: @unchecked Sendable {
    private let monitor = Monitor()
    private var device: [Tensor]?
    private var host: [Tensor]?
    private var failure: Error?
    private(set) var swapInIssued = false

    init(device: [Tensor]) { self.device = device }

    /// Bytes currently on the device (0 once swapped out).
    var deviceBytes: Int { monitor.locked { device?.reduce(0) { $0 + $1.bytes } ?? 0 } }

    /// On the copy engine: device -> host; the device copies are released.
    func swapOut(_ engine: CopyEngine, host space: MemorySpace, label: String) {
        let tensors: [Tensor]? = monitor.locked { device }
        guard let tensors else { return }
        do {
            let copies = try engine.copy(tensors, to: space, label: "\(label) swapped stash")
            monitor.locked {
                host = copies
                device = nil
                monitor.broadcast()
            }
        } catch { fail(error) }
    }

    /// Marks the swap-in as issued; true the first time (so it is submitted once).
    func claimSwapIn() -> Bool {
        monitor.locked {
            if swapInIssued { return false }
            swapInIssued = true
            return true
        }
    }

    /// On the copy engine: host -> device.
    func swapIn(_ engine: CopyEngine, device space: MemorySpace, label: String) {
        let tensors: [Tensor]? = monitor.locked { host }
        guard let tensors else { return }  // never swapped out: still on the device
        do {
            let copies = try engine.copy(tensors, to: space, label: "\(label) swapped-in stash")
            monitor.locked {
                device = copies
                host = nil
                monitor.broadcast()
            }
        } catch { fail(error) }
    }

    /// Blocks until the stash is on the device (or the copy failed, or `aborted` says stop).
    func waitOnDevice(aborted: () -> Error?) throws -> [Tensor] {
        try monitor.locked {
            while true {
                if let failure { throw failure }
                if let device { return device }
                if let error = aborted() { throw error }
                monitor.wait()
            }
        }
    }

    /// Blocks until the swap-out has landed on the host (or failed): the device copy is gone.
    func waitSwappedOut() throws {
        try monitor.locked {
            while true {
                if let failure { throw failure }
                if device == nil || swapInIssued { return }
                monitor.wait()
            }
        }
    }

    func fail(_ error: Error) {
        monitor.locked {
            if failure == nil { failure = error }
            monitor.broadcast()
        }
    }

    /// Wakes a waiter so it re-checks the abort state.
    func poke() { monitor.locked { monitor.broadcast() } }
}
