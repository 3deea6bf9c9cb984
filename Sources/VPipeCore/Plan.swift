/// The pipeline schedule a plan is made for. Determines n_i and v_i of the cost model.
public enum Schedule: Int, Sendable, CaseIterable {
    /// All forwards, then all backwards, then a flush.
    case gpipe = 1
    /// PipeDream-Flush: one forward, one backward, then a flush.
    case oneFOneB = 2
    /// 1F1B with weight stashing and no flush.
    case pipedreamAsync = 3

    public var name: String {
        switch self {
        case .gpipe: return "GPIPE"
        case .oneFOneB: return "1F1B"
        case .pipedreamAsync: return "PIPEDREAM_ASYNC"
        }
    }
}

/// Where a layer's stash lives between its forward and its backward.
public enum MemoryPolicy: Int, Sendable, CaseIterable {
    case keep = 1
    case swap = 2
    case recompute = 3

    /// One letter per policy, for compact listings: K, S, R.
    public var letter: Character {
        switch self {
        case .keep: return "K"
        case .swap: return "S"
        case .recompute: return "R"
        }
    }
}

/// Which algorithm chooses the partition and the policies.
public enum PlannerKind: Int, Sendable, CaseIterable {
    case vpipe = 1
    case exact = 2
    case uniform = 3
    case parameters = 4
    case timeBalanced = 5
    case gpipe = 6
    case pipedream = 7

    public var name: String {
        switch self {
        case .vpipe: return "VPIPE"
        case .exact: return "EXACT"
        case .uniform: return "UNIFORM"
        case .parameters: return "PARAMETERS"
        case .timeBalanced: return "TIME_BALANCED"
        case .gpipe: return "GPIPE"
        case .pipedream: return "PIPEDREAM"
        }
    }
}

public struct PlanOptions: Sendable, Equatable {
    public var schedule: Schedule
    /// m ≥ 1.
    public var microBatches: Int
    public var planner: PlannerKind

    public init(schedule: Schedule = .oneFOneB, microBatches: Int, planner: PlannerKind = .vpipe) {
        self.schedule = schedule
        self.microBatches = microBatches
        self.planner = planner
    }
}

public struct PlanRequest: Sendable, Equatable {
    public var model: ModelSpec
    public var cluster: ClusterSpec
    public var options: PlanOptions

    public init(model: ModelSpec, cluster: ClusterSpec, options: PlanOptions) {
        self.model = model
        self.cluster = cluster
        self.options = options
    }
}

/// The decisions of a plan, without any derived number: which layers each stage owns and
/// each layer's memory policy. `CostModel.evaluate` turns it into a `Plan`.
public struct PlanLayout: Sendable, Equatable {
    /// stage i owns layers ranges[i] (non-empty, contiguous, covering 0..<L in order).
    public var ranges: [Range<Int>]
    /// One policy per layer of the model, indexed by layer.
    public var policies: [MemoryPolicy]

    public init(ranges: [Range<Int>], policies: [MemoryPolicy]) {
        self.ranges = ranges
        self.policies = policies
    }

    /// Stage ranges from the index of each stage's first layer, e.g. starts [0, 5, 9] of 12 layers.
    public init(stageStarts: [Int], layerCount: Int, policies: [MemoryPolicy]) {
        var ranges: [Range<Int>] = []
        for (i, s) in stageStarts.enumerated() {
            let e = i + 1 < stageStarts.count ? stageStarts[i + 1] : layerCount
            ranges.append(s..<e)
        }
        self.init(ranges: ranges, policies: policies)
    }
}

/// One stage of an evaluated plan, with the cost model's numbers.
public struct StagePlan: Sendable, Equatable {
    public var device: Int
    public var layers: Range<Int>
    public var policies: [MemoryPolicy]
    /// C_i
    public var computeSeconds: Double
    /// S_i
    public var swapSeconds: Double
    /// T_i = max(C_i, S_i)
    public var stageSeconds: Double
    /// K_i, the link to the next stage (0 for the last stage).
    public var linkSeconds: Double
    /// Mem_i
    public var peakMemoryBytes: Double
    /// M_i
    public var memoryBytes: Int

    public var fits: Bool { peakMemoryBytes <= Double(memoryBytes) }
}

/// An evaluated plan: the layout plus every number of cost model v1.
public struct Plan: Sendable, Equatable {
    public var stages: [StagePlan]
    public var schedule: Schedule
    public var microBatches: Int
    /// τ
    public var bottleneckSeconds: Double
    /// T_iter
    public var iterationSeconds: Double
    public var costModelVersion: Int
    public var planner: PlannerKind?
    public var planningSeconds: Double
    /// The planner's certificate: no feasible plan for the same request (same devices,
    /// schedule and m) has a T_iter below this. 0 on a plan that was only evaluated.
    public var lowerBoundSeconds: Double = 0
    /// The planner proved that no feasible plan has a smaller T_iter.
    public var provenOptimal: Bool = false

    /// How far above the proven lower bound T_iter may be (0 when proven optimal; nil
    /// without a bound).
    public var optimalityGap: Double? {
        lowerBoundSeconds > 0 ? max(0, iterationSeconds / lowerBoundSeconds - 1) : nil
    }

    public var layout: PlanLayout {
        PlanLayout(ranges: stages.map(\.layers), policies: stages.flatMap(\.policies))
    }

    public var isFeasible: Bool { stages.allSatisfy(\.fits) }
}
