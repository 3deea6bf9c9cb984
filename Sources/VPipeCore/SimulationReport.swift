/// What the simulator saw while playing one iteration of a schedule: the iteration time,
/// per-stage utilisation and memory, and every action as a timed event (the input of the
/// Chrome trace and SVG exporters).
public struct SimulationReport: Sendable, Equatable {
    /// A resource that runs one action at a time.
    public enum Resource: Sendable, Hashable {
        /// Stage i's compute stream (F, B, R; receives are waits on it).
        case compute(Int)
        /// Stage i's device<->host copy engine (SO, SI).
        case copy(Int)
        /// links[i], between stage i and i+1, shared by both directions.
        case link(Int)

        public var name: String {
            switch self {
            case let .compute(i): return "compute \(i)"
            case let .copy(i): return "copy \(i)"
            case let .link(i): return "link \(i)-\(i + 1)"
            }
        }
    }

    /// One action as it ran.
    public struct Event: Sendable, Equatable {
        public var action: ScheduleAction
        public var resource: Resource
        public var start: Double
        public var end: Double

        public init(action: ScheduleAction, resource: Resource, start: Double, end: Double) {
            self.action = action
            self.resource = resource
            self.start = start
            self.end = end
        }
    }

    /// Stage i's memory from `time` on, until the next point (a step series).
    public struct MemoryPoint: Sendable, Equatable {
        public var time: Double
        public var bytes: Double
    }

    public struct StageReport: Sendable, Equatable {
        /// Seconds the compute stream ran F, B or R.
        public var busySeconds: Double
        /// iteration − busy.
        public var idleSeconds: Double
        /// The idle time spent waiting for the pipeline: for a neighbour's activation or
        /// gradient, during fill and drain.
        public var bubbleSeconds: Double
        /// The idle time spent waiting for the stage's own swap-in (a swap that did not hide).
        public var swapStallSeconds: Double
        public var busyFraction: Double
        public var idleFraction: Double
        public var bubbleFraction: Double
        /// The most bytes the stage held at once: static (weights, optimizer state, stashed
        /// weight versions, send/receive buffers, reserve) plus in-flight stashes.
        public var peakMemoryBytes: Double
        /// The static part alone (what the stage holds with no micro-batch in flight).
        public var staticBytes: Double
        /// M_i, for reading the series against.
        public var memoryBytes: Int
        /// The step series of the stage's bytes, starting at time 0 (after the actions that
        /// start at 0 have allocated); one point per change.
        public var memory: [MemoryPoint]

        public init(busySeconds: Double, idleSeconds: Double, bubbleSeconds: Double, swapStallSeconds: Double,
                    busyFraction: Double, idleFraction: Double, bubbleFraction: Double, peakMemoryBytes: Double,
                    staticBytes: Double, memoryBytes: Int, memory: [MemoryPoint]) {
            self.busySeconds = busySeconds
            self.idleSeconds = idleSeconds
            self.bubbleSeconds = bubbleSeconds
            self.swapStallSeconds = swapStallSeconds
            self.busyFraction = busyFraction
            self.idleFraction = idleFraction
            self.bubbleFraction = bubbleFraction
            self.peakMemoryBytes = peakMemoryBytes
            self.staticBytes = staticBytes
            self.memoryBytes = memoryBytes
            self.memory = memory
        }
    }

    public var schedule: PipelineSchedule
    /// When the last action of the iteration ends (the first starts at 0).
    public var iterationSeconds: Double
    /// The cost model's T_iter for the same plan, to compare (see docs/cost-model.md).
    public var costModelIterationSeconds: Double
    public var stages: [StageReport]
    /// Every action with a duration, in start order.
    public var events: [Event]

    public init(schedule: PipelineSchedule, iterationSeconds: Double, costModelIterationSeconds: Double,
                stages: [StageReport], events: [Event]) {
        self.schedule = schedule
        self.iterationSeconds = iterationSeconds
        self.costModelIterationSeconds = costModelIterationSeconds
        self.stages = stages
        self.events = events
    }
}
