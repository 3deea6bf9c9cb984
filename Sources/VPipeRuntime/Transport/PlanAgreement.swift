import VPipeCore

/// How the processes of a session agree on its plan when the config brings none: rank 0
/// plans with VPIPE on the model's profiles and broadcasts the layout as the runtime's own
/// bytes (`PlanBytes`); every process builds the same placement from them. A failure on
/// rank 0 fails every process with rank 0's message.
///
/// There is no profiling phase across processes: every process must build the same
/// placement from the first step.
enum PlanAgreement {
    static func agreedLayout(_ config: SessionConfig, _ transport: Transport) throws -> PlanLayout {
        var bytes: [UInt8]?
        var error: String?
        if transport.rank == 0 {
            do {
                if config.model.layers.allSatisfy({ $0.profile.fwdSeconds <= 0 && $0.profile.bwdSeconds <= 0 }) {
                    throw VPipeError.invalidField(field: "plan", message: "missing, and model.layers carry no profiles: with training.transport TRANSPORT_MPI give a plan or per-layer profiles (rank 0 plans with them); a distributed session does not profile")
                }
                let request = PlanRequest(model: config.model, cluster: config.cluster,
                                          options: PlanOptions(schedule: config.training.schedule, microBatches: config.training.microBatches, planner: .vpipe))
                bytes = PlanBytes.encode(try Planning.plan(request).layout)
            } catch let e {
                error = "\(e)"
            }
        }
        return try PlanBytes.decode(try transport.broadcast(bytes, error: error, root: 0))
    }
}
