#if canImport(Glibc)
import Glibc
#endif

/// Where backends are chosen. A stage's device is made here from the device the cluster
/// describes; adding a backend is a folder under `Device/` and one line in `all`.
public enum DeviceBackends {
    /// What a backend needs to stand for one of the cluster's devices.
    public struct Request: Sendable {
        /// `stage 1 (device "gpu1")`, for errors.
        public var name: String
        /// Arena capacity in bytes (the device's memory).
        public var capacity: Int
        /// Bytes/s of the host link to model on copies (nil: as fast as the machine copies).
        public var bandwidth: Double?
        public init(name: String, capacity: Int, bandwidth: Double?) {
            self.name = name
            self.capacity = capacity
            self.bandwidth = bandwidth
        }
    }

    /// Every backend by name.
    static let all: [String: @Sendable (Request) -> Device] = [
        "cpu": { CPUDevice(name: $0.name, capacity: $0.capacity, bandwidth: $0.bandwidth) },
        "checked": { CheckedDevice(name: $0.name, capacity: $0.capacity, bandwidth: $0.bandwidth) },
    ]

    public static var names: [String] { all.keys.sorted() }

    /// The backend sessions use: `VPIPE_DEVICE` when set (e.g. `checked` to run everything
    /// on a device whose memory the host cannot dereference), else `cpu`.
    public static var selected: String {
        if let value = getenv("VPIPE_DEVICE"), !String(cString: value).isEmpty { return String(cString: value) }
        return "cpu"
    }

    /// A device of backend `backend` for `request`; an unknown name is an error naming the choices.
    public static func make(_ backend: String = selected, for request: Request) throws -> Device {
        guard let make = all[backend] else {
            throw RuntimeError.failed("device backend \"\(backend)\" (VPIPE_DEVICE) is not one of \(names.joined(separator: ", "))")
        }
        return make(request)
    }
}
