#if canImport(Glibc)
import Glibc
#endif
import CVPipeABI
import VPipeCore
import VPipeRuntime
import VPipeWire

// The C ABI (include/vpipe.h). Each function is thin: check pointers, decode, call into
// VPipeCore, encode, map errors to a vp_status and a per-thread message. Nothing here may
// trap on input a host can send; the header documents ownership and thread safety.

let libraryVersion = LibraryVersion.string
nonisolated(unsafe) private let versionCString: UnsafePointer<CChar> = UnsafePointer(strdup(libraryVersion)!)

@_cdecl("vp_version")
public func cVersion() -> UnsafePointer<CChar> { versionCString }

@_cdecl("vp_abi_version")
public func cABIVersion() -> UInt32 { UInt32(VPIPE_ABI_VERSION) }

@_cdecl("vp_last_error")
public func cLastError() -> UnsafePointer<CChar> { LastError.current }

@_cdecl("vp_bytes_free")
public func cBytesFree(_ bytes: UnsafeMutablePointer<vp_bytes>?) {
    guard let bytes else { return }
    free(bytes.pointee.data)
    bytes.pointee.data = nil
    bytes.pointee.len = 0
}

@_cdecl("vp_plan")
public func cPlan(_ request: UnsafePointer<UInt8>?, _ requestLength: Int, _ planOut: UnsafeMutablePointer<vp_bytes>?) -> vp_status {
    withOutput(planOut, name: "plan_out") {
        let input = try inputBytes(request, requestLength, name: "request")
        let planRequest = try WireDecode.planRequest(input)
        let plan = try Planning.plan(planRequest)
        return WireEncode.plan(plan)
    }
}

@_cdecl("vp_evaluate")
public func cEvaluate(_ request: UnsafePointer<UInt8>?, _ requestLength: Int, _ evaluationOut: UnsafeMutablePointer<vp_bytes>?) -> vp_status {
    withOutput(evaluationOut, name: "evaluation_out") {
        let input = try inputBytes(request, requestLength, name: "request")
        let r = try WireDecode.evaluationRequest(input)
        let (plan, violations) = try Evaluation.evaluate(model: r.model, cluster: r.cluster, layout: r.layout,
                                                         schedule: r.schedule, microBatches: r.microBatches)
        return WireEncode.evaluation(plan, feasible: violations.isEmpty, violations: violations)
    }
}

// MARK: - plumbing

/// A NULL or impossible input buffer is VP_ERR_INVALID_ARGUMENT; (NULL, 0) is an empty message.
struct ArgumentError: Error { let message: String }

func inputBytes(_ pointer: UnsafePointer<UInt8>?, _ length: Int, name: String) throws -> UnsafeRawBufferPointer {
    if length < 0 || length > Int(Int32.max) {
        throw ArgumentError(message: "\(name)_len: \(length) is not a plausible message length")
    }
    guard let pointer else {
        if length == 0 { return UnsafeRawBufferPointer(start: nil, count: 0) }
        throw ArgumentError(message: "\(name): NULL with \(name)_len = \(length)")
    }
    return UnsafeRawBufferPointer(start: pointer, count: length)
}

/// Runs `body`, hands its bytes to the host in `out` (malloc'd, freed by vp_bytes_free), and
/// turns every error into a status plus `vp_last_error()`'s message.
func withOutput(_ out: UnsafeMutablePointer<vp_bytes>?, name: String, _ body: () throws -> [UInt8]) -> vp_status {
    guard let out else {
        return fail(Int32(VP_ERR_INVALID_ARGUMENT), "\(name): NULL; pass the address of a vp_bytes to receive the result")
    }
    out.pointee = vp_bytes(data: nil, len: 0)
    return withStatus {
        let bytes = try body()
        guard let buffer = malloc(max(bytes.count, 1))?.assumingMemoryBound(to: UInt8.self) else {
            throw VPipeError.internalError("out of host memory for a \(bytes.count)-byte result")
        }
        bytes.withUnsafeBufferPointer { buffer.update(from: $0.baseAddress!, count: bytes.count) }
        out.pointee = vp_bytes(data: buffer, len: bytes.count)
    }
}

/// Runs `body`, mapping every error to a status and the per-thread message
/// (`vp_last_error`): the one place the ABI's error mapping is written.
func withStatus(_ body: () throws -> Void) -> vp_status {
    do {
        try body()
        return Int32(VP_OK)
    } catch let error as ArgumentError {
        return fail(Int32(VP_ERR_INVALID_ARGUMENT), error.message)
    } catch let error as WireError {
        return fail(Int32(VP_ERR_DECODE), error.description)
    } catch let error as VPipeError {
        return fail(status(of: error), error.description)
    } catch let error as RuntimeError {
        return fail(Int32(VP_ERR_RUNTIME), error.description)
    } catch let error as CheckpointError {
        return fail(Int32(VP_ERR_CHECKPOINT), error.description)
    } catch {
        return fail(Int32(VP_ERR_INTERNAL), "unexpected error: \(error)")
    }
}

func status(of error: VPipeError) -> vp_status {
    switch error {
    case .invalidField: return Int32(VP_ERR_INVALID_REQUEST)
    case .infeasible: return Int32(VP_ERR_INFEASIBLE)
    case .notImplemented: return Int32(VP_ERR_NOT_IMPLEMENTED)
    case .internalError: return Int32(VP_ERR_INTERNAL)
    }
}

func fail(_ status: vp_status, _ message: String) -> vp_status {
    LastError.set(message)
    return status
}
