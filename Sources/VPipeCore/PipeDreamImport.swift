// Import of PipeDream's profile graphs (`graph.txt`, written by its profiler's
// `Graph.__str__`) into a `ModelSpec`. The format and the linearisation are described in
// docs/pipedream-import.md; this file follows that page section by section.

/// A profile graph as PipeDream's profiler writes it, before linearisation.
///
/// ```swift
/// let graph = try PipeDreamGraph.parse(text)           // text of graph.txt
/// let model = try graph.modelSpec(name: "vgg16", microBatchesPerMiniBatch: 4)
/// ```
///
/// Parsing is linear in the file's size; linearisation is O(V·R + E) for V nodes, E edges and
/// at most R nodes ready at once in the topological sort (R is small for real models).
/// Nothing here traps on any input: every malformed file is a `VPipeError.invalidField`
/// whose field is `graph.txt line N`.
public struct PipeDreamGraph: Sendable, Equatable {
    /// One `nodeN -- <desc> -- forward_compute_time=F, ...` line. Numbers are as written:
    /// times in milliseconds per mini-batch, sizes in bytes per mini-batch (lists summed).
    public struct Node: Sendable, Equatable {
        public var id: String
        public var description: String
        public var forwardMilliseconds: Double
        public var backwardMilliseconds: Double
        public var activationBytes: Double
        public var parameterBytes: Double
        /// The 1-based line of the file the node was read from.
        public var line: Int

        /// PipeDream's profiler names the model's inputs `Input0`, `Input1`, ...; they are not layers.
        public var isInput: Bool { description.hasPrefix("Input") }
    }

    /// One `\t<from> -- <to>` line, by index into `nodes`.
    public struct Edge: Sendable, Equatable, Hashable {
        public var from: Int
        public var to: Int
        public var line: Int
    }

    /// One element of the linearised chain: a single node, or a whole branchy region.
    /// Numbers are sums over `nodes`, in the file's units (ms and bytes per mini-batch).
    public struct Block: Sendable, Equatable {
        /// Indices into `PipeDreamGraph.nodes`, in topological order.
        public var nodes: [Int]
        public var name: String
        public var forwardMilliseconds: Double
        public var backwardMilliseconds: Double
        /// Σ activation sizes of the block's nodes: what its backward needs.
        public var stashBytes: Double
        /// The activation size of the node whose output crosses to the next block
        /// (the join node of a branchy region; the last node of the graph for the last block).
        public var outputBytes: Double
        public var parameterBytes: Double
    }

    /// Nodes in file order (the order PipeDream wrote them, which is the profiler's order).
    public var nodes: [Node]
    /// Edges in file order, without repeats.
    public var edges: [Edge]

    public init(nodes: [Node], edges: [Edge]) {
        self.nodes = nodes
        self.edges = edges
    }

    /// The `field` of every error this importer throws.
    static func field(_ line: Int) -> String { "graph.txt line \(line)" }

    static func fail(_ line: Int, _ message: String) -> VPipeError {
        .invalidField(field: field(line), message: message)
    }
}

// MARK: - Parsing

extension PipeDreamGraph {
    /// Reads the text of a `graph.txt`. Blank lines are skipped; `\r\n` line ends are accepted.
    public static func parse(_ text: String) throws -> PipeDreamGraph {
        var nodes: [Node] = []
        var index: [String: Int] = [:]
        var edgeLines: [(line: Int, from: Substring, to: Substring)] = []
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        for (i, raw) in lines.enumerated() {
            let line = i + 1
            if raw.allSatisfy(\.isWhitespace) { continue }
            if raw.first == "\t" {
                let (from, to) = try parseEdge(trimmed(raw), line: line)
                edgeLines.append((line, from, to))
            } else {
                let node = try parseNode(trimmed(raw), line: line)
                if let previous = index[node.id] {
                    throw fail(line, "node `\(node.id)` is defined twice (first on line \(nodes[previous].line)); node ids must be unique")
                }
                index[node.id] = nodes.count
                nodes.append(node)
            }
        }
        if nodes.isEmpty {
            throw fail(1, "expected at least one node line `<id> -- <description> -- forward_compute_time=...`, "
                + (lines.allSatisfy { $0.allSatisfy(\.isWhitespace) } ? "saw an empty file" : "saw only edge lines"))
        }
        var edges: [Edge] = []
        var seen = Set<Edge>()
        for e in edgeLines {
            guard let from = index[String(e.from)] else { throw unknownNode(e.from, line: e.line) }
            guard let to = index[String(e.to)] else { throw unknownNode(e.to, line: e.line) }
            // A repeated edge says nothing new; counting it twice would split no region correctly.
            let edge = Edge(from: from, to: to, line: 0)
            if seen.insert(edge).inserted { edges.append(Edge(from: from, to: to, line: e.line)) }
        }
        return PipeDreamGraph(nodes: nodes, edges: edges)
    }

    static func unknownNode(_ id: Substring, line: Int) -> VPipeError {
        fail(line, "edge names node `\(clip(id))`, which no node line defines")
    }

    /// `nodeA -- nodeB` (the leading tab already removed).
    static func parseEdge(_ s: Substring, line: Int) throws -> (Substring, Substring) {
        let parts = s.split(separator: " -- ", omittingEmptySubsequences: false)
        guard parts.count == 2, isNodeID(parts[0]), isNodeID(parts[1]) else {
            throw fail(line, "expected an edge `<tab><from id> -- <to id>`, saw `\(clip(s))`")
        }
        return (parts[0], parts[1])
    }

    /// `nodeN -- <desc> -- forward_compute_time=F, backward_compute_time=B, activation_size=A,
    /// parameter_size=P[ -- stage_id=S]`.
    static func parseNode(_ s: Substring, line: Int) throws -> Node {
        let expected = "expected `<id> -- <description> -- forward_compute_time=<ms>, backward_compute_time=<ms>, "
            + "activation_size=<bytes>, parameter_size=<bytes>`"
        guard let first = s.firstRange(of: " -- ") else { throw fail(line, "\(expected), saw `\(clip(s))`") }
        let id = s[..<first.lowerBound]
        guard isNodeID(id) else {
            throw fail(line, "expected a node id without spaces before ` -- `, saw `\(clip(id))`")
        }
        // The description is free text; the metadata starts at the last ` -- forward_compute_time=`.
        let rest = s[first.lowerBound...]
        guard let meta = rest.ranges(of: " -- forward_compute_time=").last else {
            throw fail(line, "expected ` -- forward_compute_time=` after the description of `\(id)`, saw `\(clip(rest))`")
        }
        let description = rest.index(first.lowerBound, offsetBy: 4, limitedBy: meta.lowerBound)
            .map { rest[$0..<meta.lowerBound] } ?? ""
        var fields = rest[rest.index(meta.lowerBound, offsetBy: 4)...]
        // PipeDream appends ` -- stage_id=S` once a node is assigned to a stage; the importer ignores it.
        if let stage = fields.firstRange(of: " -- ") {
            let suffix = fields[stage.upperBound...]
            guard suffix.hasPrefix("stage_id="), !suffix.dropFirst(9).isEmpty,
                  suffix.dropFirst(9).allSatisfy({ $0.isASCII && $0.isNumber }) else {
                throw fail(line, "expected ` -- stage_id=<integer>` or the end of the line after the sizes, saw ` -- \(clip(suffix))`")
            }
            fields = fields[..<stage.lowerBound]
        }
        let values = try parseFields(fields, line: line)
        return Node(id: String(id), description: String(description),
                    forwardMilliseconds: values[0], backwardMilliseconds: values[1],
                    activationBytes: values[2], parameterBytes: values[3], line: line)
    }

    static let fieldNames = ["forward_compute_time", "backward_compute_time", "activation_size", "parameter_size"]

    /// `key=value, key=value, ...` in any order, each of `fieldNames` exactly once. Sizes may be
    /// lists, `[a; b]` as PipeDream writes them or `[a, b]`, and are summed.
    static func parseFields(_ text: Substring, line: Int) throws -> [Double] {
        var values: [Double?] = Array(repeating: nil, count: fieldNames.count)
        var s = text
        while !s.isEmpty {
            guard let eq = s.firstIndex(of: "=") else {
                throw fail(line, "expected `<name>=<value>`, saw `\(clip(s))`")
            }
            let key = String(s[..<eq])
            guard let k = fieldNames.firstIndex(of: key) else {
                throw fail(line, "expected one of \(fieldNames.joined(separator: ", ")), saw `\(clip(key[...]))=`")
            }
            if values[k] != nil { throw fail(line, "`\(key)=` appears twice") }
            s = s[s.index(after: eq)...]
            let value: Substring
            if s.first == "[" {
                guard k >= 2, let close = s.firstIndex(of: "]") else {
                    throw fail(line, k < 2 ? "expected a number of milliseconds for `\(key)=`, saw a list"
                        : "expected `]` to close the list of `\(key)=`, saw `\(clip(s))`")
                }
                value = s[...close]
                s = s[s.index(after: close)...]
            } else if let comma = s.firstRange(of: ", ") {
                value = s[..<comma.lowerBound]
                s = s[comma.lowerBound...]
            } else {
                value = s
                s = s[s.endIndex...]
            }
            values[k] = try number(value, key: key, isSize: k >= 2, line: line)
            if !s.isEmpty {
                guard s.hasPrefix(", ") else { throw fail(line, "expected `, ` after the value of `\(key)=`, saw `\(clip(s))`") }
                s = s.dropFirst(2)
            }
        }
        var result: [Double] = []
        for (k, v) in values.enumerated() {
            guard let v else { throw fail(line, "expected `\(fieldNames[k])=` in the node's metadata, saw `\(clip(text))`") }
            result.append(v)
        }
        return result
    }

    /// A finite, non-negative number; for sizes also a `[a; b; ...]` list, summed.
    static func number(_ text: Substring, key: String, isSize: Bool, line: Int) throws -> Double {
        let unit = isSize ? "bytes" : "milliseconds"
        var items: [Substring] = [text]
        if text.first == "[" {
            let inner = text.dropFirst().dropLast()
            items = inner.allSatisfy(\.isWhitespace) ? [] : inner.split(omittingEmptySubsequences: false) { $0 == ";" || $0 == "," }
        }
        var sum = 0.0
        for item in items {
            let t = trimmed(item)
            guard let v = Double(String(t)) else {
                throw fail(line, "expected a number of \(unit) for `\(key)=`, saw `\(clip(t))`")
            }
            guard v.isFinite, v >= 0, !isSize || v <= Double(Validation.maxBytes) else {
                throw fail(line, "expected a finite number of \(unit) >= 0\(isSize ? " and <= 2^53" : "") for `\(key)=`, saw \(clip(t))")
            }
            sum += v
        }
        return sum
    }

    static func isNodeID(_ s: Substring) -> Bool {
        !s.isEmpty && !s.contains { $0.isWhitespace }
    }

    static func trimmed(_ s: Substring) -> Substring {
        guard let start = s.firstIndex(where: { !$0.isWhitespace }), let end = s.lastIndex(where: { !$0.isWhitespace })
        else { return s[s.endIndex...] }
        return s[start...end]
    }

    /// Text quoted in a message, cut to a readable length.
    static func clip(_ s: Substring) -> String {
        s.count <= 60 ? String(s) : String(s.prefix(57)) + "..."
    }
}

// MARK: - Linearisation

extension PipeDreamGraph {
    /// The chain the planner sees. `Input` nodes and their edges are left out. The other nodes
    /// are sorted topologically (ties go to the node written first); the chain is cut after a
    /// node wherever at most one edge leads from the nodes before the cut to the nodes after it.
    /// A region between two cuts with more than one node (a fork, its branches and their join)
    /// becomes one block.
    public func chain() throws -> [Block] {
        let layers = nodes.indices.filter { !nodes[$0].isInput }
        guard !layers.isEmpty else {
            throw Self.fail(nodes[0].line, "expected at least one node that is not an `Input` node; every node's description starts with `Input`")
        }
        var successors = Array(repeating: [Int](), count: nodes.count)
        var predecessors = Array(repeating: [(node: Int, line: Int)](), count: nodes.count)
        for e in edges where !nodes[e.from].isInput && !nodes[e.to].isInput {
            successors[e.from].append(e.to)
            predecessors[e.to].append((e.from, e.line))
        }
        let order = try topologicalOrder(layers, successors: successors, predecessors: predecessors)

        var blocks: [Block] = []
        var current: [Int] = []
        var pending: [Int: Int] = [:]  // producer -> out-edges not yet consumed
        var openEdges = 0
        for v in order {
            current.append(v)
            for p in predecessors[v] {
                pending[p.node, default: 0] -= 1
                if pending[p.node] == 0 { pending[p.node] = nil }
            }
            openEdges += successors[v].count - predecessors[v].count
            if !successors[v].isEmpty { pending[v] = successors[v].count }
            guard openEdges <= 1 else { continue }
            // The one open edge carries the block's output; with none, the last node's output is the model's.
            let producer = pending.first?.key ?? v
            blocks.append(block(current, output: producer))
            current = []
        }
        // openEdges is 0 after the last node of a DAG, so `current` is always empty here.
        if !current.isEmpty { blocks.append(block(current, output: current[current.count - 1])) }
        return blocks
    }

    func block(_ members: [Int], output: Int) -> Block {
        var b = Block(nodes: members, name: members.map { nodes[$0].id }.joined(separator: "+"),
                      forwardMilliseconds: 0, backwardMilliseconds: 0, stashBytes: 0,
                      outputBytes: nodes[output].activationBytes, parameterBytes: 0)
        for v in members {
            b.forwardMilliseconds += nodes[v].forwardMilliseconds
            b.backwardMilliseconds += nodes[v].backwardMilliseconds
            b.stashBytes += nodes[v].activationBytes
            b.parameterBytes += nodes[v].parameterBytes
        }
        return b
    }

    /// Kahn's algorithm, taking the ready node written first each time. A cycle is reported
    /// at the line of one of its edges, with the whole cycle in the message.
    func topologicalOrder(_ layers: [Int], successors: [[Int]], predecessors: [[(node: Int, line: Int)]]) throws -> [Int] {
        var indegree = predecessors.map(\.count)
        var ready = layers.filter { indegree[$0] == 0 }
        var order: [Int] = []
        order.reserveCapacity(layers.count)
        while !ready.isEmpty {
            var k = 0
            for j in ready.indices where ready[j] < ready[k] { k = j }
            let v = ready.remove(at: k)
            order.append(v)
            for w in successors[v] {
                indegree[w] -= 1
                if indegree[w] == 0 { ready.append(w) }
            }
        }
        guard order.count < layers.count else { return order }
        // Every node left has a predecessor that is also left: walk backwards until one repeats.
        var walk: [Int] = []
        var position: [Int: Int] = [:]
        var v = layers.first { indegree[$0] > 0 } ?? layers[0]
        var lineOf: [Int] = []
        while position[v] == nil {
            position[v] = walk.count
            walk.append(v)
            guard let p = predecessors[v].first(where: { indegree[$0.node] > 0 }) else { break }
            lineOf.append(p.line)
            v = p.node
        }
        let start = position[v] ?? 0
        // Printed forwards, from the node written first.
        var cycle = Array(walk[start...].reversed())
        if let first = cycle.indices.min(by: { cycle[$0] < cycle[$1] }) { cycle = Array(cycle[first...] + cycle[..<first]) }
        let ids = cycle.map { nodes[$0].id }
        let line = lineOf.count > start ? lineOf[start...].min() ?? lineOf[start] : nodes[v].line
        throw Self.fail(line, "expected an acyclic graph, saw the cycle \((ids + ids.prefix(1)).joined(separator: " -> "))")
    }
}

// MARK: - Conversion

extension PipeDreamGraph {
    /// The chain as a `ModelSpec` for ONE micro-batch: PipeDream profiles a whole mini-batch,
    /// so times and activation sizes are divided by `microBatchesPerMiniBatch` (parameters are
    /// not). A block's stash is the sum of its nodes' activation sizes (each node's output,
    /// which its backward needs); `inputBytes` is the sum of the `Input` nodes' activation sizes.
    public func modelSpec(name: String = "pipedream", microBatchesPerMiniBatch: Int = 1,
                          stateBytesPerParamByte: Double = 0) throws -> ModelSpec {
        guard (1...Validation.maxMicroBatches).contains(microBatchesPerMiniBatch) else {
            throw VPipeError.invalidField(
                field: "micro_batches_per_mini_batch",
                message: "must be between 1 and \(Validation.maxMicroBatches), got \(microBatchesPerMiniBatch)")
        }
        let n = Double(microBatchesPerMiniBatch)
        var layers: [LayerSpec] = []
        for b in try chain() {
            let line = nodes[b.nodes[0]].line
            let profile = LayerProfile(
                fwdSeconds: try Self.seconds(b.forwardMilliseconds / 1000 / n, block: b, line: line),
                bwdSeconds: try Self.seconds(b.backwardMilliseconds / 1000 / n, block: b, line: line),
                stashBytes: try Self.bytes(b.stashBytes / n, what: "activations", block: b.name, line: line),
                outputBytes: try Self.bytes(b.outputBytes / n, what: "output", block: b.name, line: line),
                paramBytes: try Self.bytes(b.parameterBytes, what: "parameters", block: b.name, line: line))
            layers.append(LayerSpec(name: b.name, profile: profile))
        }
        let inputs = nodes.filter(\.isInput)
        let input = try Self.bytes(inputs.reduce(0) { $0 + $1.activationBytes } / n, what: "input",
                                   block: inputs.map(\.id).joined(separator: "+"), line: inputs.first?.line ?? 1)
        return ModelSpec(name: name, layers: layers, inputBytes: input, stateBytesPerParamByte: stateBytesPerParamByte)
    }

    static func seconds(_ v: Double, block: Block, line: Int) throws -> Double {
        guard v.isFinite else { throw fail(line, "the times of `\(block.name)` add up to more than a Double holds") }
        return v
    }

    /// Whole bytes, rounded up (a fraction of a byte after the division still occupies one).
    static func bytes(_ v: Double, what: String, block: String, line: Int) throws -> Int {
        let r = v.rounded(.up)
        guard r.isFinite, r >= 0, r <= Double(Validation.maxBytes) else {
            throw fail(line, "the \(what) of `\(clip(block[...]))` add up to \(v) bytes, more than 2^53")
        }
        return Int(r)
    }
}
