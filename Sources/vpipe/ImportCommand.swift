import ArgumentParser
import Foundation
import VPipeCore
import VPipeWire

/// `vpipe import <format> ...`: turn another tool's profile into a vpipe.ModelSpec.
struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import a model profile written by another tool.",
        subcommands: [ImportPipeDreamCommand.self])
}

struct ImportPipeDreamCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipedream",
        abstract: "Import a PipeDream profile graph (graph.txt) as a chain of layers.",
        discussion: """
            Input nodes become the model's input size; every other node becomes one layer, in \
            a topological order, so every cut of the chain is a cut of the graph (an antichain \
            boundary, as in PipeDream's optimizer) and a layer's output is every tensor crossing \
            the cut after it. Prints the chain as a table and, with --out, writes it as a \
            serialised vpipe.ModelSpec, which `vpipe plan --model-file` plans. See \
            docs/pipedream-import.md.
            """)

    @Argument(help: "PipeDream's graph.txt.") var graph: String
    @Option(help: "Write the model (a serialised vpipe.ModelSpec) here.") var out: String?
    @Option(help: "Micro-batches per profiled mini-batch: times and activation sizes are divided by it.")
    var microBatchesPerMiniBatch: Int = 1
    @Option(help: "Model name (default: the file's folder for graph.txt, else the file's name).") var name: String?

    func run() throws {
        let url = URL(fileURLWithPath: graph)
        let text = try String(contentsOf: url, encoding: .utf8)
        let modelName = name ?? (url.deletingPathExtension().lastPathComponent == "graph"
            ? url.deletingLastPathComponent().lastPathComponent : url.deletingPathExtension().lastPathComponent)
        let model: ModelSpec
        do {
            let parsed = try PipeDreamGraph.parse(text)
            model = try parsed.modelSpec(name: modelName, microBatchesPerMiniBatch: microBatchesPerMiniBatch)
            print("\(model.name): \(model.layers.count) layers from \(parsed.nodes.count) nodes, "
                + "input \(formatBytes(Double(model.inputBytes))) per micro-batch")
        } catch let error as VPipeError {
            FileHandle.standardError.write(Data("error: \(graph): \(error)\n".utf8))
            throw ExitCode.failure
        }
        print(Self.table(model))
        if let out {
            try Data(WireEncode.modelSpec(model)).write(to: URL(fileURLWithPath: out))
            print("wrote \(out)")
        }
    }

    /// index, name, fwd ms, bwd ms, stash, output, params: one row per layer, then the totals.
    static func table(_ model: ModelSpec) -> String {
        let width = max(4, model.layers.map(\.name.count).max() ?? 0)
        func row(_ cells: [String], _ name: String) -> String {
            let numbers = cells.dropFirst().map { $0.leftPad(12) }.joined(separator: " ")
            return cells[0].leftPad(5) + "  " + name.padding(toLength: width, withPad: " ", startingAt: 0) + " " + numbers
        }
        var lines = [row(["#", "fwd ms", "bwd ms", "stash", "output", "params"], "name")]
        for (l, layer) in model.layers.enumerated() {
            let p = layer.profile
            lines.append(row(["\(l)", formatFixed(p.fwdSeconds * 1e3, decimals: 3), formatFixed(p.bwdSeconds * 1e3, decimals: 3),
                              formatBytes(Double(p.stashBytes)), formatBytes(Double(p.outputBytes)),
                              formatBytes(Double(p.paramBytes))], layer.name))
        }
        let sum = { (f: (LayerProfile) -> Double) in model.layers.reduce(0.0) { $0 + f($1.profile) } }
        lines.append(row(["", formatFixed(sum(\.fwdSeconds) * 1e3, decimals: 3), formatFixed(sum(\.bwdSeconds) * 1e3, decimals: 3),
                          formatBytes(sum { Double($0.stashBytes) }), "", formatBytes(sum { Double($0.paramBytes) })], "total"))
        return lines.joined(separator: "\n")
    }
}

extension String {
    func leftPad(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
