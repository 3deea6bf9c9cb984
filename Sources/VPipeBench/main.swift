// vpipe-bench: the benchmarks behind docs/benchmarks.md. `make bench-planner` runs
// `vpipe-bench planner`. Release builds only.
let what = CommandLine.arguments.dropFirst().first ?? "planner"
switch what {
case "planner": PlannerBench.run()
case "pipedream": PipeDreamBench.run()  // the PipeDream-profiles part of `planner` alone
case "deep": DeepPlannerBench.run(instances: Int(CommandLine.arguments.dropFirst(2).first ?? "") ?? 40)
case "runtime": RuntimeBench.run(Array(CommandLine.arguments.dropFirst(2)))
case "checkpoint": CheckpointBench.run(Array(CommandLine.arguments.dropFirst(2)))
case "paper": PaperBench.run(Array(CommandLine.arguments.dropFirst(2)))
case "mpi":
    do { try MPIBench.run() } catch { print("vpipe-bench mpi: \(error)") }
default: print("usage: vpipe-bench planner | pipedream | runtime | paper [--svg PATH] [--quick] | checkpoint [dir] | mpi (under mpirun -np 2)")
}
