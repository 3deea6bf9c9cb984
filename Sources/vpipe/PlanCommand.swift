import ArgumentParser
import Foundation
import VPipeCore
import VPipeWire

enum BuiltinModel: String, ExpressibleByArgument, CaseIterable {
    case gpt, bertLarge = "bert-large", gpt2XL = "gpt2-xl", gpt3_2_7B = "gpt3-2.7b", gpt3_13B = "gpt3-13b"
}

enum ScheduleArgument: String, ExpressibleByArgument, CaseIterable {
    case gpipe, oneFOneB = "1f1b", async = "pipedream-async"
    var schedule: Schedule {
        switch self {
        case .gpipe: return .gpipe
        case .oneFOneB: return .oneFOneB
        case .async: return .pipedreamAsync
        }
    }
}

/// `--planner`: PlannerKind's own names in lower case with dashes (TIME_BALANCED:
/// time-balanced), so a new planner is an argument without a line here.
extension PlannerKind: ExpressibleByArgument {
    var argumentName: String { name.lowercased().replacingOccurrences(of: "_", with: "-") }
    public init?(argument: String) {
        guard let kind = Self.allCases.first(where: { $0.argumentName == argument }) else { return nil }
        self = kind
    }
    public static var allValueStrings: [String] { allCases.map(\.argumentName) }
}

/// `--objective`: iteration-time, throughput.
extension PlanObjective: ExpressibleByArgument {
    var argumentName: String { name.lowercased().replacingOccurrences(of: "_", with: "-") }
    public init?(argument: String) {
        guard let objective = Self.allCases.first(where: { $0.argumentName == argument }) else { return nil }
        self = objective
    }
    public static var allValueStrings: [String] { allCases.map(\.argumentName) }
}

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Plan a model on a cluster and compare the planners.",
        discussion: """
            The request comes from --request (a serialised vpipe.PlanRequest) or is built from a \
            model on identical virtual devices (--devices): a serialised vpipe.ModelSpec \
            (--model-file, e.g. from `vpipe import pipedream --out`) or a built-in analytic \
            transformer (--model). Prints the plan as a table, then what every planner gives on \
            the same request.
            """)

    @Option(help: "A serialised vpipe.PlanRequest to plan (overrides the model and cluster options).")
    var request: String?

    @Option(help: "A serialised vpipe.ModelSpec to plan (e.g. from `vpipe import pipedream --out`), instead of --model.")
    var modelFile: String?

    @Option(help: "Built-in analytic model: \(BuiltinModel.allCases.map(\.rawValue).joined(separator: ", ")).")
    var model: BuiltinModel = .gpt
    @Option(help: "Transformer blocks (gpt only).") var blocks: Int = 24
    @Option(help: "Hidden size (gpt only).") var hidden: Int = 2048
    @Option(help: "Attention heads (gpt only).") var heads: Int = 16
    @Option(help: "Tokens per sequence (gpt only).") var sequenceLength: Int = 1024
    @Option(help: "Sequences per micro-batch.") var microBatchSize: Int = 4

    @Option(help: "Identical devices in the pipeline.") var devices: Int = 4
    @Option(help: "Memory per device, GiB.") var memoryGib: Double = 16
    @Option(help: "Device<->host copy bandwidth, GB/s.") var hostBandwidthGbs: Double = 12
    @Option(help: "Link bandwidth between neighbouring devices, GB/s.") var linkBandwidthGbs: Double = 10
    @Option(help: "Link latency, microseconds.") var linkLatencyUs: Double = 10

    @Option(help: "Schedule: gpipe, 1f1b, pipedream-async.") var schedule: ScheduleArgument = .oneFOneB
    @Option(help: "Micro-batches per iteration.") var microBatches: Int = 8
    @Option(help: "Planner: \(PlannerKind.allValueStrings.joined(separator: ", ")).")
    var planner: PlannerKind = .vpipe
    @Option(help: "What VPIPE and EXACT minimise: iteration-time (T_iter, the default) or throughput (the bottleneck first, then T_iter; PipeDream's objective).")
    var objective: PlanObjective?

    @Option(help: "Write the plan (a serialised vpipe.Plan) here.") var out: String?
    @Option(help: "Write the request (a serialised vpipe.PlanRequest) here.") var writeRequest: String?
    @Flag(help: "Do not compare with the other planners.") var noCompare = false
    @Flag(help: "Play the plan in the discrete-event simulator (see `vpipe simulate`).") var simulate = false
    @OptionGroup var simulation: SimulationOutput

    func validate() throws {
        guard (1...4096).contains(blocks), (1...65536).contains(hidden), (1...1024).contains(heads),
              (1...1_048_576).contains(sequenceLength), (1...65536).contains(microBatchSize)
        else { throw ValidationError("model dimensions out of range (blocks 1...4096, hidden 1...65536, heads 1...1024)") }
        guard memoryGib > 0, memoryGib.isFinite, hostBandwidthGbs > 0, linkBandwidthGbs > 0, linkLatencyUs >= 0
        else { throw ValidationError("memory and bandwidths must be > 0, latency >= 0") }
        guard (1...4096).contains(devices) else { throw ValidationError("--devices must be between 1 and 4096") }
    }

    func run() throws {
        var planRequest = try buildRequest()
        planRequest.options.planner = planner
        if let objective { planRequest.options.objective = objective }
        if let writeRequest {
            try Data(WireEncode.planRequest(planRequest)).write(to: URL(fileURLWithPath: writeRequest))
        }
        do {
            let plan = try Planning.plan(planRequest)
            print(PlanTable.render(plan, model: planRequest.model, cluster: planRequest.cluster))
            if let out { try Data(WireEncode.plan(plan)).write(to: URL(fileURLWithPath: out)) }
            if simulate || simulation.trace != nil || simulation.svg != nil {
                let report = try Simulator(model: planRequest.model, cluster: planRequest.cluster)
                    .simulate(plan.layout, schedule: plan.schedule, microBatches: plan.microBatches)
                print("")
                try simulation.emit(report, title: planRequest.model.name)
            }
        } catch let error as VPipeError {
            print("planner \(planner.name): \(error)")
            if noCompare { throw ExitCode(1) }
        }
        if !noCompare {
            print("")
            print(comparison(planRequest))
        }
    }

    func buildRequest() throws -> PlanRequest {
        if let request {
            let data = try Data(contentsOf: URL(fileURLWithPath: request))
            return try data.withUnsafeBytes { try WireDecode.planRequest($0) }
        }
        let gib = 1024.0 * 1024 * 1024
        let cluster = ClusterSpec.uniform(
            count: devices,
            device: DeviceSpec(name: "gpu", memoryBytes: Int(memoryGib * gib), hostBandwidth: hostBandwidthGbs * 1e9),
            link: LinkSpec(bandwidth: linkBandwidthGbs * 1e9, latency: linkLatencyUs * 1e-6))
        let options = PlanOptions(schedule: schedule.schedule, microBatches: microBatches, planner: planner)
        if let modelFile {
            return PlanRequest(model: try Self.readModel(modelFile), cluster: cluster, options: options)
        }
        let shape: TransformerShape
        switch model {
        case .gpt:
            shape = TransformerShape(name: "gpt-\(blocks)x\(hidden)", blocks: blocks, hidden: hidden, heads: heads,
                                     sequenceLength: sequenceLength, vocabulary: 50257, microBatchSize: microBatchSize)
        case .bertLarge: shape = .bertLarge(microBatchSize: microBatchSize)
        case .gpt2XL: shape = .gpt2XL(microBatchSize: microBatchSize)
        case .gpt3_2_7B: shape = .gpt3_2_7B(microBatchSize: microBatchSize)
        case .gpt3_13B: shape = .gpt3_13B(microBatchSize: microBatchSize)
        }
        return PlanRequest(model: shape.model(), cluster: cluster, options: options)
    }

    /// The ModelSpec in `path`, checked; a file that cannot be read, decoded or planned is
    /// reported on stderr with the file and the field at fault (`model.layers[3].profile...`).
    static func readModel(_ path: String) throws -> ModelSpec {
        func fail(_ message: String) -> ExitCode {
            FileHandle.standardError.write(Data("error: --model-file \(path): \(message)\n".utf8))
            return ExitCode.failure
        }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw fail("cannot read the file (\((error as NSError).localizedDescription))")
        }
        do {
            let model = try data.withUnsafeBytes { try WireDecode.modelSpec($0) }
            try Validation.validate(model)
            return model
        } catch let error as WireError {
            throw fail("not a serialised vpipe.ModelSpec: \(error)")
        } catch let error as VPipeError {
            throw fail("\(error)")
        }
    }

    func comparison(_ request: PlanRequest) -> String { PlanCommand.comparison(request) }

    /// What every planner gives on the same request: iteration time and feasibility.
    static func comparison(_ request: PlanRequest) -> String {
        var lines = ["planner         iteration    bottleneck   peak memory (max stage)   speed-up vs GPIPE"]
        var results: [(PlannerKind, Result<Plan, VPipeError>)] = []
        for kind in PlannerKind.allCases {
            var r = request
            r.options.planner = kind
            do { results.append((kind, .success(try Planning.plan(r)))) } catch let e as VPipeError {
                results.append((kind, .failure(e)))
            } catch { results.append((kind, .failure(.internalError("\(error)")))) }
        }
        let gpipe: Double? = results.first { $0.0 == .gpipe }.flatMap { try? $0.1.get().iterationSeconds }
        for (kind, result) in results {
            let name = kind.name.padding(toLength: 15, withPad: " ", startingAt: 0)
            switch result {
            case let .success(plan):
                let peak = plan.stages.map(\.peakMemoryBytes).max() ?? 0
                let ratio = gpipe.map { formatFixed($0 / plan.iterationSeconds, decimals: 2) + "x" } ?? "-"
                lines.append("\(name) \(formatSeconds(plan.iterationSeconds).padding(toLength: 12, withPad: " ", startingAt: 0)) "
                    + "\(formatSeconds(plan.bottleneckSeconds).padding(toLength: 12, withPad: " ", startingAt: 0)) "
                    + "\(formatBytes(peak).padding(toLength: 25, withPad: " ", startingAt: 0)) \(ratio)")
            case let .failure(error):
                var text: String
                switch error {
                case .infeasible: text = "infeasible"
                case .notImplemented: text = "not implemented yet"
                default: text = "\(error)"
                }
                if case let .infeasible(message) = error, let first = message.split(separator: ";").first {
                    text += " (" + first.split(separator: ":").dropFirst().joined(separator: ":").trimmingCharacters(in: .whitespaces) + ")"
                }
                lines.append("\(name) \(text)")
            }
        }
        return lines.joined(separator: "\n")
    }
}
