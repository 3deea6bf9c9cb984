import ArgumentParser
import Foundation
import VPipeCore
import VPipeWire

/// `vpipe`: plan pipelines from the command line. See `vpipe help plan`.
@main
struct VPipeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vpipe",
        abstract: "Plan pipeline-parallel training with vPipe's cost model and simulate the plans.",
        subcommands: [PlanCommand.self, SimulateCommand.self, ImportCommand.self, DemoCommand.self, DemoDynamicCommand.self, TrainCommand.self, VersionCommand.self])
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the version.")
    func run() { print("vpipe \(LibraryVersion.string), cost model v\(CostModel.version)") }
}
