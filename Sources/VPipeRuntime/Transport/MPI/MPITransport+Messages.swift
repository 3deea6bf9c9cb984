import CMPI
#if canImport(Glibc)
import Glibc
#endif
import VPipeCore

/// Point-to-point stage traffic: a fixed-size header (the shape) and the float32 payload,
/// both non-blocking; receives progress while the stage computes or waits.
extension MPITransport {
    // MARK: Messages

    func send(_ key: Key, to destination: Int, _ tensor: Tensor) throws {
        if let failure { throw failure }
        guard destination >= 0 && destination < size else {
            throw RuntimeError.failed("rank \(rank): no rank \(destination) to send to (the world has \(size) ranks)")
        }
        guard tensor.shape.count < Self.headerWords, tensor.count < Int(Int32.max) else {
            throw RuntimeError.failed("rank \(rank): cannot send a tensor of shape \(tensor.shape) over MPI")
        }
        let o = Outgoing(destination: destination, tensor: tensor)
        o.header[0] = Int64(tensor.shape.count)
        for (d, v) in tensor.shape.enumerated() { o.header[d + 1] = Int64(v) }
        let tag = Self.headerTag(key.microBatch, gradient: key.gradient)
        try MPIRuntime.check(vp_mpi_isend(o.header, Int32(Self.headerWords * 8), vp_mpi_byte(), Int32(destination), tag, comm, &o.requests[0]), "MPI_Isend")
        try MPIRuntime.check(vp_mpi_isend(try tensor.hostAddressForTransfer(), Int32(tensor.count), vp_mpi_float(), Int32(destination), tag + 1, comm, &o.requests[1]), "MPI_Isend")
        outgoing.append(o)
        try testSends()
    }

    func receive(_ key: Key, _ label: String) throws -> Tensor {
        if let failure { throw failure }
        guard let inc = incoming[key] else { throw RuntimeError.failed("rank \(rank): \(label) was not expected by the schedule") }
        try wait(peers: [inc.source], label) { try self.progress(inc) }
        incoming[key] = nil
        guard let t = inc.tensor else { throw RuntimeError.failed("rank \(rank): \(label) arrived without a payload") }
        return t
    }

    /// Advances one receive: header arrived → post the payload receive; payload arrived → done.
    func progress(_ inc: Incoming) throws -> Bool {
        if inc.complete { return true }
        if inc.headerRequest != nil {
            guard try test(&inc.headerRequest) else { return false }
            let dims = Int(inc.header[0])
            guard dims >= 0 && dims < Self.headerWords else { throw RuntimeError.failed("rank \(rank): malformed message header from rank \(inc.source)") }
            let shape = (0..<dims).map { Int(inc.header[$0 + 1]) }
            let t = try Tensor(shape: shape, in: space, for: "rank \(rank) receive buffer from rank \(inc.source)")
            inc.tensor = t
            try MPIRuntime.check(vp_mpi_irecv(try t.hostAddressForTransfer(), Int32(t.count), vp_mpi_float(), Int32(inc.source), inc.tag + 1, comm, &inc.payloadRequest), "MPI_Irecv")
        }
        guard inc.payloadRequest != nil else { return inc.complete }
        if try test(&inc.payloadRequest) { inc.complete = true }
        return inc.complete
    }

    /// A request not yet completed (completion leaves nil or MPI_REQUEST_NULL).
    static func active(_ r: MPI_Request?) -> Bool { r != nil && r != vp_mpi_request_null() }

    func test(_ request: inout MPI_Request?) throws -> Bool {
        if !Self.active(request) { return true }
        var flag: Int32 = 0
        try MPIRuntime.check(vp_mpi_test(&request, &flag, vp_mpi_status_ignore()), "MPI_Test")
        if flag != 0 { request = nil }
        return flag != 0
    }

    /// Releases the sends that completed (their buffers may be reused).
    func testSends() throws {
        var keep: [Outgoing] = []
        for o in outgoing {
            let a = try test(&o.requests[0]), b = try test(&o.requests[1])
            if !(a && b) { keep.append(o) }
        }
        outgoing = keep
    }
}
