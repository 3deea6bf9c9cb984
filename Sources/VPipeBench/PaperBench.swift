import Foundation
import VPipeCore
import VPipeRuntime

/// `make bench-paper`: the paper's headline experiment on this runtime. The same model and
/// memory budget are trained with three plans in one run, and their measured throughput is
/// set against what cost model v1 predicted:
///
/// - VPIPE: the vPipe planner (joint swap / recompute / re-partition), through
///   `Planning.plan` with `PLANNER_VPIPE`;
/// - GPIPE: GPipe's plan, every layer recomputed, its own time-balanced partition
///   (`PLANNER_GPIPE`);
/// - PIPEDREAM: PipeDream's straight-pipeline partition, every layer kept (`PLANNER_PIPEDREAM`,
///   memory-unaware). It is planned on unlimited memory and run on the budget as it is, so
///   when it does not fit the runtime really tries and the table shows its out-of-memory error.
///
/// Every plan runs the synchronous 1F1B schedule (PipeDream-Flush), so the plans, not the
/// schedules, are what differ. Copy engines are throttled (see `hostBandwidth`); the three
/// plans' steps are interleaved round by round so that a change in the machine's load hits
/// all three alike.
enum PaperBench {
    struct Setup {
        var model: ModelSpec
        var label: String
        var stages: Int
    }

    struct Budget {
        var name: String
        var bytes: Int
    }

    struct Outcome {
        var plan: PlannerKind
        var predictedSeconds: Double?
        var measuredSeconds: Double?
        var error: String?
        var policies: String
        var layout: PlanLayout?
        var loss: Float?
    }

    struct Row {
        var setup: String
        var stages: Int
        var budget: Budget
        var outcomes: [Outcome]
    }

    static let microBatches = 8, sequencesPerMicroBatch = 2
    static let plans: [PlannerKind] = [.vpipe, .gpipe, .pipedream]

    /// Host bandwidth of a virtual device's copy engine, from the ratio of a V100's PCIe 3 x16
    /// link to its compute: ~12 GB/s effective against 15.7 TFLOP/s FP32, 7.6e-4 bytes per
    /// flop. This CPU's core does ~125 GFLOP/s in OpenBLAS sgemm (docs/architecture.md), so the
    /// same ratio is 12e9 / 15.7e12 × 125e9 ≈ 96 MB/s per core. A stage that shares a core
    /// with another (4 devices on 2 cores) computes at half speed, and the copy engine keeps
    /// its bandwidth: the ratio per device then doubles, as it would for a slower GPU on the
    /// same bus.
    static let hostBandwidth = 12e9 / 15.7e12 * 125e9

    /// Relative speed of a stage when p stage threads share the machine's cores.
    static func speed(stages p: Int) -> Double {
        min(1, Double(ProcessInfo.processInfo.activeProcessorCount) / Double(p))
    }

    static func cluster(_ p: Int, memory: Int, reserved: Int) -> ClusterSpec {
        var c = ClusterSpec.uniform(count: p, device: DeviceSpec(name: "vdev", memoryBytes: memory, speed: speed(stages: p),
                                                                 hostBandwidth: hostBandwidth, reservedBytes: reserved),
                                    link: LinkSpec(bandwidth: 1e10, latency: 2e-5))
        for i in c.devices.indices { c.devices[i].reservedBytes = reserved }
        return c
    }

    /// With `stages` more than the cores, every stage's compute is stretched by p / cores
    /// (`deviceSlowdown`): the stages are then p devices of speed cores / p, as the cost model
    /// is told, instead of p threads competing for fewer cores (a shared machine, which cost
    /// model v1 cannot represent: measured, 4 full-speed stage threads on 2 cores were
    /// total-work-bound and their speed-ups 13% off the prediction).
    static func training(stages: Int = 1) -> TrainingOptions {
        var t = TrainingOptions(schedule: .oneFOneB, microBatches: microBatches, seed: 11,
                                optimizer: .sgd(learningRate: 0.01, momentum: 0), throttleCopies: true)
        t.deviceSlowdown = 1 / speed(stages: stages)
        return t
    }

    static func step(_ s: TrainingSession, _ d: ([Float], [Int32])) throws -> Float {
        try d.0.withUnsafeBufferPointer { x in try d.1.withUnsafeBufferPointer { y in try s.step(inputs: x, targets: y) } }
    }

    /// Per-layer profiles measured on one stage (one BLAS thread), and the largest
    /// transient workspace of a layer call.
    static func profile(_ model: ModelSpec, _ d: ([Float], [Int32])) throws -> (ModelSpec, Int) {
        var options = training()
        options.profileIterations = 3
        options.throttleCopies = false
        let probe = try TrainingSession(SessionConfig(model: model, cluster: cluster(1, memory: 1 << 34, reserved: 0), plan: nil, training: options))
        for _ in 0..<4 { _ = try step(probe, d) }
        defer { probe.close() }
        return (probe.measuredModel, probe.workspaceBytes)
    }

    static func plan(_ kind: PlannerKind, _ model: ModelSpec, _ cluster: ClusterSpec) throws -> Plan {
        try Planning.plan(PlanRequest(model: model, cluster: cluster,
                                      options: PlanOptions(schedule: .oneFOneB, microBatches: microBatches, planner: kind)))
    }

    static func peak(_ plan: Plan) -> Int { Int(plan.stages.map(\.peakMemoryBytes).max() ?? 0) }

    /// Three budgets between what all-KEEP needs (PipeDream's plan, peak stage) and what
    /// all-RECOMPUTE needs (GPipe's plan): everything fits; half-way; just above GPipe's.
    static func makeBudgets(_ measured: ModelSpec, stages p: Int, reserved: Int) throws -> [Budget] {
        let roomy = cluster(p, memory: 1 << 34, reserved: reserved)
        let keep = peak(try plan(.pipedream, measured, roomy)), least = peak(try plan(.gpipe, measured, roomy))
        return [Budget(name: "everything fits", bytes: keep + keep / 20),
                Budget(name: "some layers must swap or recompute", bytes: least + (keep - least) / 2),
                Budget(name: "only a few layers can be kept", bytes: least + (keep - least) / 10)]
    }

    static func describe(_ layout: PlanLayout) -> String {
        let counts = Dictionary(grouping: layout.policies, by: { $0 }).mapValues(\.count)
        let ranges = layout.ranges.map { "\($0.lowerBound)-\($0.upperBound - 1)" }.joined(separator: ",")
        return "\(ranges) K\(counts[.keep] ?? 0)/S\(counts[.swap] ?? 0)/R\(counts[.recompute] ?? 0)"
    }

    static func measure(_ setup: Setup, _ budget: Budget, measured: ModelSpec, reserved: Int, d: ([Float], [Int32]),
                        warmup: Int, steps: Int) -> [Outcome] {
        let tight = cluster(setup.stages, memory: budget.bytes, reserved: reserved)
        var outcomes: [Outcome] = []
        var sessions: [TrainingSession?] = []
        for kind in plans {
            var o = Outcome(plan: kind, policies: "")
            var layout: PlanLayout?
            do {
                if kind == .pipedream {
                    // Memory-unaware: planned without a limit, then run on the budget as is.
                    let p = try plan(kind, measured, cluster(setup.stages, memory: 1 << 34, reserved: reserved))
                    layout = p.layout
                    let onBudget = try CostModel(PlanRequest(model: measured, cluster: tight,
                                                             options: PlanOptions(schedule: .oneFOneB, microBatches: microBatches, planner: kind))).evaluate(p.layout)
                    o.predictedSeconds = onBudget.isFeasible ? onBudget.iterationSeconds : nil
                } else if kind == .vpipe {
                    let p = try plan(kind, measured, tight)
                    layout = p.layout
                    o.predictedSeconds = p.iterationSeconds
                } else {
                    let p = try plan(kind, measured, tight)
                    layout = p.layout
                    o.predictedSeconds = p.iterationSeconds
                }
            } catch {
                o.error = "planner: \(error)"
            }
            var session: TrainingSession?
            o.layout = layout
            if let layout {
                o.policies = describe(layout)
                do {
                    session = try TrainingSession(SessionConfig(model: setup.model, cluster: tight, plan: layout, training: training(stages: setup.stages)))
                } catch { o.error = "\(error)" }
            }
            outcomes.append(o)
            sessions.append(session)
        }
        // Interleaved: one step of each plan per round.
        var times = Array(repeating: [Double](), count: plans.count)
        for round in 0..<(warmup + steps) {
            for (i, s) in sessions.enumerated() {
                guard let s, outcomes[i].error == nil else { continue }
                let t0 = DispatchTime.now().uptimeNanoseconds
                do {
                    outcomes[i].loss = try step(s, d)
                    if round >= warmup { times[i].append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9) }
                } catch {
                    outcomes[i].error = "\(error)"
                }
            }
        }
        for (i, s) in sessions.enumerated() {
            s?.close()
            let t = times[i].sorted()
            if outcomes[i].error == nil, !t.isEmpty { outcomes[i].measuredSeconds = t[t.count / 2] }
        }
        return outcomes
    }

    static func run(_ args: [String]) {
        var svgPath: String?
        if let i = args.firstIndex(of: "--svg"), i + 1 < args.count { svgPath = args[i + 1] }
        let quick = args.contains("--quick")
        let steps = quick ? 3 : 6, warmup = 2
        BLASThreads.set(1)
        let tokens = microBatches * sequencesPerMicroBatch * GPTBench.sequenceLength
        print("## The paper's headline on this runtime: VPIPE vs GPIPE vs PIPEDREAM plans, measured\n")
        print("Schedule 1F1B, \(microBatches) micro-batches of \(sequencesPerMicroBatch) sequences (\(tokens) tokens per step), SGD; "
            + "one BLAS thread per stage; kernels \(KernelInfo.isa); \(ProcessInfo.processInfo.activeProcessorCount) cores.")
        print("Copy engines throttled to \(formatFixed(hostBandwidth / 1e6, decimals: 0)) MB/s per device "
            + "(PCIe 3 x16 ≈ 12 GB/s against a V100's 15.7 TFLOP/s, scaled to one core's 125 GFLOP/s). "
            + "With more stages than cores, every stage's compute is stretched by p/cores: p devices of speed cores/p, as modelled.")
        print("Profiles: measured by the runtime on one stage; budgets from cost model v1 on those profiles: "
            + "all-KEEP's peak + 5%, half-way to all-RECOMPUTE's, 10% above all-RECOMPUTE's.")
        print("Measured: median of \(steps) steps after \(warmup) warm-up steps, the three plans interleaved step by step.\n")
        let setups: [(ModelSpec, String)] = [(GPTBench.model(), "GPT 8×128 (the built-in GPT)"),
                                             (GPTBench.model(blocks: 16), "GPT 16×128 (deeper)")]
        let data = GPTBench.batch(sequences: microBatches * sequencesPerMicroBatch)
        var rows: [Row] = []
        print("| model | devices | budget per device | plan | partition K/S/R | predicted iteration | measured step | tokens/s | speed-up over GPIPE measured | predicted | measured / predicted |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for (model, label) in setups {
            let measured: ModelSpec, workspace: Int
            do { (measured, workspace) = try profile(model, data) } catch { print("profiling \(label) failed: \(error)"); continue }
            for p in [2, 4] {
                let setup = Setup(model: model, label: label, stages: p)
                let budgets: [Budget]
                do { budgets = try makeBudgets(measured, stages: p, reserved: workspace) } catch { print("budgets for \(label), p=\(p): \(error)"); continue }
                for budget in budgets {
                    let outcomes = measure(setup, budget, measured: measured, reserved: workspace, d: data, warmup: warmup, steps: steps)
                    let row = Row(setup: label, stages: p, budget: budget, outcomes: outcomes)
                    rows.append(row)
                    printRow(row, tokens: tokens)
                }
            }
        }
        print("\nVPIPE never measured slower than a baseline that ran: \(vpipeNeverSlower(rows) ? "yes" : "NO")")
        let deviations = rows.compactMap { deviation($0) }
        if !deviations.isEmpty {
            let worst = deviations.map(abs).max() ?? 0
            print("measured VPIPE speed-up over GPIPE vs predicted: worst deviation \(formatFixed(worst * 100, decimals: 1))% over \(deviations.count) configurations")
        }
        if let svgPath {
            do {
                try PaperPlot.svg(rows, tokens: tokens).write(toFile: svgPath, atomically: true, encoding: .utf8)
                print("plot: \(svgPath)")
            } catch { print("could not write \(svgPath): \(error)") }
        }
    }

    static func outcome(_ row: Row, _ kind: PlannerKind) -> Outcome? { row.outcomes.first { $0.plan == kind } }

    /// measured VPIPE speed-up over GPIPE divided by the predicted one, minus 1.
    static func deviation(_ row: Row) -> Double? {
        guard let v = outcome(row, .vpipe), let g = outcome(row, .gpipe),
              let vm = v.measuredSeconds, let gm = g.measuredSeconds, let vp = v.predictedSeconds, let gp = g.predictedSeconds else { return nil }
        return (gm / vm) / (gp / vp) - 1
    }

    static func vpipeNeverSlower(_ rows: [Row]) -> Bool {
        rows.allSatisfy { row in
            guard let v = outcome(row, .vpipe)?.measuredSeconds else { return false }
            let vpipeLayout = outcome(row, .vpipe)?.layout
            // The same layout as VPIPE's is the same plan: their times differ only by noise.
            return row.outcomes.allSatisfy { o in
                o.plan == .vpipe || o.layout == vpipeLayout || (o.measuredSeconds.map { v <= $0 * 1.02 } ?? true)
            }
        }
    }

    static func printRow(_ row: Row, tokens: Int) {
        let g = outcome(row, .gpipe)
        for o in row.outcomes {
            let same = o.plan != .vpipe && o.layout != nil && o.layout == outcome(row, .vpipe)?.layout
            var cells = [row.setup, "\(row.stages)", formatBytes(Double(row.budget.bytes)) + " (\(row.budget.name))", o.plan.name,
                         o.policies + (same ? " (= VPIPE's)" : "")]
            cells.append(o.predictedSeconds.map(formatSeconds) ?? (o.plan == .pipedream ? "does not fit" : "-"))
            if let m = o.measuredSeconds {
                cells += [formatSeconds(m), formatFixed(Double(tokens) / m, decimals: 0)]
                if let gm = g?.measuredSeconds {
                    let measured = gm / m
                    cells.append(formatFixed(measured, decimals: 2) + "×")
                    if let gp = g?.predictedSeconds, let op = o.predictedSeconds {
                        let predicted = gp / op
                        cells += [formatFixed(predicted, decimals: 2) + "×", formatFixed(measured / predicted, decimals: 2)]
                    } else { cells += ["-", "-"] }
                } else { cells += ["-", "-", "-"] }
            } else {
                let error = (o.error ?? "no measurement").replacingOccurrences(of: "|", with: "/")
                cells += [error.count > 160 ? String(error.prefix(160)) + "…" : error, "0", "-", "-", "-"]
            }
            print("| " + cells.joined(separator: " | ") + " |")
        }
    }
}
