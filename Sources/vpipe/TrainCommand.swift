import ArgumentParser
import Foundation
import VPipeCore
import VPipeRuntime
import VPipeWire
#if canImport(Glibc)
import Glibc
#endif

/// `vpipe train`: train a model described by a SessionConfig on synthetic data.
///
/// With `training.transport = TRANSPORT_MPI`, launch one process per stage:
/// `mpirun -np <stages> vpipe train config.pb`; every rank reads the same config.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model from a SessionConfig on synthetic deterministic data and print the losses.",
        discussion: """
            Reads a serialised vpipe.SessionConfig. The data is synthetic and deterministic: step \
            k's mini-batch comes from (--data-seed, k mod 2), inputs in [-1, 1) (token ids for \
            an embedding first layer) and targets in [0, classes). Rank 0 prints the losses. \
            With TRANSPORT_MPI run it under `mpirun -np <stages>`. --compare-in-process also \
            trains the same config in one process (rank 0) and fails unless both loss \
            trajectories are bit-identical. Test hook: VPIPE_TEST_KILL=rank:iteration[:exit] \
            makes that rank die (SIGKILL, or exit(1)) before that step.
            """)

    @Argument(help: "A serialised vpipe.SessionConfig.") var config: String
    @Option(help: "Training steps.") var steps = 10
    @Option(help: "Rows per mini-batch (a multiple of training.micro_batches).") var rows = 32
    @Option(help: "Classes of the targets (default: the last linear layer's width).") var classes: Int?
    @Option(help: "Seed of the synthetic data.") var dataSeed = 0
    @Flag(help: "Also train in-process (rank 0) and require bit-identical losses.") var compareInProcess = false

    func run() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: config))
        let sessionConfig = try data.withUnsafeBytes { try WireSession.sessionConfig($0) }
        let mpi = sessionConfig.training.transport == .mpi
        let world = mpi ? try MPIRuntime.world() : (rank: 0, size: 1)
        let kill = Self.killHook()
        let width = classes ?? Self.classes(sessionConfig.model)
        var losses: [Float] = []
        do {
            let session = try TrainingSession(sessionConfig)
            let features = session.inputFeatures ?? 1
            for k in 1...max(1, steps) {
                if let kill, kill.rank == world.rank, kill.iteration == k {
                    FileHandle.standardError.write(Data("rank \(world.rank): test hook: dying before step \(k)\n".utf8))
                    if kill.exit { Glibc.exit(1) } else { raise(SIGKILL) }
                }
                let (x, y) = Self.batch(rows: rows, features: features, classes: width, tokens: Self.tokens(sessionConfig.model),
                                        seed: dataSeed * 2 + (k - 1) % 2)
                let loss = try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try session.step(inputs: xs, targets: ys) } }
                losses.append(loss)
                if world.rank == 0 { print("step \(k) loss \(Self.show(loss))"); fflush(nil) }
            }
            session.close()
        } catch {
            FileHandle.standardError.write(Data("rank \(world.rank): error: \(error)\n".utf8))
            throw ExitCode(1)
        }
        if mpi, world.rank == world.size - 1, world.size > 1 {
            print("rank \(world.rank): losses \(losses.map(Self.show).joined(separator: " "))")
        }
        if compareInProcess && world.rank == 0 {
            var local = sessionConfig
            local.training.transport = .inProcess
            if local.plan == nil, mpi {
                // The same plan the MPI ranks ran: plan as rank 0 did.
                local.plan = try Planning.plan(PlanRequest(model: local.model, cluster: local.cluster,
                    options: PlanOptions(schedule: local.training.schedule, microBatches: local.training.microBatches, planner: .vpipe))).layout
            }
            let session = try TrainingSession(local)
            let features = session.inputFeatures ?? 1
            var reference: [Float] = []
            for k in 1...max(1, steps) {
                let (x, y) = Self.batch(rows: rows, features: features, classes: width, tokens: Self.tokens(local.model), seed: dataSeed * 2 + (k - 1) % 2)
                reference.append(try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try session.step(inputs: xs, targets: ys) } })
            }
            session.close()
            print("distributed (\(world.size) ranks): \(losses.map(Self.show).joined(separator: " "))")
            print("in-process  (\(session.statistics().stages.count) stages): \(reference.map(Self.show).joined(separator: " "))")
            let same = zip(losses, reference).allSatisfy { $0.bitPattern == $1.bitPattern } && losses.count == reference.count
            print(same ? "loss trajectories identical" : "LOSS TRAJECTORIES DIFFER")
            if !same { throw ExitCode(2) }
        }
    }

    static func show(_ v: Float) -> String { String(format: "%.9g", Double(v)) }

    static func killHook() -> (rank: Int, iteration: Int, exit: Bool)? {
        guard let raw = ProcessInfo.processInfo.environment["VPIPE_TEST_KILL"] else { return nil }
        let parts = raw.split(separator: ":")
        guard parts.count >= 2, let r = Int(parts[0]), let i = Int(parts[1]) else { return nil }
        return (r, i, parts.count > 2 && parts[2] == "exit")
    }

    static func tokens(_ model: ModelSpec) -> Bool {
        if case .embedding = model.layers.first?.kind { return true }
        return false
    }

    static func classes(_ model: ModelSpec) -> Int {
        for layer in model.layers.reversed() {
            if case let .linear(_, out) = layer.kind { return out }
        }
        return 2
    }

    /// The same generator as the Swift session tests.
    static func batch(rows: Int, features: Int, classes: Int, tokens: Bool, seed: Int) -> ([Float], [Int32]) {
        var state = UInt64(seed + 1) &* 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }
        let inputs: [Float] = (0..<(rows * features)).map { _ in tokens ? Float(next() % UInt64(max(1, classes))) : Float(Int(next() % 2000) - 1000) / 1000 }
        let targets: [Int32] = (0..<rows).map { _ in Int32(next() % UInt64(max(1, classes))) }
        return (inputs, targets)
    }
}
