#if canImport(Glibc)
import Glibc
#endif

/// A layer whose forward and backward are the host's code (C function pointers, Python
/// callables), registered by name before a session opens. The library owns the tensors:
/// the callbacks get views of buffers in the stage's arena, `[rows, in]` in and
/// `[rows, out]` out, and fill them. The runtime keeps the input and the output as the
/// stash, so the backward gets both.
///
/// Threading: callbacks run on the stage's worker thread (one stage's calls never overlap;
/// different stages' may). In Python the GIL serialises them.
public struct ExternalCallbacks: @unchecked Sendable {
    /// (input [rows, in], output [rows, out], rows, in, out) -> nil on success, or the host's message.
    public var forward: (_ input: UnsafeMutablePointer<Float>, _ output: UnsafeMutablePointer<Float>, _ rows: Int,
                         _ inFeatures: Int, _ outFeatures: Int) -> String?
    /// (input, output, output gradient, input gradient to fill, rows, in, out) -> nil or the message.
    public var backward: (_ input: UnsafeMutablePointer<Float>, _ output: UnsafeMutablePointer<Float>,
                          _ gradOutput: UnsafeMutablePointer<Float>, _ gradInput: UnsafeMutablePointer<Float>, _ rows: Int,
                          _ inFeatures: Int, _ outFeatures: Int) -> String?

    public init(forward: @escaping (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Int, Int, Int) -> String?,
                backward: @escaping (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
                                     UnsafeMutablePointer<Float>, Int, Int, Int) -> String?) {
        self.forward = forward
        self.backward = backward
    }
}

/// Host-registered layer implementations, by name. Thread-safe.
public enum ExternalRegistry {
    nonisolated(unsafe) private static var table: [String: ExternalCallbacks] = [:]
    nonisolated(unsafe) private static var mutex: pthread_mutex_t = {
        var m = pthread_mutex_t()
        pthread_mutex_init(&m, nil)
        return m
    }()

    /// Registers (or replaces) `name`. Sessions opened afterwards use it.
    public static func register(_ name: String, _ callbacks: ExternalCallbacks) {
        pthread_mutex_lock(&mutex)
        table[name] = callbacks
        pthread_mutex_unlock(&mutex)
    }

    public static func unregister(_ name: String) {
        pthread_mutex_lock(&mutex)
        table[name] = nil
        pthread_mutex_unlock(&mutex)
    }

    public static func lookup(_ name: String) -> ExternalCallbacks? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return table[name]
    }
}

public final class ExternalLayer: Layer {
    public let name: String
    let callback: String
    let inFeatures: Int, outFeatures: Int
    let callbacks: ExternalCallbacks

    public init(name: String, callback: String, inFeatures: Int, outFeatures: Int, label: String) throws {
        guard let c = ExternalRegistry.lookup(callback) else {
            throw RuntimeError.failed("\(label): external layer callback \"\(callback)\" is not registered (vp_register_external_layer before opening the session)")
        }
        self.name = name
        self.callback = callback
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        callbacks = c
    }

    public var parameters: [Tensor] { [] }
    public var gradients: [Tensor] { [] }
    public func place(in space: MemorySpace?) throws {}
    public func adopt(values: [Tensor], gradients: [Tensor]) throws {}

    public func forward(_ input: Tensor, _ context: LayerContext) throws -> (output: Tensor, saved: [Tensor]) {
        let rows = try ShapeCheck.matrix(input, columns: inFeatures, "input", context)
        let output = try context.allocate([rows, outFeatures], "output")  // [rows, out]
        // The host's code needs host memory: explicit mappings (zero-copy on the CPU device).
        try input.withHostAccess { x in
            try output.withHostAccess { y in
                Unwritten.poison(y)
                if let message = callbacks.forward(x.start, y.start, rows, inFeatures, outFeatures) {
                    throw RuntimeError.failed("\(context.label): host callback \"\(callback)\" forward failed: \(message)")
                }
                try Unwritten.require(y, columns: outFeatures, "output", callback: callback, context)
            }
        }
        return (output, [input, output])
    }

    public func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor? {
        try ShapeCheck.saved(saved, count: 2, context)
        let rows = try ShapeCheck.matrix(saved[0], columns: inFeatures, "saved input", context)
        try ShapeCheck.exact(gradOutput, [rows, outFeatures], "output gradient", context)
        let gradInput = try context.allocate([rows, inFeatures], "input gradient")  // [rows, in]
        try saved[0].withHostAccess { x in try saved[1].withHostAccess { y in try gradOutput.withHostAccess { dy in
            try gradInput.withHostAccess { dx in
                Unwritten.poison(dx)
                if let message = callbacks.backward(x.start, y.start, dy.start, dx.start, rows, inFeatures, outFeatures) {
                    throw RuntimeError.failed("\(context.label): host callback \"\(callback)\" backward failed: \(message)")
                }
                try Unwritten.require(dx, columns: inFeatures, "input gradient", callback: callback, context)
            }
        } } }
        return gradInput
    }
}

/// Catches a host callback that returns success without writing (all of) its output: the
/// buffer is filled beforehand with a NaN carrying a payload no arithmetic produces from
/// finite inputs, and any element still holding that exact bit pattern afterwards was never
/// written. (Without this the step would go on with whatever the buffer held before.)
enum Unwritten {
    static let marker: UInt32 = 0x7fc0_5eed

    static func poison(_ host: UnsafeMutableBufferPointer<Float>) { host.update(repeating: Float(bitPattern: marker)) }

    static func require(_ host: UnsafeMutableBufferPointer<Float>, columns: Int, _ what: String, callback: String,
                        _ context: LayerContext) throws {
        guard let k = host.firstIndex(where: { $0.bitPattern == marker }) else { return }
        let columns = max(1, columns)
        throw RuntimeError.failed("\(context.label): host callback \"\(callback)\" returned success but did not write its \(what) (row \(k / columns) column \(k % columns) and maybe more were left unwritten)")
    }
}

private extension UnsafeMutableBufferPointer where Element == Float {
    /// The first element's address for a C callback; an empty view (0 rows) gets a valid
    /// address the callback will not read, rather than NULL.
    var start: UnsafeMutablePointer<Float> { baseAddress ?? emptyHostBuffer }
}

nonisolated(unsafe) private let emptyHostBuffer = UnsafeMutablePointer<Float>.allocate(capacity: 1)
