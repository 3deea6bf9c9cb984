import ArgumentParser
import Foundation
import VPipeCore
import VPipeWire

/// `vpipe simulate`: play a saved plan in the discrete-event simulator.
struct SimulateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Play a plan's schedule in the discrete-event simulator.",
        discussion: """
            Reads the model and cluster from --request (a serialised vpipe.PlanRequest, e.g. from \
            `vpipe plan --write-request`) and the plan from --plan (a serialised vpipe.Plan, from \
            `vpipe plan --out`). Prints the iteration time next to the cost model's and each \
            stage's utilisation and peak memory; --trace and --svg write the timeline.
            """)

    @Option(help: "A serialised vpipe.PlanRequest holding the model and the cluster.") var request: String
    @Option(help: "A serialised vpipe.Plan to simulate.") var plan: String
    @OptionGroup var output: SimulationOutput

    func run() throws {
        let requestData = try Data(contentsOf: URL(fileURLWithPath: request))
        let planRequest = try requestData.withUnsafeBytes { try WireDecode.planRequest($0) }
        let planData = try Data(contentsOf: URL(fileURLWithPath: plan))
        let decoded = try planData.withUnsafeBytes { try WireDecode.plan($0) }
        let report = try Evaluation.simulate(model: planRequest.model, cluster: planRequest.cluster, layout: decoded.layout,
                                             schedule: decoded.schedule, microBatches: decoded.microBatches)
        try output.emit(report, title: planRequest.model.name)
    }
}

/// The options and the printout shared by `vpipe simulate` and `vpipe plan --simulate`.
struct SimulationOutput: ParsableArguments {
    @Option(help: "Write a Chrome trace (JSON; open in ui.perfetto.dev or chrome://tracing) here.") var trace: String?
    @Option(help: "Write an SVG timeline here.") var svg: String?
    @Flag(help: "Also print each stage's action list.") var printSchedule = false

    func emit(_ report: SimulationReport, title: String) throws {
        print(Self.summary(report))
        if printSchedule { print("\n" + report.schedule.listing()) }
        if let trace { try Data(TraceExport.chromeTrace(report).utf8).write(to: URL(fileURLWithPath: trace)) }
        if let svg { try Data(TraceExport.svg(report, title: title).utf8).write(to: URL(fileURLWithPath: svg)) }
    }

    static func summary(_ r: SimulationReport) -> String {
        let ratio = r.costModelIterationSeconds > 0 ? formatFixed(r.iterationSeconds / r.costModelIterationSeconds, decimals: 3) : "-"
        var lines = [
            "simulated \(r.schedule.kind.name), p=\(r.stages.count), m=\(r.schedule.microBatches): iteration \(formatSeconds(r.iterationSeconds)), "
                + "cost model \(formatSeconds(r.costModelIterationSeconds)) (simulator/model \(ratio))",
            "stage  busy    bubble  swap stall  peak memory   of device",
        ]
        for (i, s) in r.stages.enumerated() {
            let stall = r.iterationSeconds > 0 ? s.swapStallSeconds / r.iterationSeconds : 0
            lines.append("\(i)".padding(toLength: 7, withPad: " ", startingAt: 0)
                + percent(s.busyFraction) + percent(s.bubbleFraction) + percent(stall, width: 12)
                + formatBytes(s.peakMemoryBytes).padding(toLength: 14, withPad: " ", startingAt: 0)
                + formatBytes(Double(s.memoryBytes)))
        }
        return lines.joined(separator: "\n")
    }

    static func percent(_ f: Double, width: Int = 8) -> String {
        (formatFixed(f * 100, decimals: 1) + "%").padding(toLength: width, withPad: " ", startingAt: 0)
    }
}
