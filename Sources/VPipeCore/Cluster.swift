/// One (virtual) device a stage runs on. Symbols M, σ, H, R of docs/cost-model.md.
public struct DeviceSpec: Sendable, Equatable {
    public var name: String
    public var memoryBytes: Int
    /// Relative compute speed as given; 0 means 1.0 (see `effectiveSpeed`).
    public var speed: Double
    /// Bytes/s of the device<->host copy engine used for swapping.
    public var hostBandwidth: Double
    public var reservedBytes: Int
    /// The policies this device can deliver; empty means all. A CPU forbids SWAP (its
    /// device memory is host memory: swapping frees nothing). Planners give no layer on
    /// this device another policy; evaluating a plan that does is an error naming the layer.
    public var allowedPolicies: Set<MemoryPolicy>

    public init(name: String, memoryBytes: Int, speed: Double = 1, hostBandwidth: Double, reservedBytes: Int = 0,
                allowedPolicies: Set<MemoryPolicy> = []) {
        self.name = name
        self.memoryBytes = memoryBytes
        self.speed = speed
        self.hostBandwidth = hostBandwidth
        self.reservedBytes = reservedBytes
        self.allowedPolicies = allowedPolicies
    }

    public var effectiveSpeed: Double { speed == 0 ? 1 : speed }
    public func allows(_ policy: MemoryPolicy) -> Bool { allowedPolicies.isEmpty || allowedPolicies.contains(policy) }
}

/// The link between device i and device i+1. Symbols B, λ of docs/cost-model.md.
public struct LinkSpec: Sendable, Equatable {
    public var bandwidth: Double
    public var latency: Double

    public init(bandwidth: Double, latency: Double = 0) {
        self.bandwidth = bandwidth
        self.latency = latency
    }
}

/// Devices in pipeline order (stage i runs on devices[i]) and the links between neighbours.
public struct ClusterSpec: Sendable, Equatable {
    public var devices: [DeviceSpec]
    /// links[i] joins devices[i] and devices[i+1]; exactly devices.count - 1 of them.
    public var links: [LinkSpec]

    public init(devices: [DeviceSpec], links: [LinkSpec]) {
        self.devices = devices
        self.links = links
    }

    /// A cluster of `count` identical devices joined by identical links.
    public static func uniform(count: Int, device: DeviceSpec, link: LinkSpec) -> ClusterSpec {
        var devices: [DeviceSpec] = []
        for i in 0..<count {
            var d = device
            d.name = device.name.isEmpty ? "dev\(i)" : "\(device.name)\(i)"
            devices.append(d)
        }
        return ClusterSpec(devices: devices, links: Array(repeating: link, count: max(0, count - 1)))
    }

    /// `device 2 ("gpu2")`, for messages.
    public func describeDevice(_ i: Int) -> String {
        let name = devices[i].name
        return name.isEmpty ? "device \(i)" : "device \(i) (\"\(name)\")"
    }
}
