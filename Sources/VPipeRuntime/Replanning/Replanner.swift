import VPipeCore

/// Online re-planning (vPipe §5): every `replanEvery` steps, plan with VPIPE on the window's
/// numbers and migrate when the new plan's predicted iteration time beats the running
/// plan's by more than `replanThreshold`. Every decision is recorded, migrating or not.
enum Replanner {
    /// The decision on `model`/`cluster` (the window's view) for the `running` layout after
    /// `iteration`; `layout` is the plan to migrate to, nil to stay.
    static func decide(model: ModelSpec, cluster: ClusterSpec, running: PlanLayout, options: TrainingOptions,
                       iteration: Int, before: Double) -> (decision: MigrationDecision, layout: PlanLayout?) {
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
            let percent = formatFixed(gain * 100, decimals: 1)
            if fresh.layout == running {
                decision.note = "the running plan is still the best"
            } else if options.scheduleText != nil,
                      (try? ScheduleSource.schedule(for: options, stagePolicies: ScheduleSource.stagePolicies(fresh.layout))) == nil {
                decision.note = "the host's schedule (training.schedule_text) does not run on the new plan: staying"
            } else if gain > options.effectiveReplanThreshold {
                decision.note = "predicted gain \(percent)% > threshold \(formatFixed(options.effectiveReplanThreshold * 100, decimals: 1))%: migrating"
                    + " (re-planned in \(formatSeconds(fresh.planningSeconds)))"
                return (decision, fresh.layout)
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
