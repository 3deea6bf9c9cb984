/// The stash of one SWAP layer for one micro-batch, as it moves: on the device after the
/// forward, on the host after the swap-out, back on the device after the swap-in.
final class SwapSlot: @unchecked Sendable {
    private let monitor = Monitor()
    private var onDevice: [Tensor]?
    private var onHost: [Tensor]?
    private var failure: Error?
    private(set) var swapInIssued = false

    init(device: [Tensor]) { onDevice = device }

    /// Bytes currently on the device (0 once swapped out).
    var deviceBytes: Int { monitor.locked { onDevice?.reduce(0) { $0 + $1.bytes } ?? 0 } }

    /// On the device's copy queue: device -> host; the device copies are released.
    func swapOut(_ device: Device, host space: MemorySpace, label: String) {
        move(device, toHost: true, space, "\(label) swapped stash")
    }

    /// Marks the swap-in as issued; true the first time (so it is submitted once).
    func claimSwapIn() -> Bool {
        monitor.locked {
            if swapInIssued { return false }
            swapInIssued = true
            return true
        }
    }

    /// On the device's copy queue: host -> device (nothing when it was never swapped out).
    func swapIn(_ device: Device, arena space: MemorySpace, label: String) {
        move(device, toHost: false, space, "\(label) swapped-in stash")
    }

    private func move(_ device: Device, toHost: Bool, _ space: MemorySpace, _ label: String) {
        let tensors: [Tensor]? = monitor.locked { toHost ? onDevice : onHost }
        guard let tensors else { return }
        do {
            let copies = try device.copyOnQueue(tensors, to: space, label: label)
            monitor.locked {
                if toHost { (onHost, onDevice) = (copies, nil) } else { (onDevice, onHost) = (copies, nil) }
                monitor.broadcast()
            }
        } catch { fail(error) }
    }

    /// Blocks until the stash is on the device (or the copy failed, or `aborted` says stop).
    func waitOnDevice(aborted: () -> Error?) throws -> [Tensor] {
        try monitor.locked {
            while true {
                if let failure { throw failure }
                if let onDevice { return onDevice }
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
                if onDevice == nil || swapInIssued { return }
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
