import CMPI
#if canImport(Glibc)
import Glibc
#endif
import VPipeCore
import VPipeRuntime

/// `mpirun -np 2 vpipe-bench mpi` (`make bench-mpi`): the MPI transport's cost.
///  1. Activation transfer: a tensor from stage 0 to stage 1 and back through MPITransport
///     (header + payload, pre-posted receives, polling), against a plain blocking MPI
///     ping-pong (MPI_Send/MPI_Recv) of the same bytes. One-way time = round trip / 2.
///  2. Per-micro-batch overhead: one training step of a 2-stage MLP with the MPI transport
///     (two processes) against the in-process transport (two threads), per micro-batch.
enum MPIBench {
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    static func run() throws {
        let (rank, size) = try MPIRuntime.world()
        guard size == 2 else {
            if rank == 0 { print("vpipe-bench mpi: run with mpirun -np 2") }
            return
        }
        let comm = try MPIRuntime.duplicateWorld()
        let transport = try MPITransport(comm: comm, timeout: 30)
        if rank == 0 {
            print("activation transfer, one way (round trip / 2), 2 ranks on one machine")
            print("bytes        plain MPI ping-pong        MPITransport               transport / plain")
        }
        var bytes = 4096
        while bytes <= 64 << 20 {
            let n = bytes / 4
            let reps = max(5, min(2000, (256 << 20) / bytes))
            let buffer = UnsafeMutablePointer<Float>.allocate(capacity: n)
            buffer.initialize(repeating: 1, count: n)
            // Plain ping-pong.
            vp_mpi_barrier(comm)
            var t0 = now()
            for _ in 0..<reps {
                if rank == 0 {
                    vp_mpi_send(buffer, Int32(n), vp_mpi_float(), 1, 7, comm)
                    vp_mpi_recv(buffer, Int32(n), vp_mpi_float(), 1, 7, comm, vp_mpi_status_ignore())
                } else {
                    vp_mpi_recv(buffer, Int32(n), vp_mpi_float(), 0, 7, comm, vp_mpi_status_ignore())
                    vp_mpi_send(buffer, Int32(n), vp_mpi_float(), 0, 7, comm)
                }
            }
            let plain = (now() - t0) / Double(reps) / 2
            buffer.deallocate()
            // The transport: activation forward, gradient back, as between two stages.
            let tensor = try Tensor(shape: [n / 16, 16], in: nil, for: "bench")
            vp_mpi_barrier(comm)
            t0 = now()
            for _ in 0..<reps {
                transport.reset()
                if rank == 0 {
                    try transport.prepare(stage: 0, actions: [ScheduleAction(stage: 0, kind: .recvGradient, microBatch: 0)], space: nil)
                    try transport.sendActivation(from: 0, microBatch: 0, tensor)
                    _ = try transport.receiveGradient(at: 0, microBatch: 0, into: nil)
                } else {
                    try transport.prepare(stage: 1, actions: [ScheduleAction(stage: 1, kind: .recvActivation, microBatch: 0)], space: nil)
                    let x = try transport.receiveActivation(at: 1, microBatch: 0, into: nil)
                    try transport.sendGradient(from: 1, microBatch: 0, x)
                }
                try transport.finishSends()
            }
            let viaTransport = (now() - t0) / Double(reps) / 2
            if rank == 0 {
                func cell(_ t: Double) -> String {
                    "\(formatSeconds(t)) \(formatFixed(Double(bytes) / t / 1e9, decimals: 2)) GB/s".padding(toLength: 27, withPad: " ", startingAt: 0)
                }
                print(formatBytes(Double(bytes)).padding(toLength: 13, withPad: " ", startingAt: 0) + cell(plain) + cell(viaTransport)
                      + formatFixed(viaTransport / plain, decimals: 2))
            }
            bytes *= 4
        }
        transport.close()
        try stepOverhead(rank: rank, comm: comm)
    }

    /// Mean step time of a 2-stage MLP, MPI vs in-process, per micro-batch.
    static func stepOverhead(rank: Int, comm: MPI_Comm) throws {
        for (width, rows) in [(16, 64), (256, 512)] {
            let kinds: [LayerKind] = [.linear(inFeatures: 8, outFeatures: width), .activation(.relu), .linear(inFeatures: width, outFeatures: width),
                                      .activation(.relu), .linear(inFeatures: width, outFeatures: 4), .softmaxCrossEntropy]
            let model = ModelSpec(name: "mlp6", layers: kinds.enumerated().map { i, k in
                LayerSpec(name: "l\(i)", profile: LayerProfile(fwdSeconds: 0, bwdSeconds: 0, stashBytes: 0, outputBytes: 0, paramBytes: 0), kind: k)
            }, inputBytes: 0)
            let m = 8
            let cluster = ClusterSpec.uniform(count: 2, device: DeviceSpec(name: "cpu", memoryBytes: 1 << 30, hostBandwidth: 1e10), link: LinkSpec(bandwidth: 1e10))
            var options = TrainingOptions(schedule: .oneFOneB, microBatches: m, seed: 7, optimizer: .sgd(learningRate: 0.01, momentum: 0))
            let layout = PlanLayout(stageStarts: [0, 3], layerCount: 6, policies: Array(repeating: .keep, count: 6))
            let x = (0..<(rows * 8)).map { Float($0 % 17) / 17 - 0.5 }
            let y = (0..<rows).map { Int32($0 % 4) }
            func time(_ session: TrainingSession) throws -> Double {
                for _ in 0..<3 { _ = try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { try session.step(inputs: xs, targets: $0) } } }
                let steps = 30
                let t0 = now()
                for _ in 0..<steps { _ = try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { try session.step(inputs: xs, targets: $0) } } }
                return (now() - t0) / Double(steps)
            }
            var inProcess = 0.0
            if rank == 0 {
                let s = try TrainingSession(SessionConfig(model: model, cluster: cluster, plan: layout, training: options))
                inProcess = try time(s)
                s.close()
            }
            // Rank 1 waits without spinning while rank 0 measures alone.
            var request: MPI_Request?
            vp_mpi_ibarrier(comm, &request)
            var flag: Int32 = 0
            while flag == 0 { vp_mpi_test(&request, &flag, vp_mpi_status_ignore()); usleep(200) }
            options.transport = .mpi
            let s = try TrainingSession(SessionConfig(model: model, cluster: cluster, plan: layout, training: options))
            let distributed = try time(s)
            s.close()
            if rank == 0 {
                if width == 16 { print("\ntraining step, 2-stage MLP (6 layers), 1F1B, m = \(m)") }
                print("width \(width), \(rows) rows: in-process \(formatSeconds(inProcess))/step, MPI \(formatSeconds(distributed))/step; "
                      + "per micro-batch \(formatSeconds(inProcess / Double(m))) vs \(formatSeconds(distributed / Double(m))), "
                      + "overhead \(formatSeconds((distributed - inProcess) / Double(m)))/micro-batch")
            }
        }
    }
}
