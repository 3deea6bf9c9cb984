import Testing
import VPipeCore

/// Every bad value a host can send is rejected with the protobuf path of the field.
@Suite struct ValidationTests {
    static func base() -> PlanRequest {
        PlanRequest(model: Fixtures.handModel, cluster: Fixtures.handCluster,
                    options: PlanOptions(schedule: .oneFOneB, microBatches: 4, planner: .timeBalanced))
    }

    static let cases: [(String, @Sendable (inout PlanRequest) -> Void, String)] = [
        ("zero layers", { $0.model.layers = [] }, "model.layers"),
        ("zero devices", { $0.cluster.devices = []; $0.cluster.links = [] }, "cluster.devices"),
        ("more devices than layers", {
            $0.cluster = Fixtures.cluster(5)
        }, "cluster.devices"),
        ("negative forward time", { $0.model.layers[1].profile.fwdSeconds = -1 }, "model.layers[1].profile.fwd_seconds"),
        ("NaN backward time", { $0.model.layers[2].profile.bwdSeconds = .nan }, "model.layers[2].profile.bwd_seconds"),
        ("infinite forward time", { $0.model.layers[0].profile.fwdSeconds = .infinity }, "model.layers[0].profile.fwd_seconds"),
        ("negative stash", { $0.model.layers[3].profile.stashBytes = -5 }, "model.layers[3].profile.stash_bytes"),
        ("zero memory", { $0.cluster.devices[1].memoryBytes = 0 }, "cluster.devices[1].memory_bytes"),
        ("zero host bandwidth", { $0.cluster.devices[0].hostBandwidth = 0 }, "cluster.devices[0].host_bandwidth"),
        ("NaN host bandwidth", { $0.cluster.devices[0].hostBandwidth = .nan }, "cluster.devices[0].host_bandwidth"),
        ("negative speed", { $0.cluster.devices[1].speed = -2 }, "cluster.devices[1].speed"),
        ("zero link bandwidth", { $0.cluster.links[0].bandwidth = 0 }, "cluster.links[0].bandwidth"),
        ("negative latency", { $0.cluster.links[0].latency = -1 }, "cluster.links[0].latency"),
        ("missing link", { $0.cluster.links = [] }, "cluster.links"),
        ("zero micro-batches", { $0.options.microBatches = 0 }, "options.micro_batches"),
        ("fractional state factor", { $0.model.stateBytesPerParamByte = 0.5 }, "model.state_bytes_per_param_byte"),
        ("NaN state factor", { $0.model.stateBytesPerParamByte = .nan }, "model.state_bytes_per_param_byte"),
    ]

    @Test(arguments: cases.indices)
    func rejectsWithTheFieldName(index: Int) {
        let (what, mutate, field) = Self.cases[index]
        var r = Self.base()
        mutate(&r)
        do {
            let plan = try Planning.plan(r)
            Issue.record("\(what): expected an error naming \(field), got a plan with \(plan.stages.count) stages")
        } catch let VPipeError.invalidField(f, message) {
            #expect(f == field, "\(what): expected field \(field), got \(f): \(message)")
        } catch {
            Issue.record("\(what): expected invalidField(\(field)), got \(error)")
        }
    }

    @Test func baseRequestIsValid() throws {
        _ = try Planning.plan(Self.base())
    }
}
