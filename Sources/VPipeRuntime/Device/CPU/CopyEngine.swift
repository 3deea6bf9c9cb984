#if canImport(Glibc)
import Glibc
#endif

/// The CPU device's copy queue: one thread that runs copies in the order they are
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
    func copy(_ tensors: [Tensor], to space: MemorySpace, label: String) throws -> [Tensor] {
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
