#if canImport(Glibc)
import Glibc
#endif
import CVPipeABI
import VPipeCore
import VPipeRuntime
import VPipeWire

// The session functions of the C ABI (include/vpipe.h). A handle is an opaque pointer to a
// `SessionHandle`; live handles are registered so that a closed or unknown handle is an
// error, not a use-after-free.

final class SessionHandle: @unchecked Sendable {
    let session: TrainingSession
    private var mutex = pthread_mutex_t()
    init(_ session: TrainingSession) {
        self.session = session
        pthread_mutex_init(&mutex, nil)
    }
    deinit { pthread_mutex_destroy(&mutex) }
    /// Calls on one session are serialised. A call from a stage thread (a host layer
    /// callback calling back into a session) is refused: it would wait on the step that is
    /// waiting for the callback.
    func locked<T>(_ body: () throws -> T) throws -> T {
        if StageThread.isCurrent {
            throw ArgumentError(message: "session: called from inside a layer callback on a stage thread; session calls are not allowed there (the step is waiting for the callback)")
        }
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}

enum SessionRegistry {
    nonisolated(unsafe) private static var live: [UnsafeMutableRawPointer: SessionHandle] = [:]
    nonisolated(unsafe) private static var mutex: pthread_mutex_t = {
        var m = pthread_mutex_t()
        pthread_mutex_init(&m, nil)
        return m
    }()

    static func add(_ handle: SessionHandle) -> UnsafeMutableRawPointer {
        let key = Unmanaged.passUnretained(handle).toOpaque()
        pthread_mutex_lock(&mutex)
        live[key] = handle
        pthread_mutex_unlock(&mutex)
        return key
    }

    static func find(_ pointer: OpaquePointer?) throws -> SessionHandle {
        guard let pointer else { throw ArgumentError(message: "session: NULL") }
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        guard let h = live[UnsafeMutableRawPointer(pointer)] else {
            throw ArgumentError(message: "session: not an open session (already closed, or never returned by vp_session_open)")
        }
        return h
    }

    static func remove(_ pointer: OpaquePointer) -> SessionHandle? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return live.removeValue(forKey: UnsafeMutableRawPointer(pointer))
    }
}

@_cdecl("vp_session_open")
public func cSessionOpen(_ config: UnsafePointer<UInt8>?, _ length: Int, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> vp_status {
    guard let out else { return fail(Int32(VP_ERR_INVALID_ARGUMENT), "session_out: NULL; pass the address of a vp_session *") }
    out.pointee = nil
    return withStatus {
        let input = try inputBytes(config, length, name: "config")
        let c = try WireSession.sessionConfig(input)
        let session = try TrainingSession(c)
        out.pointee = OpaquePointer(SessionRegistry.add(SessionHandle(session)))
    }
}

func step(_ session: OpaquePointer?, _ inputs: UnsafeBufferPointer<Float>, _ targets: UnsafePointer<Int32>?, _ targetCount: Int,
          _ lossOut: UnsafeMutablePointer<Float>?) -> vp_status {
    withStatus {
        let handle = try SessionRegistry.find(session)
        guard let lossOut else { throw ArgumentError(message: "loss_out: NULL; pass the address of a float") }
        guard targetCount >= 0, targetCount < Int(Int32.max) else { throw ArgumentError(message: "target_count: \(targetCount) is not plausible") }
        guard let targets = targets ?? (targetCount == 0 ? UnsafePointer(bitPattern: 1) : nil) else {
            throw ArgumentError(message: "targets: NULL with target_count = \(targetCount)")
        }
        let t = UnsafeBufferPointer(start: targetCount == 0 ? nil : targets, count: targetCount)
        lossOut.pointee = try handle.locked { try handle.session.step(inputs: inputs, targets: t) }
    }
}

@_cdecl("vp_session_step")
public func cSessionStep(_ session: OpaquePointer?, _ inputs: UnsafePointer<Float>?, _ inputCount: Int,
                         _ targets: UnsafePointer<Int32>?, _ targetCount: Int, _ lossOut: UnsafeMutablePointer<Float>?) -> vp_status {
    guard inputCount >= 0, inputCount < Int(Int32.max), inputs != nil || inputCount == 0 else {
        return fail(Int32(VP_ERR_INVALID_ARGUMENT), "inputs: NULL or input_count \(inputCount) implausible")
    }
    return step(session, UnsafeBufferPointer(start: inputs, count: inputCount), targets, targetCount, lossOut)
}

@_cdecl("vp_session_step_tokens")
public func cSessionStepTokens(_ session: OpaquePointer?, _ tokens: UnsafePointer<Int32>?, _ tokenCount: Int,
                               _ targets: UnsafePointer<Int32>?, _ targetCount: Int, _ lossOut: UnsafeMutablePointer<Float>?) -> vp_status {
    guard tokenCount >= 0, tokenCount < Int(Int32.max), tokens != nil || tokenCount == 0 else {
        return fail(Int32(VP_ERR_INVALID_ARGUMENT), "tokens: NULL or token_count \(tokenCount) implausible")
    }
    // (A bad handle is reported by `step`.)
    if let handle = try? SessionRegistry.find(session), !handle.session.takesTokens {
        return fail(Int32(VP_ERR_INVALID_ARGUMENT), "tokens: the model's first layer is not an embedding; use vp_session_step with float inputs")
    }
    // Token ids travel as float32, exact up to 2^24 (vocabularies are limited to that).
    var floats = [Float](repeating: 0, count: tokenCount)
    if let tokens { for i in 0..<tokenCount { floats[i] = Float(tokens[i]) } }
    return floats.withUnsafeBufferPointer { step(session, $0, targets, targetCount, lossOut) }
}

@_cdecl("vp_session_stats")
public func cSessionStats(_ session: OpaquePointer?, _ out: UnsafeMutablePointer<vp_bytes>?) -> vp_status {
    withOutput(out, name: "stats_out") {
        let handle = try SessionRegistry.find(session)
        return WireSession.stats(try handle.locked { handle.session.statistics() })
    }
}

@_cdecl("vp_session_write_trace")
public func cSessionWriteTrace(_ session: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> vp_status {
    withStatus {
        let handle = try SessionRegistry.find(session)
        guard let path else { throw ArgumentError(message: "path: NULL") }
        let name = String(cString: path)
        let trace = try handle.locked { handle.session.trace() }
        let text = name.hasSuffix(".svg") ? trace.svg : trace.json
        guard let file = fopen(path, "w") else {
            throw VPipeError.invalidField(field: "path", message: "cannot open \(name) for writing: \(String(cString: strerror(errno)))")
        }
        let bytes = Array(text.utf8)
        let written = fwrite(bytes, 1, bytes.count, file)
        let closed = fclose(file)
        if written != bytes.count || closed != 0 {
            throw VPipeError.invalidField(field: "path", message: "could not write all of \(name): \(String(cString: strerror(errno)))")
        }
    }
}

@_cdecl("vp_session_get_parameters")
public func cSessionGetParameters(_ session: OpaquePointer?, _ layer: UInt32, _ out: UnsafeMutablePointer<vp_bytes>?) -> vp_status {
    withOutput(out, name: "parameters_out") {
        let handle = try SessionRegistry.find(session)
        let tensors = try handle.locked { try handle.session.parameters(layer: Int(layer)) }
        return WireSession.layerParameters(layer: Int(layer), tensors)
    }
}

@_cdecl("vp_session_set_parameters")
public func cSessionSetParameters(_ session: OpaquePointer?, _ layer: UInt32, _ bytes: UnsafePointer<UInt8>?, _ length: Int) -> vp_status {
    withStatus {
        let handle = try SessionRegistry.find(session)
        let input = try inputBytes(bytes, length, name: "parameters")
        let tensors = try WireSession.layerParameters(input)
        try handle.locked { try handle.session.setParameters(layer: Int(layer), tensors) }
    }
}

@_cdecl("vp_session_apply_plan")
public func cSessionApplyPlan(_ session: OpaquePointer?, _ plan: UnsafePointer<UInt8>?, _ length: Int) -> vp_status {
    withStatus {
        // Not serialised with the session's other calls: a request may arrive while a step
        // runs; the session takes it at the next iteration.
        let handle = try SessionRegistry.find(session)
        let input = try inputBytes(plan, length, name: "plan")
        let decoded = try WireDecode.plan(input)
        try handle.session.applyPlan(decoded.layout, schedule: decoded.schedule, microBatches: decoded.microBatches)
    }
}

@_cdecl("vp_session_save")
public func cSessionSave(_ session: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> vp_status {
    withStatus {
        let handle = try SessionRegistry.find(session)
        guard let path else { throw ArgumentError(message: "path: NULL") }
        try handle.locked { try handle.session.save(to: String(cString: path)) }
    }
}

@_cdecl("vp_session_load")
public func cSessionLoad(_ session: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> vp_status {
    withStatus {
        let handle = try SessionRegistry.find(session)
        guard let path else { throw ArgumentError(message: "path: NULL") }
        try handle.locked { try handle.session.load(from: String(cString: path)) }
    }
}

@_cdecl("vp_session_close")
public func cSessionClose(_ session: OpaquePointer?) -> vp_status {
    guard let session else { return Int32(VP_OK) }
    return withStatus {
        if StageThread.isCurrent {
            throw ArgumentError(message: "session: vp_session_close called from inside a layer callback on a stage thread; close it after the step")
        }
        guard let handle = SessionRegistry.remove(session) else {
            throw ArgumentError(message: "session: not an open session (already closed, or never returned by vp_session_open)")
        }
        try handle.locked { handle.session.close() }
    }
}
