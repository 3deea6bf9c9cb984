/// Every stage a thread of this process: mailboxes in memory, one per (destination stage,
/// direction, micro-batch). The distributed part of `Transport` is the protocol's
/// single-process default (every stage local, agreement = the local outcome).
public final class InProcessTransport: Transport, @unchecked Sendable {
    struct Key: Hashable {
        let stage: Int, gradient: Bool, microBatch: Int
    }

    private let monitor = Monitor()
    private var mailboxes: [Key: Tensor] = [:]
    private var failure: Error?

    public init() {}

    public func sendActivation(from stage: Int, microBatch: Int, _ tensor: Tensor) throws {
        try post(Key(stage: stage + 1, gradient: false, microBatch: microBatch), tensor)
    }

    public func sendGradient(from stage: Int, microBatch: Int, _ tensor: Tensor) throws {
        try post(Key(stage: stage - 1, gradient: true, microBatch: microBatch), tensor)
    }

    public func receiveActivation(at stage: Int, microBatch: Int, into space: MemorySpace?) throws -> Tensor {
        try take(Key(stage: stage, gradient: false, microBatch: microBatch), space, "stage \(stage) activation of micro-batch \(microBatch)")
    }

    public func receiveGradient(at stage: Int, microBatch: Int, into space: MemorySpace?) throws -> Tensor {
        try take(Key(stage: stage, gradient: true, microBatch: microBatch), space, "stage \(stage) gradient of micro-batch \(microBatch)")
    }

    public func abort(_ error: Error) {
        monitor.locked {
            if failure == nil { failure = error }
            mailboxes.removeAll()
            monitor.broadcast()
        }
    }

    public var abortError: Error? { monitor.locked { failure } }

    public func reset() {
        monitor.locked {
            mailboxes.removeAll()
            failure = nil
        }
    }

    private func post(_ key: Key, _ tensor: Tensor) throws {
        try monitor.locked {
            if let failure { throw failure }
            mailboxes[key] = tensor
            monitor.broadcast()
        }
    }

    private func take(_ key: Key, _ space: MemorySpace?, _ label: String) throws -> Tensor {
        let message: Tensor = try monitor.locked {
            while true {
                if let failure { throw failure }
                if let t = mailboxes.removeValue(forKey: key) { return t }
                monitor.wait()
            }
        }
        // The receive buffer lives in the receiver's memory, as after a real transfer.
        return try message.copy(to: space, for: "\(label) receive buffer")
    }
}
