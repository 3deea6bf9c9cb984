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

/// What the search planners (VPIPE, EXACT) minimise. The baselines are fixed algorithms and
/// ignore it (TIME_BALANCED, GPIPE and PIPEDREAM minimise the bottleneck by construction).
public enum PlanObjective: Int, Sendable, CaseIterable {
    /// Cost model v1's objective (docs/cost-model.md): the smallest T_iter = (m−1)·τ + Σ,
    /// the time of one flushed iteration.
    case iterationTime = 1
    /// The smallest bottleneck τ first, then the smallest T_iter among those plans: what
    /// PipeDream's optimizer and a pipeline without flushes (PIPEDREAM_ASYNC, or m large)
    /// optimise, since their steady state runs one micro-batch per τ.
    case throughput = 2

    public var name: String {
        switch self {
        case .iterationTime: return "ITERATION_TIME"
        case .throughput: return "THROUGHPUT"
        }
    }

    /// The key plans are ranked by under this objective, smaller is better.
    func key(bottleneck tau: Double, iteration: Double) -> (Double, Double) {
        switch self {
        case .iterationTime: return (iteration, tau)
        case .throughput: return (tau, iteration)
        }
    }

    /// Whether a plan with (τ, T_iter) = `a` ranks strictly before one with `b`, up to
    /// rounding (relative 1e-12 on each component).
    func prefers(_ a: (bottleneck: Double, iteration: Double), over b: (bottleneck: Double, iteration: Double)) -> Bool {
        let x = key(bottleneck: a.bottleneck, iteration: a.iteration), y = key(bottleneck: b.bottleneck, iteration: b.iteration)
        if x.0 < y.0 * (1 - 1e-12) { return true }
        if x.0 > y.0 * (1 + 1e-12) { return false }
        return x.1 < y.1 * (1 - 1e-12)
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
    /// What VPIPE and EXACT minimise (default: T_iter, cost model v1's objective).
    public var objective: PlanObjective

    public init(schedule: Schedule = .oneFOneB, microBatches: Int, planner: PlannerKind = .vpipe,
                objective: PlanObjective = .iterationTime) {
        self.schedule = schedule
        self.microBatches = microBatches
        self.planner = planner
        self.objective = objective
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
    /// The objective the planner was asked for (nil on a plan that was only evaluated).
    public var objective: PlanObjective?
    /// The planner's certificate: no feasible plan for the same request (same devices,
    /// schedule and m) has a T_iter below this, whatever the objective. 0 on a plan that was
    /// only evaluated.
    public var lowerBoundSeconds: Double = 0
    /// The planner proved this plan optimal for its objective: under ITERATION_TIME no
    /// feasible plan has a smaller T_iter (and lowerBoundSeconds = T_iter); under THROUGHPUT
    /// none has a smaller τ, nor the same τ and a smaller T_iter (lowerBoundSeconds stays the
    /// bound on any plan's T_iter, so the gap is what the lower τ costs in T_iter).
    public var provenOptimal: Bool = false

    /// How far above the proven lower bound T_iter may be (nil without a bound): 0 when
    /// proven optimal under ITERATION_TIME; under THROUGHPUT what the smallest τ costs.
    public var optimalityGap: Double? {
        lowerBoundSeconds > 0 ? max(0, iterationSeconds / lowerBoundSeconds - 1) : nil
    }

    public var layout: PlanLayout {
        PlanLayout(ranges: stages.map(\.layers), policies: stages.flatMap(\.policies))
    }

    public var isFeasible: Bool { stages.allSatisfy(\.fits) }
}
