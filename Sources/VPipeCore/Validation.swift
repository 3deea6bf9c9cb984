/// Checks of every value a host can send, before any planning starts. Each failure throws
/// `VPipeError.invalidField` naming the protobuf field path, so a host can find the culprit
/// in its own request, e.g. `model.layers[3].profile.fwd_seconds: must be finite and >= 0, got nan`.
public enum Validation {
    /// Sizes above this are rejected: they cannot be real and would lose precision as Double.
    public static let maxBytes = 1 << 53
    public static let maxLayers = 1 << 20
    public static let maxDevices = 1 << 12
    public static let maxMicroBatches = 1 << 20
    /// Per-layer times above this (about 11.6 days for one micro-batch) are rejected, so
    /// that no sum of times over layers and micro-batches can overflow to infinity.
    public static let maxSeconds = 1e6
    /// Speeds outside [1e-6, 1e6] (0 still means 1.0) and bandwidths outside [1, 1e18]
    /// bytes/s are rejected for the same reason.
    public static let speedRange = 1e-6...1e6
    public static let bandwidthRange = 1.0...1e18

    public static func validate(_ request: PlanRequest) throws {
        try validate(request.model)
        try validate(request.cluster)
        try validateStageCount(devices: request.cluster.devices.count, layers: request.model.layers.count)
        try validate(microBatches: request.options.microBatches, field: "options.micro_batches")
    }

    public static func validate(_ model: ModelSpec) throws {
        if model.layers.isEmpty {
            throw VPipeError.invalidField(field: "model.layers", message: "the model has no layers; a pipeline needs at least one")
        }
        if model.layers.count > maxLayers {
            throw VPipeError.invalidField(field: "model.layers", message: "\(model.layers.count) layers is more than the supported \(maxLayers)")
        }
        try bytes(model.inputBytes, "model.input_bytes")
        let kappa = model.stateBytesPerParamByte
        if !kappa.isFinite || kappa < 0 || (kappa > 0 && kappa < 1) || kappa > 64 {
            throw VPipeError.invalidField(
                field: "model.state_bytes_per_param_byte",
                message: "must be 0 (meaning 4) or between 1 and 64, got \(kappa)")
        }
        for (l, layer) in model.layers.enumerated() {
            let path = "model.layers[\(l)].profile"
            let p = layer.profile
            try seconds(p.fwdSeconds, "\(path).fwd_seconds")
            try seconds(p.bwdSeconds, "\(path).bwd_seconds")
            try bytes(p.stashBytes, "\(path).stash_bytes")
            try bytes(p.outputBytes, "\(path).output_bytes")
            try bytes(p.paramBytes, "\(path).param_bytes")
        }
    }

    public static func validate(_ cluster: ClusterSpec) throws {
        let p = cluster.devices.count
        if p == 0 {
            throw VPipeError.invalidField(field: "cluster.devices", message: "the cluster has no devices; a pipeline needs at least one")
        }
        if p > maxDevices {
            throw VPipeError.invalidField(field: "cluster.devices", message: "\(p) devices is more than the supported \(maxDevices)")
        }
        for (i, d) in cluster.devices.enumerated() {
            let path = "cluster.devices[\(i)]"
            try bytes(d.memoryBytes, "\(path).memory_bytes")
            if d.memoryBytes == 0 {
                throw VPipeError.invalidField(field: "\(path).memory_bytes", message: "must be > 0 (the device's capacity in bytes), got 0")
            }
            try bytes(d.reservedBytes, "\(path).reserved_bytes")
            if !(d.speed == 0 || speedRange.contains(d.speed)) {
                throw VPipeError.invalidField(field: "\(path).speed", message: "must be 0 (meaning 1.0) or between 1e-6 and 1e6, got \(d.speed)")
            }
            try positiveRate(d.hostBandwidth, "\(path).host_bandwidth")
            if !d.allows(.keep) {
                throw VPipeError.invalidField(field: "\(path).allowed_policies",
                                              message: "must include MEMORY_POLICY_KEEP when it lists policies (a device that can keep nothing runs no layer)")
            }
        }
        if cluster.links.count != p - 1 {
            throw VPipeError.invalidField(
                field: "cluster.links",
                message: "expected \(p - 1) links (one between each pair of neighbouring devices), got \(cluster.links.count)")
        }
        for (i, link) in cluster.links.enumerated() {
            try positiveRate(link.bandwidth, "cluster.links[\(i)].bandwidth")
            try seconds(link.latency, "cluster.links[\(i)].latency")
        }
    }

    public static func validateStageCount(devices: Int, layers: Int) throws {
        if devices > layers {
            throw VPipeError.invalidField(
                field: "cluster.devices",
                message: "\(devices) devices but only \(layers) layers: every stage needs at least one layer; use at most \(layers) devices")
        }
    }

    public static func validate(microBatches m: Int, field: String) throws {
        if m < 1 || m > maxMicroBatches {
            throw VPipeError.invalidField(field: field, message: "must be between 1 and \(maxMicroBatches), got \(m)")
        }
    }

    static func seconds(_ v: Double, _ field: String) throws {
        if !v.isFinite || v < 0 || v > maxSeconds {
            throw VPipeError.invalidField(field: field, message: "must be finite, >= 0 and at most 1e6 seconds, got \(v)")
        }
    }

    static func bytes(_ v: Int, _ field: String) throws {
        if v < 0 || v > maxBytes {
            throw VPipeError.invalidField(field: field, message: "must be between 0 and 2^53 bytes, got \(v)")
        }
    }

    static func positiveRate(_ v: Double, _ field: String) throws {
        if !bandwidthRange.contains(v) {
            throw VPipeError.invalidField(field: field, message: "must be between 1 and 1e18 bytes/s, got \(v)")
        }
    }
}
