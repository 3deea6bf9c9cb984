import VPipeCore

/// Everything a training session is opened with.
public struct SessionConfig: Sendable {
    public var model: ModelSpec
    public var cluster: ClusterSpec
    /// The plan to run; nil: profile `training.profileIterations` steps on one stage, then
    /// plan (with a transport that spans processes: rank 0 plans with the model's profiles).
    public var plan: PlanLayout?
    public var training: TrainingOptions
    /// Checkpoint metadata as bytes (protobuf vpipe.Checkpoint, from the wire layer).
    public var checkpointCodec: CheckpointCodec?

    public init(model: ModelSpec, cluster: ClusterSpec, plan: PlanLayout?, training: TrainingOptions, checkpointCodec: CheckpointCodec? = nil) {
        self.model = model
        self.cluster = cluster
        self.plan = plan
        self.training = training
        self.checkpointCodec = checkpointCodec
    }

    /// What a session needs beyond a valid model and cluster: layers it can build, the loss
    /// last, widths that chain, injected failures on stages that exist. Caught at open,
    /// naming the field, rather than at the first step.
    func check() throws {
        try Validation.validate(model)
        try Validation.validate(cluster)
        try training.check()
        for (l, layer) in model.layers.enumerated() where layer.kind == nil {
            throw VPipeError.invalidField(field: "model.layers[\(l)]", message: "has no kind (linear, activation, ...): a session can only train layers it can build")
        }
        if let kind = model.layers.last?.kind, kind != .softmaxCrossEntropy {
            throw VPipeError.invalidField(field: "model.layers[\(model.layers.count - 1)]", message: "the last layer must be softmax_cross_entropy (the loss)")
        }
        try checkWidths()
        let stageCount = plan?.ranges.count ?? cluster.devices.count
        if let f = training.failure, f.stage >= stageCount || f.microBatch >= training.microBatches {
            throw VPipeError.invalidField(field: "training.fail_stage", message: "stage \(f.stage), micro-batch \(f.microBatch) does not exist (\(stageCount) stages, \(training.microBatches) micro-batches)")
        }
        if let s = training.effectiveSlowdown, s.stage >= stageCount {
            throw VPipeError.invalidField(field: "training.slowdown_stage", message: "stage \(s.stage) does not exist (\(stageCount) stages)")
        }
        if training.scheduleText != nil && plan == nil {
            throw VPipeError.invalidField(field: "plan", message: "missing: training.schedule_text is written for a placement, so the session needs the plan it was written for")
        }
    }

    /// Each layer's input width must be the previous layer's output width, and the loss
    /// comes last only.
    private func checkWidths() throws {
        var width: Int?
        for (l, layer) in model.layers.enumerated() {
            guard let kind = layer.kind else { continue }
            let (input, output): (Int?, Int?)
            switch kind {
            case let .linear(i, o): (input, output) = (i, o)
            case .activation: (input, output) = (width, width)
            case let .layerNorm(f): (input, output) = (f, f)
            case let .embedding(_, f, _): (input, output) = (l == 0 ? nil : 1, f)
            case let .transformerBlock(f, _, _, _): (input, output) = (f, f)
            case let .choiceBlock(f, _, _): (input, output) = (f, f)
            case let .external(_, i, o): (input, output) = (i, o)
            case .softmaxCrossEntropy:
                if l != model.layers.count - 1 {
                    throw VPipeError.invalidField(field: "model.layers[\(l)]", message: "softmax_cross_entropy must be the last layer (it is layer \(l) of \(model.layers.count))")
                }
                (input, output) = (width, nil)
            }
            if let input, let width, input != width {
                throw VPipeError.invalidField(field: "model.layers[\(l)]", message: "expects \(input) input features but the previous layer gives \(width)")
            }
            width = output
        }
    }
}

/// Measured numbers of a session, for `vp_session_stats`.
public struct SessionStatistics: Sendable {
    public struct StageStatistics: Sendable {
        public var stage: Int
        public var layers: Range<Int>
        public var peakDeviceBytes: Int
        public var capacityBytes: Int
        public var predictedPeakBytes: Double
        public var computeSeconds: Double
        public var stageSecondsPerMicroBatch: Double
        public var swappedBytes: Int
        public var recomputedLayers: Int
    }

    public var iterations: Int
    public var lastIterationSeconds: Double
    public var meanIterationSeconds: Double
    public var lastLoss: Float
    public var stages: [StageStatistics]
    public var measuredProfiles: [LayerProfile]
    public var plan: Plan?
    public var decisions: [MigrationDecision]
}
