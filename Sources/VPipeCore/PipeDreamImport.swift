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
/// Parsing is linear in the file's size; linearisation (PipeDreamLinearisation.swift) is
/// O(V·R + E) for V nodes, E edges and at most R nodes ready or tensors open at once (small
/// for real models).
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

    /// One layer of the linearised chain: one node of the graph, and the cut right after it.
    /// Numbers are the node's, in the file's units (ms and bytes per mini-batch).
    public struct ChainLayer: Sendable, Equatable {
        /// Index into `PipeDreamGraph.nodes`.
        public var node: Int
        public var name: String
        public var forwardMilliseconds: Double
        public var backwardMilliseconds: Double
        /// The node's activation size: its output, which its backward (and its consumers') needs.
        public var stashBytes: Double
        /// The bytes of every tensor crossing the cut after this layer: the outputs of the
        /// layers up to here that a later layer consumes, each counted once however many
        /// later layers read it. After the last layer: its own output (the model's).
        public var outputBytes: Double
        /// The producers of those tensors (indices into `nodes`), in chain order.
        public var crossing: [Int]
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

// MARK: - Conversion

extension PipeDreamGraph {
    /// The chain as a `ModelSpec` for ONE micro-batch: PipeDream profiles a whole mini-batch,
    /// so times and activation sizes are divided by `microBatchesPerMiniBatch` (parameters are
    /// not). One layer per node; a layer's stash is its node's activation size (its output,
    /// which its backward needs), its output the bytes crossing the cut after it;
    /// `inputBytes` is the sum of the `Input` nodes' activation sizes.
    public func modelSpec(name: String = "pipedream", microBatchesPerMiniBatch: Int = 1,
                          stateBytesPerParamByte: Double = 0) throws -> ModelSpec {
        guard (1...Validation.maxMicroBatches).contains(microBatchesPerMiniBatch) else {
            throw VPipeError.invalidField(
                field: "micro_batches_per_mini_batch",
                message: "must be between 1 and \(Validation.maxMicroBatches), got \(microBatchesPerMiniBatch)")
        }
        let n = Double(microBatchesPerMiniBatch)
        var layers: [LayerSpec] = []
        for l in try chain() {
            let line = nodes[l.node].line
            let profile = LayerProfile(
                fwdSeconds: try Self.seconds(l.forwardMilliseconds / 1000 / n, layer: l.name, line: line),
                bwdSeconds: try Self.seconds(l.backwardMilliseconds / 1000 / n, layer: l.name, line: line),
                stashBytes: try Self.bytes(l.stashBytes / n, what: "activations of", name: l.name, line: line),
                outputBytes: try Self.bytes(l.outputBytes / n, what: "tensors crossing the cut after", name: l.name, line: line),
                paramBytes: try Self.bytes(l.parameterBytes, what: "parameters of", name: l.name, line: line))
            layers.append(LayerSpec(name: l.name, profile: profile))
        }
        let inputs = nodes.filter(\.isInput)
        let input = try Self.bytes(inputs.reduce(0) { $0 + $1.activationBytes } / n, what: "input nodes",
                                   name: inputs.map(\.id).joined(separator: "+"), line: inputs.first?.line ?? 1)
        return ModelSpec(name: name, layers: layers, inputBytes: input, stateBytesPerParamByte: stateBytesPerParamByte)
    }

    static func seconds(_ v: Double, layer: String, line: Int) throws -> Double {
        guard v.isFinite else { throw fail(line, "the times of `\(layer)` add up to more than a Double holds") }
        return v
    }

    /// Whole bytes, rounded up (a fraction of a byte after the division still occupies one).
    static func bytes(_ v: Double, what: String, name: String, line: Int) throws -> Int {
        let r = v.rounded(.up)
        guard r.isFinite, r >= 0, r <= Double(Validation.maxBytes) else {
            throw fail(line, "the \(what) `\(clip(name[...]))` add up to \(v) bytes, more than 2^53")
        }
        return Int(r)
    }
}
