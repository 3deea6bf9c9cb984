import Foundation
import Testing
import VPipeCore

/// PipeDream's `graph.txt` -> chain of blocks -> ModelSpec. Fixtures follow what PipeDream's
/// `Node.__str__` / `Graph.__str__` write: `%.3f` times and parameter sizes, activation lists
/// with `; ` between items, edges after all nodes, each on a line that starts with a tab.
@Suite struct PipeDreamImportTests {
    /// Input, conv, relu, linear: a straight chain.
    static let chainText = """
        node1 -- Input0 -- forward_compute_time=0.000, backward_compute_time=0.000, activation_size=602112.0, parameter_size=0.000
        node2 -- Conv2d(3, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)) -- forward_compute_time=1.500, backward_compute_time=3.000, activation_size=3211264.0, parameter_size=7168.000
        node3 -- ReLU(inplace) -- forward_compute_time=0.250, backward_compute_time=0.500, activation_size=3211264.0, parameter_size=0.000
        node4 -- Linear(in_features=802816, out_features=10, bias=True) -- forward_compute_time=2.000, backward_compute_time=4.000, activation_size=40.0, parameter_size=32112680.000
        \tnode1 -- node2
        \tnode2 -- node3
        \tnode3 -- node4
        """

    /// A residual block: node3 forks into node4 -> node5 and the skip edge node3 -> node6 (Add).
    static let residualText = """
        node1 -- Input0 -- forward_compute_time=0.000, backward_compute_time=0.000, activation_size=1000.0, parameter_size=0.000
        node2 -- Conv2d(3, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False) -- forward_compute_time=1.000, backward_compute_time=2.000, activation_size=100.0, parameter_size=10.000
        node3 -- ReLU(inplace) -- forward_compute_time=0.500, backward_compute_time=1.000, activation_size=200.0, parameter_size=0.000
        node4 -- Conv2d(64, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False) -- forward_compute_time=2.000, backward_compute_time=4.000, activation_size=300.0, parameter_size=20.000
        node5 -- BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True) -- forward_compute_time=0.250, backward_compute_time=0.500, activation_size=400.0, parameter_size=30.000
        node6 -- Add -- forward_compute_time=0.125, backward_compute_time=0.250, activation_size=500.0, parameter_size=0.000
        node7 -- Linear(in_features=64, out_features=10, bias=True) -- forward_compute_time=1.000, backward_compute_time=2.000, activation_size=40.0, parameter_size=2600.000 -- stage_id=1
        \tnode1 -- node2
        \tnode2 -- node3
        \tnode3 -- node4
        \tnode4 -- node5
        \tnode3 -- node6
        \tnode5 -- node6
        \tnode6 -- node7
        """

    func expectClose(_ a: Double, _ b: Double, _ what: String) {
        #expect(abs(a - b) <= 1e-12 * max(abs(a), abs(b)), "\(what): expected \(b), saw \(a)")
    }

    @Test func straightChainKeepsEveryNode() throws {
        let graph = try PipeDreamGraph.parse(Self.chainText)
        #expect(graph.nodes.count == 4)
        #expect(graph.nodes[1].description == "Conv2d(3, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))")
        let model = try graph.modelSpec(name: "chain")
        #expect(model.layers.map(\.name) == ["node2", "node3", "node4"])
        #expect(model.inputBytes == 602112)
        let p = model.layers[0].profile
        expectClose(p.fwdSeconds, 0.0015, "conv fwd")
        expectClose(p.bwdSeconds, 0.003, "conv bwd")
        #expect(p.stashBytes == 3211264)
        #expect(p.outputBytes == 3211264)
        #expect(p.paramBytes == 7168)
        #expect(model.layers[2].profile == LayerProfile(fwdSeconds: 2.0 / 1000, bwdSeconds: 4.0 / 1000,
                                                         stashBytes: 40, outputBytes: 40, paramBytes: 32112680))
        try Validation.validate(model)
    }

    /// The residual block, by hand. Order node2..node7; the tensors open after each node:
    ///   node2: {node2} 100 | node3: {node3} 200 (read by node4 and node6, counted once)
    ///   node4: {node3, node4} 500 | node5: {node3, node5} 600 | node6: {node6} 500 | node7: its output 40
    @Test func residualBlockIsOneLayerPerNodeWithTheSkipTensorOnEveryCut() throws {
        let graph = try PipeDreamGraph.parse(Self.residualText)
        let chain = try graph.chain()
        #expect(chain.map(\.name) == ["node2", "node3", "node4", "node5", "node6", "node7"])
        #expect(chain.map(\.outputBytes) == [100, 200, 500, 600, 500, 40])
        #expect(chain.map { $0.crossing.map { graph.nodes[$0].id } } == [["node2"], ["node3"], ["node3", "node4"], ["node3", "node5"], ["node6"], []])
        #expect(chain.map(\.stashBytes) == [100, 200, 300, 400, 500, 40])
        #expect(chain.map(\.parameterBytes) == [10, 0, 20, 30, 0, 2600])

        let model = try graph.modelSpec()
        #expect(model.layers.count == 6)
        #expect(model.inputBytes == 1000)
        #expect(model.inputBytes(ofLayer: 3) == 500, "a stage starting at node5 receives node3's and node4's outputs")
        let p = model.layers[2].profile
        expectClose(p.fwdSeconds, 2.0 / 1000, "node4 fwd s")
        expectClose(p.bwdSeconds, 4.0 / 1000, "node4 bwd s")
        #expect(p == LayerProfile(fwdSeconds: p.fwdSeconds, bwdSeconds: p.bwdSeconds, stashBytes: 300, outputBytes: 500, paramBytes: 20))
    }

    /// Every down-closed set of nodes (every cut PipeDream's antichain states can make) of the
    /// residual block is a prefix of the chain: a skip connection orders its nodes totally.
    @Test func everyCutOfASkipConnectionIsAPrefix() throws {
        let graph = try PipeDreamGraph.parse(Self.residualText)
        let chain = try graph.chain().map(\.node)
        let layers = chain.sorted()
        for mask in 1..<(1 << layers.count) {
            let set = Set(layers.indices.filter { mask & (1 << $0) != 0 }.map { layers[$0] })
            let downClosed = graph.edges.allSatisfy { e in graph.nodes[e.from].isInput || !set.contains(e.to) || set.contains(e.from) }
            guard downClosed else { continue }
            #expect(Set(chain.prefix(set.count)) == set, "the cut after \(set.map { graph.nodes[$0].id }.sorted()) is not a prefix of the chain")
        }
    }

    @Test func orderAndTieBreakDoNotDependOnLineOrder() throws {
        // The same residual graph with its node lines and its edge lines reversed.
        let lines = Self.residualText.split(separator: "\n")
        let text = lines.filter { !$0.hasPrefix("\t") }.reversed().joined(separator: "\n") + "\n\n"
            + lines.filter { $0.hasPrefix("\t") }.reversed().joined(separator: "\n") + "\n"
        #expect(try PipeDreamGraph.parse(text).chain().map(\.name) == ["node2", "node3", "node4", "node5", "node6", "node7"])
    }

    @Test func twoBranchesWithoutASkipEdge() throws {
        // node2 forks into node3 and node4, which join in node5 (e.g. an inception-like concat).
        let text = """
            node1 -- Input0 -- forward_compute_time=0.000, backward_compute_time=0.000, activation_size=8.0, parameter_size=0.000
            node2 -- A -- forward_compute_time=1.000, backward_compute_time=1.000, activation_size=10.0, parameter_size=1.000
            node3 -- B -- forward_compute_time=1.000, backward_compute_time=1.000, activation_size=20.0, parameter_size=2.000
            node4 -- C -- forward_compute_time=1.000, backward_compute_time=1.000, activation_size=30.0, parameter_size=4.000
            node5 -- Concat -- forward_compute_time=1.000, backward_compute_time=1.000, activation_size=50.0, parameter_size=8.000
            node6 -- D -- forward_compute_time=1.000, backward_compute_time=1.000, activation_size=5.0, parameter_size=16.000
            \tnode1 -- node2
            \tnode2 -- node3
            \tnode2 -- node4
            \tnode3 -- node5
            \tnode4 -- node5
            \tnode5 -- node6
            """
        let chain = try PipeDreamGraph.parse(text).chain()
        #expect(chain.map(\.name) == ["node2", "node3", "node4", "node5", "node6"])
        // After node3, node2's output is still owed to node4: 10 + 20.
        #expect(chain.map(\.outputBytes) == [10, 30, 50, 50, 5])
    }

    /// A ResNet downsample block: node2 forks into the main branch (node3 -> node4, large
    /// outputs) and a 1x1 downsample convolution (node5, small output); node6 adds them.
    /// Running node5 first leaves 50 + 10 bytes open instead of 50 + 100, and every cut in
    /// the main branch then carries node5's 10 bytes instead of node2's 50; the profiler's
    /// order (node3 first) would keep node2's 50 open through the whole main branch.
    @Test func theBranchThatLeavesFewerBytesOpenRunsFirst() throws {
        let text = """
            node1 -- Input0 -- forward_compute_time=0.000, backward_compute_time=0.000, activation_size=8.0, parameter_size=0.000
            node2 -- ReLU -- forward_compute_time=1.000, backward_compute_time=1.000, activation_size=50.0, parameter_size=0.000
            node3 -- Conv2d -- forward_compute_time=1.000, backward_compute_time=1.000, activation_size=100.0, parameter_size=1.000
            node4 -- Conv2d -- forward_compute_time=1.000, backward_compute_time=1.000, activation_size=100.0, parameter_size=1.000
            node5 -- Conv2d(downsample) -- forward_compute_time=1.000, backward_compute_time=1.000, activation_size=10.0, parameter_size=1.000
            node6 -- Add -- forward_compute_time=1.000, backward_compute_time=1.000, activation_size=100.0, parameter_size=0.000
            \tnode1 -- node2
            \tnode2 -- node3
            \tnode3 -- node4
            \tnode4 -- node6
            \tnode2 -- node5
            \tnode5 -- node6
            """
        let chain = try PipeDreamGraph.parse(text).chain()
        #expect(chain.map(\.name) == ["node2", "node5", "node3", "node4", "node6"])
        #expect(chain.map(\.outputBytes) == [50, 60, 110, 110, 100])
    }

    @Test func unusedGetitemSinksAreDroppedLikePipeDreamDoes() throws {
        // An LSTM's (output, hidden) tuple: only __getitem__(0) is used; __getitem__(1) is a sink.
        let text = """
            node1 -- Input0 -- forward_compute_time=0.000, backward_compute_time=0.000, activation_size=8.0, parameter_size=0.000
            node2 -- LSTM -- forward_compute_time=1.000, backward_compute_time=1.000, activation_size=[10.0; 2.0], parameter_size=1.000
            node3 -- __getitem__(0) -- forward_compute_time=0.000, backward_compute_time=0.000, activation_size=10.0, parameter_size=0.000
            node4 -- __getitem__(1) -- forward_compute_time=0.000, backward_compute_time=0.000, activation_size=2.0, parameter_size=0.000
            node5 -- Linear -- forward_compute_time=1.000, backward_compute_time=1.000, activation_size=4.0, parameter_size=3.000
            \tnode1 -- node2
            \tnode2 -- node3
            \tnode2 -- node4
            \tnode3 -- node5
            """
        let chain = try PipeDreamGraph.parse(text).chain()
        #expect(chain.map(\.name) == ["node2", "node3", "node5"])
        #expect(chain.map(\.outputBytes) == [12, 10, 4])
    }

    // MARK: - PipeDream's published profiles (data/pipedream-profiles)

    static let profiles = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("data/pipedream-profiles")

    /// Layers expected from each checked-in profile: its nodes less the `Input` nodes and
    /// the unused `__getitem__` sinks (counted by hand from the files).
    static let expectedLayers: [String: (nodes: Int, layers: Int)] = [
        "alexnet": (23, 22), "vgg16": (41, 40), "squeezenet1_0": (68, 67), "gnmt": (48, 37), "gnmt_large": (96, 77), "resnet18": (71, 70), "resnet50": (177, 176), "resnext50": (177, 176),
        "resnet101": (347, 346), "resnext101": (347, 346), "densenet121": (429, 428),
    ]

    /// Every prefix of the chain is a cut of the graph (down-closed), and the bytes the chain
    /// charges for it are those of every tensor on an edge leaving it, each producer once,
    /// recomputed here from the edge list.
    @Test(arguments: expectedLayers.keys.sorted())
    func publishedProfileCutsAreTheGraphsCuts(model: String) throws {
        let text = try String(contentsOf: Self.profiles.appendingPathComponent("\(model)/graph.txt"), encoding: .utf8)
        let graph = try PipeDreamGraph.parse(text)
        let chain = try graph.chain()
        let expected = try #require(Self.expectedLayers[model])
        #expect(graph.nodes.count == expected.nodes && chain.count == expected.layers,
                "\(model): expected \(expected.nodes) nodes and \(expected.layers) layers, saw \(graph.nodes.count) and \(chain.count)")
        let inChain = Set(chain.map(\.node))
        #expect(inChain.count == chain.count, "\(model): a node appears twice in the chain")
        let edges = graph.edges.filter { inChain.contains($0.from) && inChain.contains($0.to) }
        var prefix = Set<Int>()
        for (i, layer) in chain.enumerated().dropLast() {
            prefix.insert(layer.node)
            for e in edges where prefix.contains(e.to) {
                #expect(prefix.contains(e.from), "\(model): the cut after \(layer.name) leaves \(graph.nodes[e.from].id) -> \(graph.nodes[e.to].id) pointing backwards")
            }
            let producers = Set(edges.filter { prefix.contains($0.from) && !prefix.contains($0.to) }.map(\.from))
            let bytes = producers.reduce(0.0) { $0 + graph.nodes[$1].activationBytes }
            #expect(layer.outputBytes == bytes, "\(model): cut \(i) after \(layer.name): expected \(bytes) bytes crossing, saw \(layer.outputBytes)")
        }
        let spec = try graph.modelSpec(name: model)
        try Validation.validate(spec)
        // Nothing is lost: the chain's totals are the graph's (less inputs and dropped sinks).
        let total = chain.reduce(0.0) { $0 + $1.forwardMilliseconds + $1.backwardMilliseconds }
        let graphTotal = inChain.reduce(0.0) { $0 + graph.nodes[$1].forwardMilliseconds + graph.nodes[$1].backwardMilliseconds }
        expectClose(total, graphTotal, "\(model) compute")
    }

    @Test func listValuedSizesAreSummed() throws {
        let text = """
            node1 -- Input0 -- forward_compute_time=0.000, backward_compute_time=0.000, activation_size=[100.0; 28.0], parameter_size=0.000
            node2 -- LSTM(1024, 1024) -- forward_compute_time=1.000, backward_compute_time=2.000, activation_size=[1024.0; 2048.0; 4096.0], parameter_size=64.000
            node3 -- Linear -- forward_compute_time=1.000, backward_compute_time=2.000, activation_size=[1024.0, 2048.0], parameter_size=[16.0; 16.0]
            \tnode1 -- node2
            \tnode2 -- node3
            """
        let model = try PipeDreamGraph.parse(text).modelSpec()
        #expect(model.inputBytes == 128)
        #expect(model.layers[0].profile.stashBytes == 7168)
        #expect(model.layers[1].profile.outputBytes == 3072)
        #expect(model.layers[1].profile.paramBytes == 32)
    }

    @Test func severalInputsAddUpAndTheirEdgesDoNotJoinTheChain() throws {
        // BERT-like: Input1 (a mask) feeds both layers; it must not make them one block.
        let text = """
            node1 -- Input0 -- forward_compute_time=0.000, backward_compute_time=0.000, activation_size=64.0, parameter_size=0.000
            node2 -- Input1 -- forward_compute_time=0.000, backward_compute_time=0.000, activation_size=16.0, parameter_size=0.000
            node3 -- Layer -- forward_compute_time=1.000, backward_compute_time=2.000, activation_size=64.0, parameter_size=8.000
            node4 -- Layer -- forward_compute_time=1.000, backward_compute_time=2.000, activation_size=64.0, parameter_size=8.000
            \tnode1 -- node3
            \tnode2 -- node3
            \tnode3 -- node4
            \tnode2 -- node4
            """
        let model = try PipeDreamGraph.parse(text).modelSpec()
        #expect(model.layers.map(\.name) == ["node3", "node4"])
        #expect(model.inputBytes == 80)
    }

    @Test func millisecondsPerMiniBatchBecomeSecondsPerMicroBatch() throws {
        let model = try PipeDreamGraph.parse(Self.chainText).modelSpec(microBatchesPerMiniBatch: 4)
        let p = model.layers[0].profile
        expectClose(p.fwdSeconds, 1.5 / 1000 / 4, "fwd")
        expectClose(p.bwdSeconds, 3.0 / 1000 / 4, "bwd")
        #expect(p.stashBytes == 3211264 / 4, "activations are per mini-batch too")
        #expect(p.paramBytes == 7168, "parameters do not shrink with the batch")
        #expect(model.inputBytes == 602112 / 4)
        #expect(model.layers[2].profile.outputBytes == 10)
        #expect(throws: VPipeError.invalidField(field: "micro_batches_per_mini_batch", message: "must be between 1 and 1048576, got 0")) {
            try PipeDreamGraph.parse(Self.chainText).modelSpec(microBatchesPerMiniBatch: 0)
        }
    }

    @Test func windowsLineEndsAndStageIDsAreAccepted() throws {
        let text = Self.residualText.split(separator: "\n").joined(separator: "\r\n") + "\r\n"
        #expect(try PipeDreamGraph.parse(text).modelSpec() == PipeDreamGraph.parse(Self.residualText).modelSpec())
    }

    // MARK: - malformed files

    static let good = "node1 -- Input0 -- forward_compute_time=0.000, backward_compute_time=0.000, activation_size=8.0, parameter_size=0.000"
    static let layer = "node2 -- ReLU -- forward_compute_time=1.000, backward_compute_time=2.000, activation_size=8.0, parameter_size=0.000"

    /// (file, line expected in the error, a phrase the message must contain)
    static let malformed: [(String, Int, String)] = [
        ("", 1, "saw an empty file"),
        ("\n  \n", 1, "saw an empty file"),
        ("\tnode1 -- node2", 1, "saw only edge lines"),
        ("\(good)\nnode2 -- ReLU -- backward_compute_time=2.000, activation_size=8.0, parameter_size=0.000", 2,
         "expected ` -- forward_compute_time=`"),
        ("\(good)\n\(layer.replacingFirst("1.000", with: "fast"))", 2, "expected a number of milliseconds for `forward_compute_time=`, saw `fast`"),
        ("\(good)\n\(layer.replacingFirst("2.000", with: "-2.0"))", 2, "expected a finite number of milliseconds >= 0"),
        ("\(good)\n\(layer.replacingFirst("2.000", with: "nan"))", 2, "expected a finite number"),
        ("\(good)\n\(layer.replacingFirst(", parameter_size=0.000", with: ""))", 2, "expected `parameter_size=`"),
        ("\(good)\n\(layer.replacingFirst("activation_size=8.0", with: "activation_size=[8.0; 9.0"))", 2, "expected `]`"),
        ("\(good)\n\(layer.replacingFirst("activation_size=8.0", with: "activation_size=[8.0; x]"))", 2, "saw `x`"),
        ("\(good)\n\(layer.replacingFirst("activation_size", with: "activations"))", 2, "saw `activations=`"),
        ("\(good)\n\(layer) -- stage=1", 2, "expected ` -- stage_id=<integer>`"),
        ("\(good)\n\(layer)\n\(layer)", 3, "node `node2` is defined twice (first on line 2)"),
        ("\(good)\nnode2 ReLU forward_compute_time=1.0", 2, "expected `<id> -- <description> -- "),
        ("\(good)\n\(layer)\n\tnode1 -- node2\n\tnode2 -- node9", 4, "edge names node `node9`"),
        ("\(good)\n\(layer)\n\tnode1 -> node2", 3, "expected an edge"),
        ("\(good)\n\(layer)\n\tnode1 -- node2 -- node3", 3, "expected an edge"),
        ("\(good)\n\(layer)\n\(layer.replacingFirst("node2", with: "node3"))\n\tnode2 -- node3\n\tnode3 -- node2", 4,
         "saw the cycle node2 -> node3 -> node2"),
        ("\(good)\n\(layer)\n\tnode2 -- node2", 3, "saw the cycle node2 -> node2"),
        ("\(good)\n\tnode1 -- node1", 1, "expected at least one node that is not an `Input` node"),
        ("\(good)\n\(layer.replacingFirst("parameter_size=0.000", with: "parameter_size=1e300"))", 2, "<= 2^53"),
    ]

    @Test func malformedFilesNameTheLine() {
        for (text, line, phrase) in Self.malformed {
            do {
                let model = try PipeDreamGraph.parse(text).modelSpec()
                Issue.record("expected an error at line \(line) containing \"\(phrase)\", got a model of \(model.layers.count) layers from:\n\(text)")
            } catch let VPipeError.invalidField(field, message) {
                #expect(field == "graph.txt line \(line)", "\(message)")
                #expect(message.contains(phrase), "expected \"\(phrase)\" in: \(message)")
            } catch {
                Issue.record("expected VPipeError.invalidField, saw \(error)")
            }
        }
    }

    /// Thousands of random edits of a good file: each either imports to a model that passes
    /// `Validation` or fails with a `graph.txt line N` error; none may trap.
    @Test func randomMutationsNeverTrap() {
        var rng = Fixtures.Random(seed: 0x5EED)
        let source = Array(Self.residualText)
        let alphabet = Array("0123456789.-e+=[];, \t\n\r-nodeInputxé\u{301}\u{0}")
        var imported = 0
        for _ in 0..<3000 {
            var text = source
            for _ in 0..<rng.int(1...4) {
                let at = rng.int(0...max(0, text.count - 1))
                switch rng.next() % 5 {
                case 0 where !text.isEmpty: text.remove(at: at)
                case 1: text.insert(alphabet[rng.int(0...alphabet.count - 1)], at: at)
                case 2 where !text.isEmpty: text[at] = alphabet[rng.int(0...alphabet.count - 1)]
                case 3: text.removeSubrange(at..<min(text.count, at + rng.int(0...40)))
                default:  // duplicate a stretch (a repeated node or edge line, often)
                    let end = min(text.count, at + rng.int(0...200))
                    text.insert(contentsOf: text[at..<end], at: at)
                }
            }
            do {
                let model = try PipeDreamGraph.parse(String(text)).modelSpec(microBatchesPerMiniBatch: rng.int(1...3))
                try Validation.validate(model)
                imported += 1
            } catch let VPipeError.invalidField(field, _) {
                #expect(field.hasPrefix("graph.txt line "), "unexpected field \(field)")
            } catch {
                Issue.record("expected VPipeError.invalidField, saw \(error)")
            }
        }
        // Both outcomes must be exercised, or the mutations say nothing.
        #expect(imported > 100 && imported < 2900, "imported \(imported) of 3000 mutations")
    }
}

extension String {
    /// `self` with the first occurrence of `target` replaced (tests build bad lines from good ones).
    func replacingFirst(_ target: String, with replacement: String) -> String {
        guard let r = firstRange(of: target) else { return self }
        return String(self[..<r.lowerBound]) + replacement + String(self[r.upperBound...])
    }
}
