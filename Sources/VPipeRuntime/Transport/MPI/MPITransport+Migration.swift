import CMPI
#if canImport(Glibc)
import Glibc
#endif
import VPipeCore

/// Live migration between ranks: weights and optimizer state (pre-copy tag), gradients
/// (gradient tag), straight into the receiver's tensors, completed with the failure protocol.
extension MPITransport {
    // MARK: Live migration

    public func migrationSend(_ tensors: [Tensor], to peer: Int, gradients: Bool) throws {
        try postTransfers(tensors, peer: peer, receive: false, tag: gradients ? Self.migrationGradientTag : Self.migrationTag)
    }

    public func migrationReceive(_ tensors: [Tensor], from peer: Int, gradients: Bool) throws {
        try postTransfers(tensors, peer: peer, receive: true, tag: gradients ? Self.migrationGradientTag : Self.migrationTag)
    }

    func postTransfers(_ tensors: [Tensor], peer: Int, receive: Bool, tag: Int32) throws {
        if let failure { throw failure }
        guard peer >= 0 && peer < size && peer != rank else {
            throw RuntimeError.failed("rank \(rank): no rank \(peer) to migrate to or from (the world has \(size) ranks)")
        }
        for t in tensors {
            guard t.count < Int(Int32.max) else { throw RuntimeError.failed("rank \(rank): cannot migrate a tensor of shape \(t.shape) over MPI") }
            let x = Transfer(peer: peer, receive: receive, tensor: t)
            if receive {
                try MPIRuntime.check(vp_mpi_irecv(try t.hostAddressForTransfer(), Int32(t.count), vp_mpi_float(), Int32(peer), tag, comm, &x.request), "MPI_Irecv")
            } else {
                try MPIRuntime.check(vp_mpi_isend(try t.hostAddressForTransfer(), Int32(t.count), vp_mpi_float(), Int32(peer), tag, comm, &x.request), "MPI_Isend")
            }
            transfers.append(x)
            transferBytes += t.bytes
        }
    }

    public func completeMigration() throws -> Int {
        do {
            if let poisoned { throw poisoned }
            let peers = Array(Set(transfers.map(\.peer))).sorted()
            try wait(peers: peers, "migrating layers") {
                var keep: [Transfer] = []
                for x in self.transfers where !(try self.test(&x.request)) { keep.append(x) }
                self.transfers = keep
                return keep.isEmpty
            }
        } catch {
            throw poison(failure ?? error)
        }
        defer { transferBytes = 0 }
        return transferBytes
    }

    public func agreeMigration(ok: Bool) throws -> Bool {
        let flags = UnsafeMutablePointer<Int32>.allocate(capacity: 2)
        defer { flags.deallocate() }
        flags[0] = ok ? 1 : 0
        flags[1] = 0
        var request: MPI_Request?
        do {
            if let poisoned { throw poisoned }
            try MPIRuntime.check(vp_mpi_iallreduce(flags, flags + 1, 1, vp_mpi_int(), vp_mpi_min(), comm, &request), "MPI_Iallreduce")
            try wait(peers: (0..<size).filter { $0 != rank }, "agreeing on the migration") { try self.test(&request) }
        } catch {
            throw poison(failure ?? error)
        }
        return flags[1] != 0
    }
}
