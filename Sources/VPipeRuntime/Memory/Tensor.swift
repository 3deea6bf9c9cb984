/// A float32 array charged to a `MemorySpace` for as long as it lives.
///
/// Reference semantics on purpose: a layer's output is the next layer's input and may sit
/// in both stashes; the bytes are charged once and released when the last reference goes,
/// which is how a real allocator's reference counts behave. Shapes are row-major; the
/// runtime keeps activations 2-D, `[rows, features]`, with rows = sequences × tokens.
public final class Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let count: Int
    public let data: UnsafeMutablePointer<Float>
    public let space: MemorySpace?

    /// Zero-filled storage for `shape` in `space` (nil: an uncharged host temporary).
    public init(shape: [Int], in space: MemorySpace?, for label: @autoclosure () -> String) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else { throw RuntimeError.invalidShape("negative dimension in \(shape) for \(label())") }
        // Checked: a host-given size must not overflow (and trap) on its way to the allocator.
        var count = 1
        for d in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow, product <= Int.max / MemoryLayout<Float>.stride else {
                throw RuntimeError.invalidShape("\(shape) is too large to allocate for \(label())")
            }
            count = product
        }
        try space?.reserve(count * MemoryLayout<Float>.stride, for: label())
        self.shape = shape
        self.count = count
        self.space = space
        guard let storage = BufferPool.take(count) else {
            space?.release(count * MemoryLayout<Float>.stride)
            throw RuntimeError.outOfMemory(space: "host allocator", what: label(), requested: count * MemoryLayout<Float>.stride,
                                           inUse: 0, capacity: BufferPool.physicalBytes)
        }
        data = storage
    }

    deinit {
        BufferPool.give(data, count)
        space?.release(bytes)
    }

    public var bytes: Int { count * MemoryLayout<Float>.stride }

    /// rows × columns of a 2-D tensor (a 1-D tensor is one row).
    public var rows: Int { shape.count >= 2 ? shape[0] : 1 }
    public var columns: Int { shape.last ?? 1 }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: data, count: count) }

    /// A copy in `space` (a swap out or in, a migration, a checkpoint).
    public func copy(to space: MemorySpace?, for label: @autoclosure () -> String) throws -> Tensor {
        let t = try Tensor(shape: shape, in: space, for: label())
        t.data.update(from: data, count: count)
        return t
    }

    public func toArray() -> [Float] { Array(buffer) }

    /// Overwrites every element; `values` must hold exactly `count` of them.
    public func fill(from values: [Float]) throws {
        guard values.count == count else {
            throw RuntimeError.invalidShape("fill: \(values.count) values for a tensor of shape \(shape) (\(count) elements)")
        }
        values.withUnsafeBufferPointer { buffer in
            if let base = buffer.baseAddress { data.update(from: base, count: count) }
        }
    }

    public func zero() { data.update(repeating: 0, count: count) }
}
