import VPipeCore

/// Where a pipeline's schedule IR comes from: the host's text (`training.schedule_text`),
/// parsed and validated for the running placement, or the generator of the schedule kind.
/// Either way the executor runs the lists it is given, action by action (`StageWorker`).
enum ScheduleSource {
    /// The schedule for stages with `stagePolicies` (one policy list per stage). Errors in
    /// the host's text name `training.schedule_text` and the line, stage or action at fault
    /// (the validator's message shows the whole schedule with `<-- here`).
    static func schedule(for options: TrainingOptions, stagePolicies: [[MemoryPolicy]]) throws -> PipelineSchedule {
        guard let text = options.scheduleText else {
            return try ScheduleGenerator.generate(options.schedule, microBatches: options.microBatches, stagePolicies: stagePolicies)
        }
        let schedule = try naming { try PipelineSchedule(parsing: text) }
        guard schedule.kind == options.schedule else {
            throw VPipeError.invalidField(field: "training.schedule_text", message: "the header says \(schedule.kind.name) but training.schedule is \(options.schedule.name)")
        }
        guard schedule.microBatches == options.microBatches else {
            throw VPipeError.invalidField(field: "training.schedule_text", message: "the header says m=\(schedule.microBatches) but training.micro_batches is \(options.microBatches)")
        }
        guard schedule.stageCount == stagePolicies.count else {
            throw VPipeError.invalidField(field: "training.schedule_text", message: "\(schedule.stageCount) stage lines for a placement of \(stagePolicies.count) stages")
        }
        try naming { try ScheduleValidator.validate(schedule, stagePolicies: stagePolicies) }
        return schedule
    }

    /// The policies of each stage of `layout`.
    static func stagePolicies(_ layout: PlanLayout) -> [[MemoryPolicy]] {
        layout.ranges.map { Array(layout.policies[$0]) }
    }

    /// Prefixes a field error from the parser or validator with `training.schedule_text`.
    private static func naming<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let VPipeError.invalidField(field, message) {
            throw VPipeError.invalidField(field: "training.schedule_text \(field)", message: message)
        }
    }
}
