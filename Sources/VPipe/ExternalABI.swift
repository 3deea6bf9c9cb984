#if canImport(Glibc)
import Glibc
#endif
import CVPipeABI
import VPipeCore
import VPipeRuntime

// vp_register_external_layer: C function pointers become the runtime's callbacks.

/// The host's NUL-terminated message, or what it returned when it wrote none.
private func message(_ buffer: [CChar], _ rc: Int32) -> String {
    let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return bytes.isEmpty ? "returned \(rc)" : String(decoding: bytes, as: UTF8.self)
}

@_cdecl("vp_register_external_layer")
public func cRegisterExternalLayer(_ name: UnsafePointer<CChar>?, _ forward: vp_external_forward?, _ backward: vp_external_backward?,
                                   _ userData: UnsafeMutableRawPointer?) -> vp_status {
    withStatus {
        guard let name else { throw ArgumentError(message: "callback: NULL; name the external layer") }
        guard let forward else { throw ArgumentError(message: "forward: NULL") }
        guard let backward else { throw ArgumentError(message: "backward: NULL") }
        // A C string cannot hold a NUL, but it can hold bytes that are not UTF-8, which a
        // lenient decoding would silently turn into another name.
        guard let callback = String(validatingCString: name) else {
            throw ArgumentError(message: "callback: not valid UTF-8; a layer name is UTF-8 text without NUL characters")
        }
        guard !callback.isEmpty else { throw ArgumentError(message: "callback: empty name") }
        nonisolated(unsafe) let user = userData
        // in/out widths are the layer's; the closures get them from the ExternalLayer call.
        ExternalRegistry.register(callback, ExternalCallbacks(
            forward: { input, output, rows, inFeatures, outFeatures in
                var error = [CChar](repeating: 0, count: 512)
                let rc = forward(user, input, output, Int64(rows), Int64(inFeatures), Int64(outFeatures), &error, error.count - 1)
                return rc == 0 ? nil : message(error, rc)
            },
            backward: { input, output, gradOutput, gradInput, rows, inFeatures, outFeatures in
                var error = [CChar](repeating: 0, count: 512)
                let rc = backward(user, input, output, gradOutput, gradInput, Int64(rows), Int64(inFeatures), Int64(outFeatures), &error, error.count - 1)
                return rc == 0 ? nil : message(error, rc)
            }))
    }
}
