import CVPipeProto
import VPipeCore

/// The simulation messages: `SimulationRequest` in, `SimulationReport` out (vp_simulate).
extension WireDecode {
    /// A SimulationRequest: the model, the cluster, and the plan's decisions (its numbers
    /// are not read; the simulator derives its own).
    public static func simulationRequest(_ bytes: UnsafeRawBufferPointer) throws
        -> (model: ModelSpec, cluster: ClusterSpec, schedule: Schedule, microBatches: Int, layout: PlanLayout)
    {
        try unpack(bytes, type: "vpipe.SimulationRequest", unpack: vpipe__simulation_request__unpack,
                   free: vpipe__simulation_request__free_unpacked) { req in
            try planOnModel(req.pointee.model, req.pointee.cluster, req.pointee.plan, message: "a SimulationRequest", use: "simulate")
        }
    }
}

extension WireEncode {
    /// A SimulationRequest for `plan` (tests and tools).
    public static func simulationRequest(model: ModelSpec, cluster: ClusterSpec, plan: Plan) -> [UInt8] {
        let arena = CArena()
        let message = arena.allocate(Vpipe__SimulationRequest.self, count: 1)
        vpipe__simulation_request__init(message)
        message.pointee.model = fill(model, arena)
        message.pointee.cluster = fill(cluster, arena)
        message.pointee.plan = fill(plan, arena)
        return pack(message, size: vpipe__simulation_request__get_packed_size, pack: vpipe__simulation_request__pack)
    }

    /// A SimulationReport with the Chrome trace and the SVG timeline rendered from `report`.
    public static func simulationReport(_ report: SimulationReport, title: String = "") -> [UInt8] {
        let arena = CArena()
        let message = arena.allocate(Vpipe__SimulationReport.self, count: 1)
        vpipe__simulation_report__init(message)
        message.pointee.iteration_seconds = report.iterationSeconds
        message.pointee.cost_model_iteration_seconds = report.costModelIterationSeconds
        let stages = arena.allocate(UnsafeMutablePointer<Vpipe__StageSimulation>?.self, count: report.stages.count)
        for (i, s) in report.stages.enumerated() {
            let sp = arena.allocate(Vpipe__StageSimulation.self, count: 1)
            vpipe__stage_simulation__init(sp)
            sp.pointee.busy_fraction = s.busyFraction
            sp.pointee.idle_fraction = s.idleFraction
            sp.pointee.bubble_fraction = s.bubbleFraction
            sp.pointee.swap_stall_fraction = report.iterationSeconds > 0 ? s.swapStallSeconds / report.iterationSeconds : 0
            sp.pointee.peak_memory_bytes = saturatingUInt64(s.peakMemoryBytes)
            stages[i] = sp
        }
        message.pointee.n_stages = report.stages.count
        message.pointee.stages = stages
        message.pointee.chrome_trace_json = arena.string(TraceExport.chromeTrace(report))
        message.pointee.svg = arena.string(TraceExport.svg(report, title: title))
        let lines = report.schedule.lines
        let schedule = arena.allocate(UnsafeMutablePointer<CChar>?.self, count: lines.count)
        for (i, line) in lines.enumerated() { schedule[i] = arena.string(line) }
        message.pointee.n_schedule = lines.count
        message.pointee.schedule = schedule
        return pack(message, size: vpipe__simulation_report__get_packed_size, pack: vpipe__simulation_report__pack)
    }
}
