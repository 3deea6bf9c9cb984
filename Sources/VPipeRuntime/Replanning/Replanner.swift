import VPipeCore

/// Online re-planning (vPipe §5): every `replanEvery` steps, plan with VPIPE on the window's
/// numbers and migrate when the new plan's predicted iteration time beats the running
/// plan's by more than `replanThreshold` (more than that times `MigrationHysteresis.moveBackFactor`
/// when it would undo a recent move). Every decision is recorded, migrating or not.
enum Replanner {
    /// The decision on `model`/`cluster` (the window's view) for the `running` layout after
    /// `iteration`; `layout` is the plan to migrate to, nil to stay.
    static func decide(model: ModelSpec, cluster: ClusterSpec, running: PlanLayout, options: TrainingOptions,
                       hysteresis: MigrationHysteresis = MigrationHysteresis(), iteration: Int, before: Double) -> (decision: MigrationDecision, layout: PlanLayout?) {
        let request = PlanOptions(schedule: options.schedule, microBatches: options.microBatches, planner: .vpipe)
        let current = CostModel(model: model, cluster: cluster, schedule: request.schedule, microBatches: request.microBatches)
        let old = (try? current.evaluate(running).iterationSeconds) ?? .infinity
        var decision = MigrationDecision(source: "online", iteration: iteration, oldPredictedSeconds: old, newPredictedSeconds: old,
                                         applied: false, iterationSecondsBefore: before, note: "")
        do {
            let fresh = try Planning.plan(PlanRequest(model: model, cluster: cluster, options: request))
            decision.planningSeconds = fresh.planningSeconds
            decision.newPredictedSeconds = fresh.iterationSeconds
            let gain = (old - fresh.iterationSeconds) / old
            let threshold = options.effectiveReplanThreshold
            let required = hysteresis.requiredGain(threshold: threshold, from: running, to: fresh.layout)
            let percent = formatFixed(gain * 100, decimals: 1)
            if fresh.layout == running {
                decision.note = "the running plan is still the best"
            } else if options.scheduleText != nil,
                      (try? ScheduleSource.schedule(for: options, stagePolicies: ScheduleSource.stagePolicies(fresh.layout))) == nil {
                decision.note = "the host's schedule (training.schedule_text) does not run on the new plan: staying"
            } else if gain > required {
                decision.note = "predicted gain \(percent)% > threshold \(formatFixed(required * 100, decimals: 1))%: migrating"
                    + " (re-planned in \(formatSeconds(fresh.planningSeconds)))"
                return (decision, fresh.layout)
            } else if gain > threshold {
                let back = hysteresis.layersMovedBack(from: running, to: fresh.layout).map(String.init).joined(separator: ", ")
                decision.note = "predicted gain \(percent)% would move layers \(back) back within \(MigrationHysteresis.holdWindows) windows"
                    + " of their move; that needs more than \(formatFixed(required * 100, decimals: 1))%: staying"
            } else {
                decision.note = "predicted gain \(percent)% below the threshold"
            }
            decision.note += " (re-planned in \(formatSeconds(fresh.planningSeconds)))"
        } catch {
            decision.note = "re-planning failed: \(error)"
        }
        return (decision, nil)
    }
}
