// Linearisation of a PipeDream profile graph into the chain the planner cuts
// (docs/pipedream-import.md, "Linearisation").
//
// PipeDream's optimizer cuts a DAG at its *states*: each state is an antichain of the graph,
// and a stage ends at a state by taking every node at or before the antichain (a down-closed
// set). A straight pipeline is a sequence of nested down-closed sets. A chain has one cut per
// prefix, so we lay the nodes out in one topological order: every prefix of a topological
// order is down-closed, so every cut of the chain is a cut PipeDream could make, and the
// bytes a cut costs are those of every tensor produced before it and consumed after it.

extension PipeDreamGraph {
    /// The chain the planner sees: one layer per node, in topological order.
    ///
    /// - `Input` nodes are left out with their edges (their sizes become the model's input),
    ///   and so are sinks whose description starts with `__getitem__` (unused halves of a
    ///   tuple such as an LSTM's hidden state), which PipeDream's optimizer removes too.
    /// - When several nodes are ready (parallel branches), the one after which the fewest
    ///   bytes cross the cut goes first (`topologicalOrder`), then the one whose id has the
    ///   smaller number (`node12` before `node20`; the profiler numbers nodes in the order the
    ///   forward pass ran them), then the one written first; so the order does not depend on
    ///   the order of the lines in the file.
    /// - Each layer's `outputBytes` is the sum of the activation sizes of the nodes placed
    ///   so far that a later node consumes: what crosses the cut after that layer.
    public func chain() throws -> [ChainLayer] {
        var kept = nodes.indices.map { !nodes[$0].isInput }
        var successors = Array(repeating: [Int](), count: nodes.count)
        var predecessors = Array(repeating: [(node: Int, line: Int)](), count: nodes.count)
        for e in edges where kept[e.from] && kept[e.to] {
            successors[e.from].append(e.to)
            predecessors[e.to].append((e.from, e.line))
        }
        // PipeDream's one pass over the sinks of the graph without its inputs.
        for v in nodes.indices where kept[v] && successors[v].isEmpty && nodes[v].description.hasPrefix("__getitem__") {
            kept[v] = false
            for p in predecessors[v] { successors[p.node].removeAll { $0 == v } }
            predecessors[v] = []
        }
        let layers = nodes.indices.filter { kept[$0] }
        guard !layers.isEmpty else {
            throw Self.fail(nodes[0].line, "expected at least one node that is not an `Input` node or an unused `__getitem__`; the file has none")
        }
        let order = try topologicalOrder(layers, successors: successors, predecessors: predecessors)

        var chain: [ChainLayer] = []
        chain.reserveCapacity(order.count)
        var unread: [Int: Int] = [:]  // producer -> consumers not yet placed
        var open: [Int] = []           // producers with unread consumers, in chain order
        for (position, v) in order.enumerated() {
            for p in predecessors[v] {
                unread[p.node, default: 0] -= 1
                if unread[p.node] == 0 {
                    unread[p.node] = nil
                    open.removeAll { $0 == p.node }
                }
            }
            if !successors[v].isEmpty {
                unread[v] = successors[v].count
                open.append(v)
            }
            let last = position == order.count - 1
            // Summed afresh at each cut (not kept as a running total) so no rounding drifts in.
            let crossing = last ? nodes[v].activationBytes : open.reduce(0.0) { $0 + nodes[$1].activationBytes }
            let n = nodes[v]
            chain.append(ChainLayer(node: v, name: n.id, forwardMilliseconds: n.forwardMilliseconds,
                                    backwardMilliseconds: n.backwardMilliseconds, stashBytes: n.activationBytes,
                                    outputBytes: crossing, crossing: last ? [] : open, parameterBytes: n.parameterBytes))
        }
        return chain
    }

    /// The number at the end of a node id (`node12` -> 12), the profiler's execution order.
    func idNumber(_ v: Int) -> Int? {
        let digits = nodes[v].id.reversed().prefix { $0.isASCII && $0.isNumber }
        return digits.isEmpty || digits.count > 15 ? nil : Int(String(digits.reversed()))
    }

    /// Kahn's algorithm. Of the ready nodes it takes the one after which the fewest bytes
    /// cross the cut, then the one with the smallest id number (ids without a number after
    /// those with one), then the one written first. A cycle is reported at the line of one
    /// of its edges, with the whole cycle in the message.
    ///
    /// Why fewest bytes first: any topological order gives valid cuts, but where the graph
    /// forks each order offers different ones. The chain can only express the cuts that
    /// finish one branch before the next; running first the branch whose partial results
    /// are cheapest to hold open keeps the cheap cuts. A ResNeXt downsample block is the
    /// case that needs it: its 1x1 downsample convolution halves the block input, so
    /// running it before the main branch makes every cut inside the main branch cheaper,
    /// and with the profiler's order (main branch first) PipeDream's own optimizer beat
    /// the chain on resnext50 at 8 stages (docs/pipedream-import.md, "Validation").
    func topologicalOrder(_ layers: [Int], successors: [[Int]], predecessors: [[(node: Int, line: Int)]]) throws -> [Int] {
        let rank = Dictionary(uniqueKeysWithValues: layers.map { v in (v, (idNumber(v) ?? Int.max, v)) })
        var unread = successors.map(\.count)  // consumers of each node not yet placed
        // How the crossing bytes change when v is placed next: its output opens (if read
        // later), and each producer whose last unplaced consumer is v closes.
        func change(_ v: Int) -> Double {
            var d = successors[v].isEmpty ? 0 : nodes[v].activationBytes
            for p in predecessors[v] where unread[p.node] == 1 { d -= nodes[p.node].activationBytes }  // edges are unique
            return d
        }
        var indegree = predecessors.map(\.count)
        var ready = layers.filter { indegree[$0] == 0 }
        var order: [Int] = []
        order.reserveCapacity(layers.count)
        // `ready` holds only nodes of `layers` (each successor is one), so every key exists;
        // the loop ends when nothing is ready, and a cycle is reported below, never trapped on.
        while true {
            let keys = ready.map { v in (change(v), rank[v]?.0 ?? Int.max, rank[v]?.1 ?? v) }
            guard let k = keys.indices.min(by: { keys[$0] < keys[$1] }) else { break }
            let v = ready.remove(at: k)
            order.append(v)
            for p in predecessors[v] { unread[p.node] -= 1 }
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
