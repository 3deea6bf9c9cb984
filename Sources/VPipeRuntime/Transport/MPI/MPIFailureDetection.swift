import CMPI
#if canImport(Glibc)
import Glibc
#endif
import VPipeCore

/// Failure detection: every wait polls with a timeout, pings silent peers, declares a peer
/// that does not answer lost, and spreads the first failure to every rank (abort tag).
extension MPITransport {
    // MARK: Control: abort, ping, pong

    /// Answers pings, notes pongs, reaps control sends, and notes an abort from another rank.
    func pollControl() {
        var status = MPI_Status()
        var flag: Int32 = 0
        if Self.active(pingReceive.request), vp_mpi_test(&pingReceive.request, &flag, &status) == vp_mpi_success(), flag != 0 {
            sendControl(to: Int(status.MPI_SOURCE), tag: Self.pongTag, [0])
            try? postControl(pingReceive, tag: Self.pingTag)
        }
        flag = 0
        if Self.active(pongReceive.request), vp_mpi_test(&pongReceive.request, &flag, &status) == vp_mpi_success(), flag != 0 {
            lastPong[Int(status.MPI_SOURCE)] = monotonicSeconds()
            try? postControl(pongReceive, tag: Self.pongTag)
        }
        flag = 0
        if Self.active(abortReceive.request), vp_mpi_test(&abortReceive.request, &flag, &status) == vp_mpi_success(), flag != 0 {
            var count: Int32 = 0
            vp_mpi_get_count(&status, vp_mpi_byte(), &count)
            let bytes = UnsafeRawBufferPointer(start: abortReceive.buffer, count: Int(max(0, count)))
            let source = Int(status.MPI_SOURCE)
            let lost = bytes.first == 1
            let text = String(decoding: bytes.dropFirst(), as: UTF8.self)
            let e = RuntimeError.failed(lost ? "rank \(source) (stage \(source)) stopped the step: \(text)" : "rank \(source) (stage \(source)) failed: \(text)")
            fail(e, lost: lost, broadcast: false)
        }
        controlSends.removeAll { c in
            var f: Int32 = 0
            return vp_mpi_test(&c.request, &f, vp_mpi_status_ignore()) != vp_mpi_success() || f != 0
        }
    }

    func sendControl(to destination: Int, tag: Int32, _ bytes: [UInt8]) {
        let c = Control(capacity: max(1, bytes.count))
        bytes.withUnsafeBytes { c.buffer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        if vp_mpi_isend(c.buffer, Int32(bytes.count), vp_mpi_byte(), Int32(destination), tag, comm, &c.request) == vp_mpi_success() {
            controlSends.append(c)
        }
    }

    /// Records the first failure; tells every other rank when it is ours to tell.
    func fail(_ error: Error, lost: Bool, broadcast: Bool) {
        if lost {
            peerLost = true
            MPIRuntime.peerLost = true
        }
        guard failure == nil else { return }
        failure = error
        guard broadcast else { return }
        let text = Array("\(error)".utf8.prefix(1000))
        for r in 0..<size where r != rank { sendControl(to: r, tag: Self.abortTag, [lost ? 1 : 0] + text) }
        // Small messages leave eagerly; give them a moment to do so before the caller may exit.
        let deadline = monotonicSeconds() + 0.2
        while !controlSends.isEmpty && monotonicSeconds() < deadline { pollControl(); sleepSeconds(0.0002) }
    }

    /// Polls until `done` (progressing every posted receive meanwhile). After `timeout` s
    /// without completion, pings `peers`; one that does not answer within the grace period
    /// is lost. With `throwOnFailure`, stops at the first failure (local or from a peer).
    func wait(peers: [Int], _ what: String, throwOnFailure: Bool = true, _ done: () throws -> Bool) throws {
        let start = monotonicSeconds()
        defer { waitSeconds += monotonicSeconds() - start }
        var deadline = start + timeout
        var pingedAt: Double?
        var spins = 0
        while true {
            if try done() { return }
            pollControl()
            if throwOnFailure, let failure { throw failure }
            for inc in incoming.values { _ = try progress(inc) }
            try testSends()
            let now = monotonicSeconds()
            if let t = pingedAt {
                let silent = peers.filter { lastPong[$0, default: -1] < t }
                if silent.isEmpty {
                    pingedAt = nil
                    deadline = now + timeout
                } else if now > t + grace {
                    let r = silent[0]
                    let e = RuntimeError.failed("rank \(r) (stage \(r)) did not answer within \(formatTimeout(timeout)) s (rank \(rank) was \(what))")
                    fail(e, lost: true, broadcast: true)
                    throw failure ?? e
                }
            } else if now > deadline {
                if peers.isEmpty { deadline = now + timeout; continue }
                pingedAt = now
                for p in peers { sendControl(to: p, tag: Self.pingTag, [0]) }
            }
            spins += 1
            if spins > 200 { sleepSeconds(0.00005) }
        }
    }

    func formatTimeout(_ t: Double) -> String {
        t == t.rounded() ? String(Int(t)) : String(t)
    }
}
