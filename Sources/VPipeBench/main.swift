// vpipe-bench: the benchmarks behind docs/benchmarks.md. `make bench-planner` runs
// `vpipe-bench planner`. Release builds only.
let what = CommandLine.arguments.dropFirst().first ?? "planner"
switch what {
case "planner": PlannerBench.run()
case "runtime": RuntimeBench.run(Array(CommandLine.arguments.dropFirst(2)))
default: print("usage: vpipe-bench planner|runtime")
}
