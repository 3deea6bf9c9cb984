import CVPipeABI
import VPipeCore
import VPipeWire

// vp_simulate (include/vpipe.h): the discrete-event simulator behind the C ABI, with the same
// plumbing as vp_plan and vp_evaluate (ABI.swift): check pointers, decode, validate, call,
// encode, map errors.

@_cdecl("vp_simulate")
public func cSimulate(_ request: UnsafePointer<UInt8>?, _ requestLength: Int, _ reportOut: UnsafeMutablePointer<vp_bytes>?) -> vp_status {
    withOutput(reportOut, name: "report_out") {
        let input = try inputBytes(request, requestLength, name: "request")
        let r = try WireDecode.simulationRequest(input)
        let report = try Evaluation.simulate(model: r.model, cluster: r.cluster, layout: r.layout,
                                             schedule: r.schedule, microBatches: r.microBatches)
        return WireEncode.simulationReport(report, title: r.model.name)
    }
}
