/// The one place where a session's transport is chosen (`TrainingOptions.transport`).
/// Adding a transport: a folder under Transport/ with a type conforming to `Transport`, a
/// case in `TrainingOptions.TransportKind` (and the proto's `Transport` enum), and a line here.
enum Transports {
    static func open(_ options: TrainingOptions) throws -> Transport {
        switch options.transport {
        case .inProcess: return InProcessTransport()
        case .mpi: return try MPITransport.open(failureTimeout: options.effectiveFailureTimeout)
        }
    }
}
