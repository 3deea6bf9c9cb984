/// Every failure libvpipe reports. Each case carries a message that names the field, layer,
/// stage or device at fault; the C ABI maps the case to a `vp_status`.
public enum VPipeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A field's value is invalid. `field` is its protobuf path, e.g. `model.layers[3].profile.fwd_seconds`.
    case invalidField(field: String, message: String)
    /// No plan of the requested kind fits the devices' memory.
    case infeasible(String)
    /// The requested capability does not exist yet.
    case notImplemented(String)
    /// A bug: an invariant of the library itself did not hold.
    case internalError(String)

    public var description: String {
        switch self {
        case let .invalidField(field, message): return "\(field): \(message)"
        case let .infeasible(message): return "infeasible: \(message)"
        case let .notImplemented(message): return "not implemented yet: \(message)"
        case let .internalError(message): return "internal error (please report): \(message)"
        }
    }
}
