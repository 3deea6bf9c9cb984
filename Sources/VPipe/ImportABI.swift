import CVPipeABI
import VPipeCore
import VPipeWire

// vp_import_pipedream: a PipeDream profiler graph (graph.txt) as a vpipe.ModelSpec, the same
// conversion as `vpipe import pipedream` (docs/pipedream-import.md).

@_cdecl("vp_import_pipedream")
public func cImportPipeDream(_ graph: UnsafePointer<UInt8>?, _ graphLength: Int, _ microBatchesPerMiniBatch: UInt32,
                             _ modelOut: UnsafeMutablePointer<vp_bytes>?) -> vp_status {
    withOutput(modelOut, name: "model_out") {
        let input = try inputBytes(graph, graphLength, name: "graph")
        guard let text = String(validating: input, as: UTF8.self) else {
            throw VPipeError.invalidField(field: "graph", message: "is not UTF-8 text")
        }
        let model = try PipeDreamGraph.parse(text).modelSpec(microBatchesPerMiniBatch: Int(microBatchesPerMiniBatch))
        return WireEncode.modelSpec(model)
    }
}
