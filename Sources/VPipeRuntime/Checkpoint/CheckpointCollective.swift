/// What each rank has to say about a checkpoint (its shard, or why it refuses one), told to
/// every rank: one bounded broadcast per rank (MPIBoundedBroadcast.swift), so a rank that
/// dies during a save or a load fails every other rank, naming it, within the transport's
/// failure timeout instead of leaving them waiting. Every rank calls it at the same point
/// (save and load are collective under TRANSPORT_MPI).
enum CheckpointCollective {
    /// Rank r's message (nil: nothing to report) for every rank r in `from` (default: all).
    static func exchange(_ mine: String?, transport t: MPITransport, from roots: [Int]? = nil, _ what: String) throws -> [String?] {
        var out: [String?] = Array(repeating: nil, count: t.size)
        for root in roots ?? Array(0..<t.size) {
            let payload: [UInt8] = root == t.rank ? (mine.map { [1] + Array($0.utf8) } ?? [0]) : []
            let bytes = try t.boundedBroadcast(root == t.rank ? payload : nil, error: nil, root: root, what)
            if bytes.first == 1 { out[root] = String(decoding: bytes.dropFirst(), as: UTF8.self) }
        }
        return out
    }
}

/// Test hooks of the MPI failure tests (Tests/mpi/run.sh).
public enum CheckpointTestHooks {
    /// Runs on this process inside a save under TRANSPORT_MPI, after its shard is written
    /// and before the ranks exchange what they wrote (a test makes a rank die there).
    nonisolated(unsafe) public static var afterShardWritten: (() -> Void)?
}
