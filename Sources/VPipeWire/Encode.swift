import CVPipeProto
import VPipeCore

/// Encoding: Swift values -> protobuf-c structs (in a `CArena`) -> protobuf bytes.
public enum WireEncode {
    public static func plan(_ plan: Plan) -> [UInt8] {
        let arena = CArena()
        let message = fill(plan, arena)
        return pack(message, size: vpipe__plan__get_packed_size, pack: vpipe__plan__pack)
    }

    public static func evaluation(_ plan: Plan, feasible: Bool, violations: [String]) -> [UInt8] {
        let arena = CArena()
        let message = arena.allocate(Vpipe__Evaluation.self, count: 1)
        vpipe__evaluation__init(message)
        message.pointee.plan = fill(plan, arena)
        message.pointee.feasible = feasible ? 1 : 0
        message.pointee.n_violations = violations.count
        let lines = arena.allocate(UnsafeMutablePointer<CChar>?.self, count: violations.count)
        for (i, v) in violations.enumerated() { lines[i] = arena.string(v) }
        message.pointee.violations = lines
        return pack(message, size: vpipe__evaluation__get_packed_size, pack: vpipe__evaluation__pack)
    }

    public static func planRequest(_ request: PlanRequest) -> [UInt8] {
        let arena = CArena()
        let message = arena.allocate(Vpipe__PlanRequest.self, count: 1)
        vpipe__plan_request__init(message)
        message.pointee.model = fill(request.model, arena)
        message.pointee.cluster = fill(request.cluster, arena)
        let options = arena.allocate(Vpipe__PlanOptions.self, count: 1)
        vpipe__plan_options__init(options)
        options.pointee.schedule = Vpipe__Schedule(rawValue: .init(request.options.schedule.rawValue))
        options.pointee.micro_batches = UInt32(clamping: request.options.microBatches)
        options.pointee.planner = Vpipe__Planner(rawValue: .init(request.options.planner.rawValue))
        options.pointee.objective = Vpipe__Objective(rawValue: .init(request.options.objective.rawValue))
        message.pointee.options = options
        return pack(message, size: vpipe__plan_request__get_packed_size, pack: vpipe__plan_request__pack)
    }

    /// An EvaluationRequest for `layout` (tests and tools that check plans).
    public static func evaluationRequest(model: ModelSpec, cluster: ClusterSpec, plan: Plan) -> [UInt8] {
        let arena = CArena()
        let message = arena.allocate(Vpipe__EvaluationRequest.self, count: 1)
        vpipe__evaluation_request__init(message)
        message.pointee.model = fill(model, arena)
        message.pointee.cluster = fill(cluster, arena)
        message.pointee.plan = fill(plan, arena)
        return pack(message, size: vpipe__evaluation_request__get_packed_size, pack: vpipe__evaluation_request__pack)
    }

    // MARK: - messages

    static func fill(_ plan: Plan, _ arena: CArena) -> UnsafeMutablePointer<Vpipe__Plan> {
        let message = arena.allocate(Vpipe__Plan.self, count: 1)
        vpipe__plan__init(message)
        let stages = arena.allocate(UnsafeMutablePointer<Vpipe__StagePlan>?.self, count: plan.stages.count)
        for (i, s) in plan.stages.enumerated() {
            let sp = arena.allocate(Vpipe__StagePlan.self, count: 1)
            vpipe__stage_plan__init(sp)
            sp.pointee.device = UInt32(clamping: s.device)
            sp.pointee.first_layer = UInt32(clamping: s.layers.lowerBound)
            sp.pointee.last_layer = UInt32(clamping: s.layers.upperBound - 1)
            let policies = arena.allocate(Vpipe__MemoryPolicy.self, count: s.policies.count)
            for (j, p) in s.policies.enumerated() { policies[j] = Vpipe__MemoryPolicy(rawValue: .init(p.rawValue)) }
            sp.pointee.n_policy = s.policies.count
            sp.pointee.policy = policies
            sp.pointee.compute_seconds = s.computeSeconds
            sp.pointee.swap_seconds = s.swapSeconds
            sp.pointee.stage_seconds = s.stageSeconds
            sp.pointee.link_seconds = s.linkSeconds
            sp.pointee.peak_memory_bytes = saturatingUInt64(s.peakMemoryBytes)
            sp.pointee.memory_bytes = UInt64(s.memoryBytes)
            stages[i] = sp
        }
        message.pointee.n_stages = plan.stages.count
        message.pointee.stages = stages
        message.pointee.schedule = Vpipe__Schedule(rawValue: .init(plan.schedule.rawValue))
        message.pointee.micro_batches = UInt32(clamping: plan.microBatches)
        message.pointee.bottleneck_seconds = plan.bottleneckSeconds
        message.pointee.iteration_seconds = plan.iterationSeconds
        message.pointee.cost_model_version = UInt32(clamping: plan.costModelVersion)
        message.pointee.planner = Vpipe__Planner(rawValue: .init(plan.planner?.rawValue ?? 0))
        message.pointee.planning_seconds = plan.planningSeconds
        message.pointee.lower_bound_seconds = plan.lowerBoundSeconds
        message.pointee.proven_optimal = plan.provenOptimal ? 1 : 0
        message.pointee.objective = Vpipe__Objective(rawValue: .init(plan.objective?.rawValue ?? 0))
        return message
    }

    static func fill(_ model: ModelSpec, _ arena: CArena) -> UnsafeMutablePointer<Vpipe__ModelSpec> {
        let message = arena.allocate(Vpipe__ModelSpec.self, count: 1)
        vpipe__model_spec__init(message)
        message.pointee.name = arena.string(model.name)
        let layers = arena.allocate(UnsafeMutablePointer<Vpipe__LayerSpec>?.self, count: model.layers.count)
        for (l, layer) in model.layers.enumerated() {
            let spec = arena.allocate(Vpipe__LayerSpec.self, count: 1)
            vpipe__layer_spec__init(spec)
            spec.pointee.name = arena.string(layer.name)
            spec.pointee.profile = fill(layer.profile, arena)
            fillKind(layer.kind, spec, arena)
            layers[l] = spec
        }
        message.pointee.n_layers = model.layers.count
        message.pointee.layers = layers
        message.pointee.input_bytes = UInt64(clamping: model.inputBytes)
        message.pointee.state_bytes_per_param_byte = model.stateBytesPerParamByte
        return message
    }

    static func fill(_ cluster: ClusterSpec, _ arena: CArena) -> UnsafeMutablePointer<Vpipe__ClusterSpec> {
        let message = arena.allocate(Vpipe__ClusterSpec.self, count: 1)
        vpipe__cluster_spec__init(message)
        let devices = arena.allocate(UnsafeMutablePointer<Vpipe__DeviceSpec>?.self, count: cluster.devices.count)
        for (i, d) in cluster.devices.enumerated() {
            let spec = arena.allocate(Vpipe__DeviceSpec.self, count: 1)
            vpipe__device_spec__init(spec)
            spec.pointee.name = arena.string(d.name)
            spec.pointee.memory_bytes = UInt64(clamping: d.memoryBytes)
            spec.pointee.speed = d.speed
            spec.pointee.host_bandwidth = d.hostBandwidth
            spec.pointee.reserved_bytes = UInt64(clamping: d.reservedBytes)
            let allowed = d.allowedPolicies.sorted { $0.rawValue < $1.rawValue }
            let policies = arena.allocate(Vpipe__MemoryPolicy.self, count: allowed.count)
            for (j, p) in allowed.enumerated() { policies[j] = Vpipe__MemoryPolicy(rawValue: UInt32(p.rawValue)) }
            spec.pointee.n_allowed_policies = allowed.count
            spec.pointee.allowed_policies = policies
            devices[i] = spec
        }
        message.pointee.n_devices = cluster.devices.count
        message.pointee.devices = devices
        let links = arena.allocate(UnsafeMutablePointer<Vpipe__LinkSpec>?.self, count: cluster.links.count)
        for (i, link) in cluster.links.enumerated() {
            let spec = arena.allocate(Vpipe__LinkSpec.self, count: 1)
            vpipe__link_spec__init(spec)
            spec.pointee.bandwidth = link.bandwidth
            spec.pointee.latency = link.latency
            links[i] = spec
        }
        message.pointee.n_links = cluster.links.count
        message.pointee.links = links
        return message
    }

    static func fill(_ p: LayerProfile, _ arena: CArena) -> UnsafeMutablePointer<Vpipe__LayerProfile> {
        let m = arena.allocate(Vpipe__LayerProfile.self, count: 1)
        vpipe__layer_profile__init(m)
        m.pointee.fwd_seconds = p.fwdSeconds
        m.pointee.bwd_seconds = p.bwdSeconds
        m.pointee.stash_bytes = UInt64(clamping: p.stashBytes)
        m.pointee.output_bytes = UInt64(clamping: p.outputBytes)
        m.pointee.param_bytes = UInt64(clamping: p.paramBytes)
        return m
    }

    static func fillKind(_ kind: LayerKind?, _ spec: UnsafeMutablePointer<Vpipe__LayerSpec>, _ arena: CArena) {
        guard let kind else { return }
        switch kind {
        case let .linear(i, o):
            let c = arena.allocate(Vpipe__Linear.self, count: 1)
            vpipe__linear__init(c)
            c.pointee.in_features = UInt32(clamping: i)
            c.pointee.out_features = UInt32(clamping: o)
            spec.pointee.kind_case = VPIPE__LAYER_SPEC__KIND_LINEAR
            spec.pointee.linear = c
        case let .activation(a):
            let c = arena.allocate(Vpipe__Activation.self, count: 1)
            vpipe__activation__init(c)
            c.pointee.kind = Vpipe__ActivationKind(rawValue: .init(a.rawValue))
            spec.pointee.kind_case = VPIPE__LAYER_SPEC__KIND_ACTIVATION
            spec.pointee.activation = c
        case let .layerNorm(f):
            let c = arena.allocate(Vpipe__LayerNorm.self, count: 1)
            vpipe__layer_norm__init(c)
            c.pointee.features = UInt32(clamping: f)
            spec.pointee.kind_case = VPIPE__LAYER_SPEC__KIND_LAYER_NORM
            spec.pointee.layer_norm = c
        case let .embedding(v, f, t):
            let c = arena.allocate(Vpipe__Embedding.self, count: 1)
            vpipe__embedding__init(c)
            c.pointee.vocabulary = UInt32(clamping: v)
            c.pointee.features = UInt32(clamping: f)
            c.pointee.sequence_length = UInt32(clamping: t)
            spec.pointee.kind_case = VPIPE__LAYER_SPEC__KIND_EMBEDDING
            spec.pointee.embedding = c
        case let .transformerBlock(f, h, t, r):
            let c = arena.allocate(Vpipe__TransformerBlock.self, count: 1)
            vpipe__transformer_block__init(c)
            c.pointee.features = UInt32(clamping: f)
            c.pointee.heads = UInt32(clamping: h)
            c.pointee.sequence_length = UInt32(clamping: t)
            c.pointee.mlp_ratio = UInt32(clamping: r)
            spec.pointee.kind_case = VPIPE__LAYER_SPEC__KIND_TRANSFORMER_BLOCK
            spec.pointee.transformer_block = c
        case .softmaxCrossEntropy:
            let c = arena.allocate(Vpipe__SoftmaxCrossEntropy.self, count: 1)
            vpipe__softmax_cross_entropy__init(c)
            spec.pointee.kind_case = VPIPE__LAYER_SPEC__KIND_SOFTMAX_CROSS_ENTROPY
            spec.pointee.softmax_cross_entropy = c
        case let .external(callback, i, o):
            let c = arena.allocate(Vpipe__External.self, count: 1)
            vpipe__external__init(c)
            c.pointee.callback = arena.string(callback)
            c.pointee.in_features = UInt32(clamping: i)
            c.pointee.out_features = UInt32(clamping: o)
            spec.pointee.kind_case = VPIPE__LAYER_SPEC__KIND_EXTERNAL
            spec.pointee.external = c
        case let .choiceBlock(f, options, every):
            let c = arena.allocate(Vpipe__ChoiceBlock.self, count: 1)
            vpipe__choice_block__init(c)
            c.pointee.features = UInt32(clamping: f)
            let list = arena.allocate(UInt32.self, count: options.count)
            for (k, h) in options.enumerated() { list[k] = UInt32(clamping: h) }
            c.pointee.n_hidden_options = options.count
            c.pointee.hidden_options = list
            c.pointee.switch_every = UInt32(clamping: every)
            spec.pointee.kind_case = VPIPE__LAYER_SPEC__KIND_CHOICE_BLOCK
            spec.pointee.choice_block = c
        }
    }

    // MARK: - helpers

    static func pack<M>(_ message: UnsafeMutablePointer<M>, size: (UnsafePointer<M>?) -> Int,
                        pack: (UnsafePointer<M>?, UnsafeMutablePointer<UInt8>?) -> Int) -> [UInt8] {
        let n = size(message)
        return [UInt8](unsafeUninitializedCapacity: max(n, 1)) { buffer, count in
            count = pack(message, buffer.baseAddress)
        }
    }

    /// Mem_i is already whole bytes (`CostModel.wholeBytes`); the wire carries uint64.
    /// Saturates instead of trapping on values no real plan has.
    static func saturatingUInt64(_ v: Double) -> UInt64 {
        guard v.isFinite, v > 0 else { return 0 }
        let r = v.rounded()
        return r >= 18_446_744_073_709_551_615.0 ? UInt64.max : UInt64(r)
    }
}
