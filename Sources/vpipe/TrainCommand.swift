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
            trajectories are bit-identical. Test hook: VPIPE_TEST_KILL=rank:iteration[:exit][:migration|:save] \
            makes that rank die (SIGKILL, or exit(1)) before that step; with :migration, at \
            the flush of that step's migration instead, before it hands over its gradients; \
            with :save, inside the save after that step, its shard written. \
            --migrate-at N --migrate-plan plan.pb (repeatable, paired in order) applies that \
            serialised vpipe.Plan on every rank before step N: a live migration (across ranks \
            with TRANSPORT_MPI). --checksums prints a checksum of every layer's parameters at \
            the end, on the rank that owns it (and of the in-process run's with \
            --compare-in-process). Checkpoints (docs/checkpoint.md): --save-every N writes the \
            whole training state to --checkpoint PATH after every N-th step (atomically; under \
            MPI each rank its shard, rank 0 the manifest); --resume PATH loads one before \
            training and continues with the step after the checkpoint's, up to --steps, so a \
            resumed run prints the same steps and losses as the rest of an uninterrupted one \
            (--compare-in-process then compares them with an uninterrupted in-process run).
            """)

    @Argument(help: "A serialised vpipe.SessionConfig.") var config: String
    @Option(help: "Training steps.") var steps = 10
    @Option(help: "Rows per mini-batch (a multiple of training.micro_batches).") var rows = 32
    @Option(help: "Classes of the targets (default: the last linear layer's width).") var classes: Int?
    @Option(help: "Seed of the synthetic data.") var dataSeed = 0
    @Flag(help: "Also train in-process (rank 0) and require bit-identical losses.") var compareInProcess = false
    @Option(help: "Before this step, apply the matching --migrate-plan (repeatable).") var migrateAt: [Int] = []
    @Option(help: "A serialised vpipe.Plan to migrate to (repeatable, paired with --migrate-at).") var migratePlan: [String] = []
    @Flag(help: "Print a checksum of each layer's parameters at the end.") var checksums = false
    @Option(help: "Save a checkpoint to --checkpoint after every this many steps.") var saveEvery: Int?
    @Option(help: "Where --save-every writes the checkpoint.") var checkpoint: String?
    @Option(help: "Resume from this checkpoint: continue with the step after it.") var resume: String?

    func run() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: config))
        let sessionConfig = try data.withUnsafeBytes { try WireSession.sessionConfig($0) }
        let mpi = sessionConfig.training.transport == .mpi
        let world = mpi ? try MPIRuntime.world() : (rank: 0, size: 1)
        let kill = Self.killHook()
        let width = classes ?? Self.classes(sessionConfig.model)
        var losses: [Float] = []
        guard migrateAt.count == migratePlan.count else {
            throw ValidationError("--migrate-at and --migrate-plan come in pairs (got \(migrateAt.count) and \(migratePlan.count))")
        }
        var migrations: [Int: PlanLayout] = [:]
        for (n, path) in zip(migrateAt, migratePlan) {
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            migrations[n] = try WireSession.planLayout(bytes)
        }
        if let n = saveEvery, n < 1 || checkpoint == nil {
            throw ValidationError(n < 1 ? "--save-every must be at least 1, got \(n)" : "--save-every needs --checkpoint PATH (where to write)")
        }
        var first = 1
        do {
            let session = try TrainingSession(sessionConfig)
            let features = session.inputFeatures ?? 1
            if let resume {
                try session.load(from: resume)
                first = session.statistics().iterations + 1
                if world.rank == 0 { print("resumed from \(resume) after step \(first - 1)"); fflush(nil) }
            }
            for k in first..<max(first, max(1, steps) + 1) {
                if let layout = migrations[k], ProcessInfo.processInfo.environment["VPIPE_TEST_SKIP_MIGRATE"] != String(world.rank) {
                    // Every rank applies the same plan before the same step (the test hook
                    // VPIPE_TEST_SKIP_MIGRATE=rank makes that rank not apply it).
                    try session.applyPlan(layout)
                }
                if let kill, kill.rank == world.rank, kill.iteration == k, kill.atSave {
                    // Dies inside the save after step k, its shard written, before the exchange.
                    CheckpointTestHooks.afterShardWritten = {
                        FileHandle.standardError.write(Data("rank \(world.rank): test hook: dying inside the save after step \(k)\n".utf8))
                        if kill.exit { Glibc.exit(1) } else { raise(SIGKILL) }
                    }
                } else if let kill, kill.rank == world.rank, kill.iteration == k, kill.atMigration {
                    // Dies at the migration flush of step k, before handing over its gradients.
                    MigrationTestHooks.atRemoteFlush = {
                        FileHandle.standardError.write(Data("rank \(world.rank): test hook: dying at the migration flush of step \(k)\n".utf8))
                        if kill.exit { Glibc.exit(1) } else { raise(SIGKILL) }
                    }
                } else if let kill, kill.rank == world.rank, kill.iteration == k {
                    FileHandle.standardError.write(Data("rank \(world.rank): test hook: dying before step \(k)\n".utf8))
                    if kill.exit { Glibc.exit(1) } else { raise(SIGKILL) }
                }
                let (x, y) = Self.batch(rows: rows, features: features, classes: width, tokens: Self.tokens(sessionConfig.model),
                                        seed: dataSeed * 2 + (k - 1) % 2)
                let loss = try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { ys in try session.step(inputs: xs, targets: ys) } }
                losses.append(loss)
                if world.rank == 0 { print("step \(k) loss \(Self.show(loss))"); fflush(nil) }
                if let n = saveEvery, let checkpoint, k % n == 0 {
                    try session.save(to: checkpoint)
                    if world.rank == 0 { print("saved \(checkpoint) after step \(k)"); fflush(nil) }
                }
                if migrations[k] != nil, let d = session.statistics().decisions.last {
                    print("rank \(world.rank): migration before step \(k): \(d.applied ? "applied" : "NOT applied"), layers \(d.layersMoved.map(String.init).joined(separator: ",")), \(d.bytesMoved) bytes through this rank, stall \(String(format: "%.6f", d.stallSeconds)) s\(d.applied ? "" : " (\(d.note))")")
                    fflush(nil)
                }
            }
            for d in session.statistics().decisions where d.source == "online" {
                if d.applied {
                    print("rank \(world.rank): online migration decided after iteration \(d.iteration): applied, layers \(d.layersMoved.map(String.init).joined(separator: ","))")
                } else {
                    print("rank \(world.rank): online re-planning after iteration \(d.iteration): stayed (\(d.note))")
                }
            }
            if checksums {
                for l in sessionConfig.model.layers.indices {
                    if let params = try? session.parameters(layer: l), !params.isEmpty {
                        print("rank \(world.rank): layer \(l) checksum \(Self.checksum(params))")
                    }
                }
                fflush(nil)
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
            if checksums {
                for l in local.model.layers.indices {
                    if let params = try? session.parameters(layer: l), !params.isEmpty {
                        print("in-process: layer \(l) checksum \(Self.checksum(params))")
                    }
                }
            }
            session.close()
            // A resumed run compares its steps with the same steps of the uninterrupted run.
            reference = Array(reference.dropFirst(first - 1))
            print("distributed (\(world.size) ranks): \(losses.map(Self.show).joined(separator: " "))")
            print("in-process  (\(session.statistics().stages.count) stages): \(reference.map(Self.show).joined(separator: " "))")
            let same = zip(losses, reference).allSatisfy { $0.bitPattern == $1.bitPattern } && losses.count == reference.count
            print(same ? "loss trajectories identical" : "LOSS TRAJECTORIES DIFFER")
            if !same { throw ExitCode(2) }
        }
    }

    /// FNV-1a over the shapes and the values' bit patterns.
    static func checksum(_ params: [(shape: [Int], values: [Float])]) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ v: UInt32) { for k in 0..<4 { h = (h ^ UInt64((v >> (8 * k)) & 0xff)) &* 0x100_0000_01b3 } }
        for (shape, values) in params {
            for d in shape { mix(UInt32(truncatingIfNeeded: d)) }
            for v in values { mix(v.bitPattern) }
        }
        return String(h, radix: 16)
    }

    static func show(_ v: Float) -> String { String(format: "%.9g", Double(v)) }

    static func killHook() -> (rank: Int, iteration: Int, exit: Bool, atMigration: Bool, atSave: Bool)? {
        guard let raw = ProcessInfo.processInfo.environment["VPIPE_TEST_KILL"] else { return nil }
        let parts = raw.split(separator: ":")
        guard parts.count >= 2, let r = Int(parts[0]), let i = Int(parts[1]) else { return nil }
        let flags = parts.dropFirst(2)
        return (r, i, flags.contains("exit"), flags.contains("migration"), flags.contains("save"))
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
