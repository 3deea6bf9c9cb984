import VPipeCore

/// Everything a checkpoint says besides the tensor bytes: the Swift mirror of the protobuf
/// message `vpipe.Checkpoint` (proto/vpipe.proto). The runtime knows no protobuf; the wire
/// layer supplies a `CheckpointCodec` that turns this into bytes and back.
public struct CheckpointMetadata: Sendable, Equatable {
    /// One tensor in the file's blob section.
    public struct Blob: Sendable, Equatable {
        public var shape: [Int]
        /// Bytes from the start of the file.
        public var offset: Int
        public var bytes: Int
        public var crc32: UInt32
        public init(shape: [Int], offset: Int, bytes: Int, crc32: UInt32) {
            self.shape = shape
            self.offset = offset
            self.bytes = bytes
            self.crc32 = crc32
        }
    }

    /// A model layer, by its index in the model.
    public struct Layer: Sendable, Equatable {
        public var index: Int
        public var name: String
        /// `LayerKind` in words, e.g. `linear(4, 8)`: a checkpoint of another model is refused.
        public var kind: String
        public var parameters: [Blob]
        /// `statePerParameter` tensors per parameter, parameter by parameter.
        public var optimizerState: [Blob]
        public var statePerParameter: Int
        /// PIPEDREAM_ASYNC: the update count of the stage that held the layer.
        public var weightVersion: Int
        public init(index: Int, name: String, kind: String, parameters: [Blob], optimizerState: [Blob], statePerParameter: Int, weightVersion: Int) {
            self.index = index
            self.name = name
            self.kind = kind
            self.parameters = parameters
            self.optimizerState = optimizerState
            self.statePerParameter = statePerParameter
            self.weightVersion = weightVersion
        }
    }

    /// The online profiler's and the re-planner's measurements, and the session's counters.
    public struct Profiler: Sendable, Equatable {
        public var profiling = false
        public var profiledIterations = 0
        public var profileSums: [LayerProfile] = []
        public var windowIterations = 0
        public var windowForwardSeconds: [Double] = []
        public var windowBackwardSeconds: [Double] = []
        public var windowIterationSeconds: [Double] = []
        public var stageSpeed: [Double] = []
        /// 0: not measured yet.
        public var calibrationBaseline = 0.0
        public var workspaceBytes = 0
        public var rowsPerMicroBatch = 0
        public var iterations = 0
        public var totalSeconds = 0.0
        public var lastLoss: Float = .nan
        /// Online re-planning's hold on recent moves (`MigrationHysteresis.saved`); its stage
        /// numbers are `plan`'s.
        public var hysteresisWindows = 0
        public var hysteresisMoves: [MigrationHysteresis.SavedMove] = []
        public init() {}
    }

    /// One rank's shard, listed by the manifest (TRANSPORT_MPI).
    public struct Shard: Sendable, Equatable {
        /// A file name in the manifest's directory.
        public var file: String
        public var rank: Int
        public var layers: [Int]
        public var bytes: Int
        public var metadataCRC: UInt32
        public init(file: String, rank: Int, layers: [Int], bytes: Int, metadataCRC: UInt32) {
            self.file = file
            self.rank = rank
            self.layers = layers
            self.bytes = bytes
            self.metadataCRC = metadataCRC
        }
    }

    public var formatVersion = CheckpointFormat.version
    public var modelName = ""
    public var layerCount = 0
    /// Pipeline iterations run (a choice block's active option; the host's data position).
    public var iteration = 0
    /// Flushes that applied the optimizer (Adam's t under the flushing schedules).
    public var optimizerSteps = 0
    public var seed: UInt64 = 0
    public var schedule: Schedule = .oneFOneB
    public var microBatches = 1
    /// "sgd", "sgd+momentum" or "adam".
    public var optimizer = ""
    /// The plan in force when the checkpoint was taken.
    public var plan = PlanLayout(ranges: [], policies: [])
    public var profiler = Profiler()
    /// In-process: every layer; an MPI shard: its rank's; a manifest: none.
    public var layers: [Layer] = []
    /// A manifest: every rank's shard.
    public var shards: [Shard] = []
    public var worldSize = 1
    /// A migration requested or decided and not started yet (it starts at the next step),
    /// and who asked for it ("host", "online").
    public var pendingPlan: PlanLayout?
    public var pendingSource = ""

    public init() {}
}

/// Turns `CheckpointMetadata` into bytes and back (protobuf `vpipe.Checkpoint`, supplied by
/// the wire layer, as `PlanCodec` is for plans).
public struct CheckpointCodec: Sendable {
    public var encode: @Sendable (CheckpointMetadata) -> [UInt8]
    public var decode: @Sendable (UnsafeRawBufferPointer) throws -> CheckpointMetadata
    public init(encode: @escaping @Sendable (CheckpointMetadata) -> [UInt8],
                decode: @escaping @Sendable (UnsafeRawBufferPointer) throws -> CheckpointMetadata) {
        self.encode = encode
        self.decode = decode
    }
}

extension LayerKind {
    /// The kind in words, as stored in checkpoints and named in their mismatch errors.
    public var checkpointName: String {
        switch self {
        case let .linear(i, o): return "linear(\(i), \(o))"
        case let .activation(f): return "activation(\(f))"
        case let .layerNorm(f): return "layer_norm(\(f))"
        case let .embedding(v, f, s): return "embedding(\(v), \(f), \(s))"
        case let .transformerBlock(f, h, s, r): return "transformer_block(\(f), \(h), \(s), \(r))"
        case .softmaxCrossEntropy: return "softmax_cross_entropy"
        case let .choiceBlock(f, options, every): return "choice_block(\(f), \(options), \(every))"
        case let .external(callback, i, o): return "external(\"\(callback)\", \(i), \(o))"
        }
    }
}
