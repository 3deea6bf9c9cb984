import CVPipeProto
import VPipeCore

/// Decoding: protobuf bytes -> protobuf-c structs -> Swift values. Values are range-checked
/// here only as far as the Swift types need (a uint64 must fit an Int, an enum must be
/// known); `Validation` in VPipeCore judges what they mean. Every error names the field.
public enum WireDecode {
    public static func planRequest(_ bytes: UnsafeRawBufferPointer) throws -> PlanRequest {
        try unpack(bytes, type: "vpipe.PlanRequest", unpack: vpipe__plan_request__unpack,
                   free: vpipe__plan_request__free_unpacked) { req in
            guard let model = req.pointee.model else {
                throw VPipeError.invalidField(field: "model", message: "missing: a PlanRequest needs the model to plan")
            }
            guard let cluster = req.pointee.cluster else {
                throw VPipeError.invalidField(field: "cluster", message: "missing: a PlanRequest needs the cluster to plan for")
            }
            guard let options = req.pointee.options else {
                throw VPipeError.invalidField(field: "options", message: "missing: a PlanRequest needs options (at least micro_batches)")
            }
            return PlanRequest(model: try modelSpec(model, requireProfiles: true), cluster: try clusterSpec(cluster),
                               options: try planOptions(options, field: "options"))
        }
    }

    /// A ModelSpec on its own (what `vpipe import pipedream --out` writes), every layer profiled.
    public static func modelSpec(_ bytes: UnsafeRawBufferPointer) throws -> ModelSpec {
        try unpack(bytes, type: "vpipe.ModelSpec", unpack: vpipe__model_spec__unpack,
                   free: vpipe__model_spec__free_unpacked) { try modelSpec($0, requireProfiles: true) }
    }

    /// An EvaluationRequest: the model, the cluster, and the plan's decisions.
    public static func evaluationRequest(_ bytes: UnsafeRawBufferPointer) throws
        -> (model: ModelSpec, cluster: ClusterSpec, schedule: Schedule, microBatches: Int, layout: PlanLayout)
    {
        try unpack(bytes, type: "vpipe.EvaluationRequest", unpack: vpipe__evaluation_request__unpack,
                   free: vpipe__evaluation_request__free_unpacked) { req in
            try planOnModel(req.pointee.model, req.pointee.cluster, req.pointee.plan, message: "an EvaluationRequest", use: "evaluate")
        }
    }

    /// The {model, cluster, plan} triple that EvaluationRequest and SimulationRequest share:
    /// each part required (the error names it), the plan read for its decisions only.
    static func planOnModel(_ model: UnsafeMutablePointer<Vpipe__ModelSpec>?, _ cluster: UnsafeMutablePointer<Vpipe__ClusterSpec>?,
                            _ plan: UnsafeMutablePointer<Vpipe__Plan>?, message: String, use: String) throws
        -> (model: ModelSpec, cluster: ClusterSpec, schedule: Schedule, microBatches: Int, layout: PlanLayout)
    {
        guard let model else { throw VPipeError.invalidField(field: "model", message: "missing: \(message) needs the model") }
        guard let cluster else { throw VPipeError.invalidField(field: "cluster", message: "missing: \(message) needs the cluster") }
        guard let plan else { throw VPipeError.invalidField(field: "plan", message: "missing: \(message) needs the plan to \(use)") }
        let decoded = try self.plan(plan)
        return (try modelSpec(model), try clusterSpec(cluster), decoded.schedule, decoded.microBatches, decoded.layout)
    }

    /// A Plan's decisions and settings (its numbers are not read back: they are derived).
    public static func plan(_ bytes: UnsafeRawBufferPointer) throws
        -> (schedule: Schedule, microBatches: Int, layout: PlanLayout, planner: PlannerKind?)
    {
        try unpack(bytes, type: "vpipe.Plan", unpack: vpipe__plan__unpack, free: vpipe__plan__free_unpacked) { p in
            let d = try plan(p, field: "")
            return (d.schedule, d.microBatches, d.layout, d.planner)
        }
    }

    // MARK: - messages

    static func plan(_ p: UnsafeMutablePointer<Vpipe__Plan>, field: String = "plan.")
        throws -> (schedule: Schedule, microBatches: Int, layout: PlanLayout, planner: PlannerKind?)
    {
        let scheduleRaw = Int(p.pointee.schedule.rawValue)
        let schedule = scheduleRaw == 0 ? Schedule.oneFOneB : try scheduleValue(scheduleRaw, field: "\(field)schedule")
        let m = Int(p.pointee.micro_batches)
        try Validation.validate(microBatches: m, field: "\(field)micro_batches")
        let plannerRaw = Int(p.pointee.planner.rawValue)
        let planner = plannerRaw == 0 ? nil : try plannerValue(plannerRaw, field: "\(field)planner")
        var ranges: [Range<Int>] = []
        var policies: [MemoryPolicy] = []
        for (i, sp) in try repeated(p.pointee.stages, p.pointee.n_stages, field: "\(field)stages").enumerated() {
            let path = "\(field)stages[\(i)]"
            let first = Int(sp.pointee.first_layer), last = Int(sp.pointee.last_layer)
            if last < first {
                throw VPipeError.invalidField(field: "\(path).last_layer",
                                              message: "last_layer \(last) is before first_layer \(first)")
            }
            if Int(sp.pointee.device) != i {
                throw VPipeError.invalidField(field: "\(path).device",
                                              message: "stage \(i) runs on device \(i) (devices are in pipeline order), got \(sp.pointee.device)")
            }
            let count = last - first + 1
            if sp.pointee.n_policy != count {
                throw VPipeError.invalidField(field: "\(path).policy",
                                              message: "expected one policy per layer (\(count) for layers \(first)..\(last)), got \(sp.pointee.n_policy)")
            }
            for j in 0..<count {
                let raw = Int(sp.pointee.policy[j].rawValue)
                guard let policy = MemoryPolicy(rawValue: raw) else {
                    throw VPipeError.invalidField(field: "\(path).policy[\(j)]",
                                                  message: "expected MEMORY_POLICY_KEEP, _SWAP or _RECOMPUTE, got \(raw)")
                }
                policies.append(policy)
            }
            ranges.append(first..<(last + 1))
        }
        return (schedule, m, PlanLayout(ranges: ranges, policies: policies), planner)
    }

    /// `requireProfiles`: planning needs every profile; a training session measures them.
    static func modelSpec(_ m: UnsafeMutablePointer<Vpipe__ModelSpec>, requireProfiles: Bool = true) throws -> ModelSpec {
        var layers: [LayerSpec] = []
        let specs = try repeated(m.pointee.layers, m.pointee.n_layers, field: "model.layers")
        layers.reserveCapacity(specs.count)
        for (l, spec) in specs.enumerated() {
            let path = "model.layers[\(l)]"
            let kind = try layerKind(spec, path: path)
            let profile: LayerProfile
            if let p = spec.pointee.profile {
                profile = LayerProfile(
                    fwdSeconds: p.pointee.fwd_seconds, bwdSeconds: p.pointee.bwd_seconds,
                    stashBytes: try bytes(p.pointee.stash_bytes, "\(path).profile.stash_bytes"),
                    outputBytes: try bytes(p.pointee.output_bytes, "\(path).profile.output_bytes"),
                    paramBytes: try bytes(p.pointee.param_bytes, "\(path).profile.param_bytes"))
            } else if requireProfiles || kind == nil {
                throw VPipeError.invalidField(field: "\(path).profile", message: requireProfiles
                    ? "missing: every layer needs a profile to be planned"
                    : "missing: a layer without a kind needs a profile")
            } else {
                profile = LayerProfile(fwdSeconds: 0, bwdSeconds: 0, stashBytes: 0, outputBytes: 0, paramBytes: 0)
            }
            layers.append(LayerSpec(name: string(spec.pointee.name), profile: profile, kind: kind))
        }
        return ModelSpec(name: string(m.pointee.name), layers: layers,
                         inputBytes: try bytes(m.pointee.input_bytes, "model.input_bytes"),
                         stateBytesPerParamByte: m.pointee.state_bytes_per_param_byte)
    }

    /// The layer's `oneof kind`, range-checked (widths up to 65536, vocabularies up to 2^24
    /// so that token ids are exact in float32).
    static func layerKind(_ spec: UnsafeMutablePointer<Vpipe__LayerSpec>, path: String) throws -> LayerKind? {
        func dim(_ v: UInt32, _ field: String, max: Int = 65536) throws -> Int {
            guard v >= 1 && Int(v) <= max else {
                throw VPipeError.invalidField(field: "\(path).\(field)", message: "must be between 1 and \(max), got \(v)")
            }
            return Int(v)
        }
        switch spec.pointee.kind_case {
        case VPIPE__LAYER_SPEC__KIND_LINEAR:
            guard let c = spec.pointee.linear else { return nil }
            return .linear(inFeatures: try dim(c.pointee.in_features, "linear.in_features"),
                           outFeatures: try dim(c.pointee.out_features, "linear.out_features"))
        case VPIPE__LAYER_SPEC__KIND_ACTIVATION:
            guard let c = spec.pointee.activation else { return nil }
            let raw = Int(c.pointee.kind.rawValue)
            guard let a = LayerKind.Activation(rawValue: raw) else {
                throw VPipeError.invalidField(field: "\(path).activation.kind", message: "expected ACTIVATION_RELU (1) or ACTIVATION_GELU (2), got \(raw)")
            }
            return .activation(a)
        case VPIPE__LAYER_SPEC__KIND_LAYER_NORM:
            guard let c = spec.pointee.layer_norm else { return nil }
            return .layerNorm(features: try dim(c.pointee.features, "layer_norm.features"))
        case VPIPE__LAYER_SPEC__KIND_EMBEDDING:
            guard let c = spec.pointee.embedding else { return nil }
            return .embedding(vocabulary: try dim(c.pointee.vocabulary, "embedding.vocabulary", max: 1 << 24),
                              features: try dim(c.pointee.features, "embedding.features"),
                              sequenceLength: Int(min(c.pointee.sequence_length, 1 << 20)))
        case VPIPE__LAYER_SPEC__KIND_TRANSFORMER_BLOCK:
            guard let c = spec.pointee.transformer_block else { return nil }
            let features = try dim(c.pointee.features, "transformer_block.features")
            let heads = try dim(c.pointee.heads, "transformer_block.heads", max: 1024)
            guard features % heads == 0 else {
                throw VPipeError.invalidField(field: "\(path).transformer_block.heads", message: "\(heads) heads do not divide \(features) features")
            }
            let ratio = c.pointee.mlp_ratio == 0 ? 4 : try dim(c.pointee.mlp_ratio, "transformer_block.mlp_ratio", max: 64)
            return .transformerBlock(features: features, heads: heads,
                                     sequenceLength: try dim(c.pointee.sequence_length, "transformer_block.sequence_length", max: 1 << 20),
                                     mlpRatio: ratio)
        case VPIPE__LAYER_SPEC__KIND_SOFTMAX_CROSS_ENTROPY:
            return .softmaxCrossEntropy
        case VPIPE__LAYER_SPEC__KIND_EXTERNAL:
            guard let c = spec.pointee.external else { return nil }
            let callback = string(c.pointee.callback)
            guard !callback.isEmpty else {
                throw VPipeError.invalidField(field: "\(path).external.callback", message: "must name a registered callback")
            }
            return .external(callback: callback, inFeatures: try dim(c.pointee.in_features, "external.in_features", max: 1 << 20),
                             outFeatures: try dim(c.pointee.out_features, "external.out_features", max: 1 << 20))
        case VPIPE__LAYER_SPEC__KIND_CHOICE_BLOCK:
            guard let c = spec.pointee.choice_block else { return nil }
            let features = try dim(c.pointee.features, "choice_block.features")
            guard c.pointee.n_hidden_options >= 1 && c.pointee.n_hidden_options <= 64 else {
                throw VPipeError.invalidField(field: "\(path).choice_block.hidden_options", message: "needs between 1 and 64 options, got \(c.pointee.n_hidden_options)")
            }
            var options: [Int] = []
            for k in 0..<c.pointee.n_hidden_options {
                options.append(try dim(c.pointee.hidden_options[k], "choice_block.hidden_options[\(k)]"))
            }
            let every = c.pointee.switch_every == 0 ? 1 : Int(min(c.pointee.switch_every, 1 << 30))
            return .choiceBlock(features: features, hiddenOptions: options, switchEvery: every)
        default:
            return nil
        }
    }

    static func clusterSpec(_ c: UnsafeMutablePointer<Vpipe__ClusterSpec>) throws -> ClusterSpec {
        var devices: [DeviceSpec] = []
        for (i, d) in try repeated(c.pointee.devices, c.pointee.n_devices, field: "cluster.devices").enumerated() {
            let path = "cluster.devices[\(i)]"
            var allowed: Set<MemoryPolicy> = []
            for j in 0..<d.pointee.n_allowed_policies {
                let raw = Int(d.pointee.allowed_policies[j].rawValue)
                guard let policy = MemoryPolicy(rawValue: raw) else {
                    throw VPipeError.invalidField(field: "\(path).allowed_policies[\(j)]",
                                                  message: "expected MEMORY_POLICY_KEEP, _SWAP or _RECOMPUTE, got \(raw)")
                }
                allowed.insert(policy)
            }
            devices.append(DeviceSpec(
                name: string(d.pointee.name),
                memoryBytes: try bytes(d.pointee.memory_bytes, "\(path).memory_bytes"),
                speed: d.pointee.speed, hostBandwidth: d.pointee.host_bandwidth,
                reservedBytes: try bytes(d.pointee.reserved_bytes, "\(path).reserved_bytes"),
                allowedPolicies: allowed))
        }
        let links = try repeated(c.pointee.links, c.pointee.n_links, field: "cluster.links").map {
            LinkSpec(bandwidth: $0.pointee.bandwidth, latency: $0.pointee.latency)
        }
        return ClusterSpec(devices: devices, links: links)
    }

    static func planOptions(_ o: UnsafeMutablePointer<Vpipe__PlanOptions>, field: String) throws -> PlanOptions {
        let scheduleRaw = Int(o.pointee.schedule.rawValue)
        let schedule = scheduleRaw == 0 ? Schedule.oneFOneB : try scheduleValue(scheduleRaw, field: "\(field).schedule")
        let plannerRaw = Int(o.pointee.planner.rawValue)
        let planner = plannerRaw == 0 ? PlannerKind.vpipe : try plannerValue(plannerRaw, field: "\(field).planner")
        let version = Int(o.pointee.cost_model_version)
        if version != 0 && version != CostModel.version {
            throw VPipeError.invalidField(field: "\(field).cost_model_version",
                                          message: "this library implements cost model version \(CostModel.version) (0 means the latest), got \(version)")
        }
        let objectiveRaw = Int(o.pointee.objective.rawValue)
        guard let objective = objectiveRaw == 0 ? .iterationTime : PlanObjective(rawValue: objectiveRaw) else {
            throw VPipeError.invalidField(field: "\(field).objective",
                                          message: "expected OBJECTIVE_ITERATION_TIME (1) or OBJECTIVE_THROUGHPUT (2), got \(objectiveRaw)")
        }
        return PlanOptions(schedule: schedule, microBatches: Int(o.pointee.micro_batches), planner: planner, objective: objective)
    }

    // MARK: - scalars

    static func scheduleValue(_ raw: Int, field: String) throws -> Schedule {
        guard let s = Schedule(rawValue: raw) else {
            throw VPipeError.invalidField(field: field, message: "expected SCHEDULE_GPIPE (1), SCHEDULE_1F1B (2) or SCHEDULE_PIPEDREAM_ASYNC (3), got \(raw)")
        }
        return s
    }

    static func plannerValue(_ raw: Int, field: String) throws -> PlannerKind {
        guard let p = PlannerKind(rawValue: raw) else {
            throw VPipeError.invalidField(field: field, message: "expected a Planner between PLANNER_VPIPE (1) and PLANNER_PIPEDREAM (7), got \(raw)")
        }
        return p
    }

    static func bytes(_ v: UInt64, _ field: String) throws -> Int {
        guard v <= UInt64(Validation.maxBytes) else {
            throw VPipeError.invalidField(field: field, message: "must be at most 2^53 bytes, got \(v)")
        }
        return Int(v)
    }

    static func string(_ p: UnsafeMutablePointer<CChar>?) -> String {
        guard let p else { return "" }
        return String(cString: p)
    }

    /// The elements of a protobuf-c repeated message field; a NULL element (impossible from
    /// the unpacker, possible from a hand-built struct) is an error, not a crash.
    static func repeated<T>(_ items: UnsafeMutablePointer<UnsafeMutablePointer<T>?>?, _ count: Int, field: @autoclosure () -> String) throws
        -> [UnsafeMutablePointer<T>]
    {
        guard count > 0 else { return [] }
        guard let items else { throw VPipeError.invalidField(field: field(), message: "\(count) elements announced but none present") }
        var out: [UnsafeMutablePointer<T>] = []
        out.reserveCapacity(count)
        for i in 0..<count {
            guard let item = items[i] else { throw VPipeError.invalidField(field: "\(field())[\(i)]", message: "element is NULL") }
            out.append(item)
        }
        return out
    }

    /// Unpacks `bytes` as a message, refuses a string field the C struct would misrepresent
    /// (`WireStrings`), hands it to `body`, and frees it whatever happens.
    static func unpack<M, R>(
        _ bytes: UnsafeRawBufferPointer, type: String,
        unpack: (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?) -> UnsafeMutablePointer<M>?,
        free: (UnsafeMutablePointer<M>?, UnsafeMutablePointer<ProtobufCAllocator>?) -> Void,
        body: (UnsafeMutablePointer<M>) throws -> R
    ) throws -> R {
        let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
        guard let message = unpack(nil, bytes.count, base) else {
            throw WireError.malformed("\(bytes.count) bytes are not a valid \(type) (truncated, corrupted or another message type)")
        }
        defer { free(message, nil) }
        // Every protobuf-c message starts with its ProtobufCMessage header, whose descriptor
        // lets the string check find every string field of the message tree.
        if let descriptor = UnsafeRawPointer(message).load(as: ProtobufCMessage.self).descriptor {
            try WireStrings.check(bytes, descriptor: descriptor)
        }
        return try body(message)
    }
}

/// Failures of the byte layer itself (the C ABI maps them to VP_ERR_DECODE).
public enum WireError: Error, Equatable, CustomStringConvertible {
    case malformed(String)

    public var description: String {
        switch self {
        case let .malformed(message): return message
        }
    }
}
