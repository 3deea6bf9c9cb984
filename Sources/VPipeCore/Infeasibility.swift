/// Explains why no plan fits: which stage or layer cannot fit, by how many bytes, and what
/// would make it fit (more devices, fewer micro-batches, more memory).
enum Infeasibility {
    static func explain(_ cm: CostModel, planner: String, starts: [Int], oracle: StageOracle) -> VPipeError {
        let L = cm.model.layers.count, p = cm.cluster.devices.count
        var lines: [String] = []
        // A layer whose weights, gradients and optimizer state alone exceed every device.
        let kappa = cm.model.stateFactor
        for l in 0..<L {
            let state = Double(cm.model.layers[l].profile.paramBytes) * kappa
            let largest = cm.cluster.devices.map { Double($0.memoryBytes - $0.reservedBytes) }.max() ?? 0
            if state > largest {
                lines.append("\(cm.model.describeLayer(l)) alone needs \(formatBytes(state)) for weights, gradients and optimizer state "
                    + "(param_bytes × \(formatFixed(kappa, decimals: 1))), \(formatFixed(state - largest, decimals: 0)) bytes more than the largest device offers")
                break
            }
        }
        // The stages of the best partition found that cannot fit even with swap/recompute.
        for k in 0..<p {
            let s = starts[k], e = k + 1 < p ? starts[k + 1] : L
            if oracle.choice(k, s, e) != nil { continue }
            let least = oracle.solver.leastMemory(stage: k, layers: s..<e)
            let capacity = Double(cm.cluster.devices[k].memoryBytes)
            lines.append("stage \(k) on \(cm.cluster.describeDevice(k)) with layers \(s)-\(e - 1) needs at least "
                + "\(formatFixed(least, decimals: 0)) bytes (\(formatBytes(least))) even with every useful swap and recompute, "
                + "\(formatFixed(least - capacity, decimals: 0)) bytes (\(formatBytes(least - capacity))) over its memory_bytes")
        }
        // What would help.
        let totalState = cm.model.layers.reduce(0.0) { $0 + Double($1.profile.paramBytes) } * kappa
        let perDevice = Double(cm.cluster.devices.map(\.memoryBytes).min() ?? 1)
        let devicesForWeights = Int((totalState / perDevice).rounded(.up))
        var hints: [String] = []
        if devicesForWeights > p {
            hints.append("more devices (at least \(devicesForWeights) of this size for the model state alone)")
        } else {
            hints.append("more devices")
        }
        if cm.schedule == .gpipe || cm.microBatches > 1 { hints.append("fewer micro-batches (or SCHEDULE_1F1B, which keeps fewer in flight)") }
        hints.append("more memory_bytes per device")
        if lines.isEmpty { lines.append("no partition into \(p) stages was found in which every stage fits") }
        return .infeasible("\(planner): no plan fits the devices' memory: " + lines.joined(separator: "; ")
            + ". What would help: " + hints.joined(separator: ", "))
    }
}
