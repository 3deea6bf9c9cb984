import CMPI

/// What each rank has to say about a checkpoint (its shard, or why it refuses one), told to
/// every rank: one broadcast per rank over the session's communicator. Every rank calls it
/// at the same point (save and load are collective under TRANSPORT_MPI).
enum CheckpointCollective {
    /// Rank r's message (nil: nothing to report) for every rank r in `from` (default: all).
    static func exchange(_ mine: String?, transport t: MPITransport, from roots: [Int]? = nil) throws -> [String?] {
        var out: [String?] = Array(repeating: nil, count: t.size)
        for root in roots ?? Array(0..<t.size) {
            let payload: [UInt8] = root == t.rank ? (mine.map { [1] + Array($0.utf8) } ?? [0]) : []
            let bytes = try MPIRuntime.broadcast(root == t.rank ? payload : nil, error: nil, root: root, comm: t.comm)
            if bytes.first == 1 { out[root] = String(decoding: bytes.dropFirst(), as: UTF8.self) }
        }
        return out
    }
}
