// vpipe-bench: the benchmarks behind docs/benchmarks.md. `make bench-planner` runs
// `vpipe-bench planner`. Release builds only.
import VPipeCore

let what = CommandLine.arguments.dropFirst().first ?? "planner"
switch what {
case "planner": PlannerBench.run()
case "pipedream":  // the PipeDream-profiles part of `planner` alone; `pipedream tight [profile]`: its tight-memory table
    let a = Array(CommandLine.arguments.dropFirst(2))
    PipeDreamBench.run(tightOnly: a.first == "tight", profile: a.dropFirst().first)
case "proofs":  // vpipe-bench proofs [instances] [stage node budget] [plan node budget]
    let a = CommandLine.arguments.dropFirst(2).compactMap { Int($0) }
    DeepPlannerBench.proofs(instances: a.first ?? 60, stageNodeBudget: a.dropFirst().first ?? VPipePlanner.stageNodeBudget,
                            planNodeBudget: a.dropFirst(2).first ?? VPipePlanner.maxStageNodes)
case "speed": PlannerBench.speed()  // the planner-speed part of `planner` alone
case "deep": DeepPlannerBench.run(instances: Int(CommandLine.arguments.dropFirst(2).first ?? "") ?? 40)
case "runtime": RuntimeBench.run(Array(CommandLine.arguments.dropFirst(2)))
case "checkpoint": CheckpointBench.run(Array(CommandLine.arguments.dropFirst(2)))
case "paper": PaperBench.run(Array(CommandLine.arguments.dropFirst(2)))
case "mpi":
    do { try MPIBench.run() } catch { print("vpipe-bench mpi: \(error)") }
default: print("usage: vpipe-bench planner | pipedream [tight [profile]] | speed | deep [instances] | proofs [instances] [stage budget] [plan budget] | runtime | paper [--svg PATH] [--quick] | checkpoint [dir] | mpi (under mpirun -np 2)")
}
