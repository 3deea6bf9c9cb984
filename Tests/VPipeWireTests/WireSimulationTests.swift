import CVPipeProto
import Testing
import VPipeCore
import VPipeWire

/// SimulationRequest in, SimulationReport out, through the bytes a host would send.
@Suite struct WireSimulationTests {
    @Test func simulationRoundTripsThroughTheWire() throws {
        let request = WireTests.request
        let plan = try Planning.plan(request)
        let bytes = WireEncode.simulationRequest(model: request.model, cluster: request.cluster, plan: plan)
        let decoded = try bytes.withUnsafeBytes { try WireDecode.simulationRequest($0) }
        #expect(decoded.model == request.model && decoded.cluster == request.cluster)
        #expect(decoded.layout == plan.layout && decoded.schedule == plan.schedule && decoded.microBatches == plan.microBatches)

        let report = try Simulator(model: decoded.model, cluster: decoded.cluster)
            .simulate(decoded.layout, schedule: decoded.schedule, microBatches: decoded.microBatches)
        let out = WireEncode.simulationReport(report, title: "bert")
        let message = try #require(out.withUnsafeBufferPointer { vpipe__simulation_report__unpack(nil, $0.count, $0.baseAddress) })
        defer { vpipe__simulation_report__free_unpacked(message, nil) }
        #expect(message.pointee.iteration_seconds == report.iterationSeconds)
        #expect(message.pointee.cost_model_iteration_seconds == plan.iterationSeconds)
        #expect(message.pointee.n_stages == plan.stages.count)
        #expect(message.pointee.n_schedule == plan.stages.count)
        let first = try #require(message.pointee.schedule?[0])
        #expect(String(cString: first).hasPrefix("0F0 0SEND_F0"))
        let stage = try #require(message.pointee.stages?[0])
        #expect(abs(stage.pointee.busy_fraction + stage.pointee.idle_fraction - 1) < 1e-12)
        #expect(stage.pointee.peak_memory_bytes > 0)
        #expect(String(cString: try #require(message.pointee.svg)).hasPrefix("<svg"))
        #expect(String(cString: try #require(message.pointee.chrome_trace_json)).contains("\"traceEvents\""))
    }

    @Test func mismatchedPlanAndEmptyBytesAreNamed() throws {
        let plan = try Planning.plan(WireTests.request)
        var model = WireTests.request.model
        model.layers.removeLast(2)
        let bytes = WireEncode.simulationRequest(model: model, cluster: WireTests.request.cluster, plan: plan)
        do {
            let r = try bytes.withUnsafeBytes { try WireDecode.simulationRequest($0) }
            _ = try Simulator(model: r.model, cluster: r.cluster).simulate(r.layout, schedule: r.schedule, microBatches: r.microBatches)
            Issue.record("expected an error")
        } catch let VPipeError.invalidField(field, _) {
            #expect(field.hasPrefix("plan.stages"), "got \(field)")
        } catch { Issue.record("unexpected \(error)") }
        do { _ = try [UInt8]().withUnsafeBytes { try WireDecode.simulationRequest($0) }; Issue.record("expected an error") } catch let VPipeError.invalidField(field, _) {
            #expect(field == "model")
        } catch { Issue.record("unexpected \(error)") }
    }
}
