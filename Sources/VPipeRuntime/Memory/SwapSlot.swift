/// The stash of one SWAP layer for one micro-batch, as it moves: on the device after the
/// forward, on the host after the swap-out, back on the device after the swap-in, and gone
/// once its backward took it. Copy-queue jobs that run after the backward took the stash
/// (or that were overtaken by it) do nothing, so no stash outlives its backward: before,
/// a copy queue that fell behind (a throttled link, a busy machine) kept device copies
/// alive into the next step, and the measured peak doubled.
final class SwapSlot: @unchecked Sendable {
    private enum State {
        /// On the device: after the forward, or back after the swap-in.
        case device([Tensor])
        /// The swap-out is copying; the device tensors are still held (and charged).
        case movingOut
        case host([Tensor])
        /// The swap-in is copying into new device tensors.
        case movingIn
        /// The backward took the stash.
        case taken
    }

    private let monitor = Monitor()
    private var state: State
    private var failure: Error?
    private(set) var swapInClaimed = false
    /// Bytes of the stash on the device when the forward made it.
    let bytes: Int

    /// `bytes`: the stash's distinct tensors' bytes, as the stage measured them.
    init(device: [Tensor], bytes: Int) {
        state = .device(device)
        self.bytes = bytes
    }

    /// On the device's copy queue: device -> host; the device copies are released. Skipped
    /// when the swap-in was claimed before it started (the stash is needed back: it stays).
    func swapOut(_ device: Device, host space: MemorySpace, label: String) {
        let tensors: [Tensor]? = monitor.locked {
            guard case let .device(t) = state, !swapInClaimed else { return nil }
            state = .movingOut
            return t
        }
        guard let tensors else { return }
        move(device, tensors, to: space, "\(label) swapped stash") { .host($0) }
    }

    /// Marks the swap-in as claimed; true the first time (so it is submitted once).
    func claimSwapIn() -> Bool {
        monitor.locked {
            if swapInClaimed { return false }
            swapInClaimed = true
            monitor.broadcast()
            return true
        }
    }

    /// On the device's copy queue: host -> device (nothing when the stash never left or
    /// was already taken).
    func swapIn(_ device: Device, arena space: MemorySpace, label: String) {
        let tensors: [Tensor]? = monitor.locked {
            guard case let .host(t) = state else { return nil }
            state = .movingIn
            return t
        }
        guard let tensors else { return }
        move(device, tensors, to: space, "\(label) swapped-in stash") { .device($0) }
    }

    private func move(_ device: Device, _ tensors: [Tensor], to space: MemorySpace, _ label: String, _ landed: ([Tensor]) -> State) {
        do {
            let copies = try device.copyOnQueue(tensors, to: space, label: label)
            monitor.locked {
                state = landed(copies)
                monitor.broadcast()
            }
        } catch { fail(error) }
    }

    /// True once the swap-out has landed on the host (the device copy is released).
    var isOnHost: Bool {
        monitor.locked {
            if case .host = state { return true }
            return false
        }
    }

    /// Blocks until the stash no longer occupies the swap-out buffer: it landed on the host,
    /// or its swap-in was claimed before it left (it then counts as swapped in), or it was
    /// taken; throws when a copy failed or `aborted` says stop.
    func waitSwappedOut(aborted: () -> Error?) throws {
        try monitor.locked {
            while true {
                if let failure { throw failure }
                switch state {
                case .host, .movingIn, .taken: return
                case .device where swapInClaimed: return
                default: break
                }
                if let error = aborted() { throw error }
                monitor.wait()
            }
        }
    }

    /// Blocks until the stash is on the device and takes it: the slot holds nothing
    /// afterwards (the backward drops the tensors when it is done with them).
    func take(aborted: () -> Error?) throws -> [Tensor] {
        try monitor.locked {
            while true {
                if let failure { throw failure }
                if case let .device(t) = state {
                    state = .taken
                    return t
                }
                if let error = aborted() { throw error }
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
}
