/// A plan as a table a person can read in a terminal:
///
///     stage  device  layers          policies       compute    swap      stage      link      memory / capacity
///     0      gpu0    0-6 (7)         K×7            12.30 ms   0 s       12.30 ms   1.20 ms   10.20 GiB / 16.00 GiB  64%
public enum PlanTable {
    public static func render(_ plan: Plan, model: ModelSpec, cluster: ClusterSpec) -> String {
        var lines: [String] = []
        let planner = plan.planner?.name ?? "(evaluated)"
        lines.append("plan for \(model.name.isEmpty ? "model" : model.name) (\(model.layers.count) layers) on \(plan.stages.count) devices, "
            + "schedule \(plan.schedule.name), \(plan.microBatches) micro-batches, planner \(planner), cost model v\(plan.costModelVersion)")
        let header = [pad("stage", 6), pad("device", 10), pad("layers", 22), pad("policies", 16), pad("compute", 11, right: true),
                      pad("swap", 11, right: true), pad("stage", 11, right: true), pad("link", 11, right: true),
                      pad("memory / capacity", 28, right: true)]
        lines.append(header.joined(separator: " "))
        for s in plan.stages {
            let first = s.layers.lowerBound, last = s.layers.upperBound - 1
            let names = "\(first)-\(last) (\(s.layers.count))"
            let fill = Double(s.memoryBytes) > 0 ? s.peakMemoryBytes / Double(s.memoryBytes) * 100 : 0
            let device = cluster.devices[s.device].name.isEmpty ? "\(s.device)" : cluster.devices[s.device].name
            let row = [pad("\(s.device)", 6), pad(device, 10), pad(names, 22), pad(policyString(s.policies), 16),
                       pad(formatSeconds(s.computeSeconds), 11, right: true), pad(formatSeconds(s.swapSeconds), 11, right: true),
                       pad(formatSeconds(s.stageSeconds), 11, right: true), pad(formatSeconds(s.linkSeconds), 11, right: true),
                       pad("\(formatBytes(s.peakMemoryBytes)) / \(formatBytes(Double(s.memoryBytes))) \(pad(formatFixed(fill, decimals: 0), 3, right: true))%", 28, right: true)]
            lines.append(row.joined(separator: " ") + (s.fits ? "" : "  OVER"))
        }
        lines.append("bottleneck \(formatSeconds(plan.bottleneckSeconds)), iteration \(formatSeconds(plan.iterationSeconds)), "
            + "planned in \(formatSeconds(plan.planningSeconds))")
        if plan.provenOptimal && plan.objective == .throughput {
            var line = "certificate: proven the smallest bottleneck (objective THROUGHPUT) under cost model v\(plan.costModelVersion)"
            if let gap = plan.optimalityGap, gap > 0 {
                line += "; its iteration is at most \(formatFixed(gap * 100, decimals: 2))% above the fastest plan's"
            }
            lines.append(line)
        } else if plan.provenOptimal {
            lines.append("certificate: proven optimal under cost model v\(plan.costModelVersion)")
        } else if let gap = plan.optimalityGap {
            lines.append("certificate: no plan is faster than \(formatSeconds(plan.lowerBoundSeconds)); "
                + "this one is at most \(formatFixed(gap * 100, decimals: 2))% above the optimum")
        }
        return lines.joined(separator: "\n")
    }

    /// Policies as letters (K keep, S swap, R recompute), run-length encoded when long:
    /// `KKRR` or `K×20 R×4`.
    public static func policyString(_ policies: [MemoryPolicy]) -> String {
        let plain = String(policies.map(\.letter))
        if plain.count <= 8 { return plain }
        var runs: [String] = []
        var i = 0
        while i < policies.count {
            var j = i
            while j < policies.count && policies[j] == policies[i] { j += 1 }
            runs.append("\(policies[i].letter)×\(j - i)")
            i = j
        }
        return runs.joined(separator: " ")
    }
}
