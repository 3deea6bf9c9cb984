/// A float32 array on a `Device`, charged to one of its `MemorySpace`s for as long as it lives.
///
/// Reference semantics on purpose: a layer's output is the next layer's input and may sit
/// in both stashes; the bytes are charged once and released when the last reference goes,
/// which is how a real allocator's reference counts behave. Shapes are row-major; the
/// runtime keeps activations 2-D, `[rows, features]`, with rows = sequences × tokens.
///
/// A tensor's memory belongs to its device and may not be host-addressable: compute goes
/// through `device`'s kernels, host reads and writes through `toArray`, `fill(from:)` and
/// `withHostAccess` (explicit copies, or a mapping on a host-addressable device).
///
/// A view (`view(offset:shape:)`) shares its base's memory: the base stays alive and charged
/// while any view of it does (parameters of a stage are views of one allocation).
public final class Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let count: Int
    /// Where the elements start, in `device`'s memory; opaque outside the device.
    public let address: DeviceAddress
    public let device: Device
    public let space: MemorySpace?
    /// The tensor that owns the memory, for a view (nil: this tensor owns it).
    public let base: Tensor?

    /// Zero-filled storage for `shape` in `space` on the space's device (nil: an uncharged
    /// temporary on the host CPU device).
    public convenience init(shape: [Int], in space: MemorySpace?, for label: @autoclosure () -> String) throws {
        try self.init(shape: shape, on: space?.device ?? CPUDevice.host, in: space, for: label())
    }

    /// Zero-filled storage for `shape` on `device`, charged to `space` (one of its spaces, or nil: uncharged).
    public init(shape: [Int], on device: Device, in space: MemorySpace?, for label: @autoclosure () -> String) throws {
        let count = try Tensor.elementCount(shape, label())
        address = try device.allocate(count, in: space, for: label())
        self.shape = shape
        self.count = count
        self.device = device
        self.space = space
        base = nil
    }

    private init(viewOf base: Tensor, offset: Int, shape: [Int], count: Int) {
        self.shape = shape
        self.count = count
        address = base.address.advanced(by: offset)
        device = base.device
        space = base.space
        self.base = base.base ?? base
    }

    deinit {
        if base == nil { device.free(address, count: count, in: space) }
    }

    /// Elements of `shape`, checked: a host-given size must not overflow (and trap) on its way to the allocator.
    static func elementCount(_ shape: [Int], _ label: @autoclosure () -> String) throws -> Int {
        guard shape.allSatisfy({ $0 >= 0 }) else { throw RuntimeError.invalidShape("negative dimension in \(shape) for \(label())") }
        var count = 1
        for d in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow, product <= Int.max / MemoryLayout<Float>.stride else {
                throw RuntimeError.invalidShape("\(shape) is too large to allocate for \(label())")
            }
            count = product
        }
        return count
    }

    /// The `shape`-sized run of elements starting `offset` elements in, sharing this memory.
    public func view(offset: Int, shape: [Int]) throws -> Tensor {
        let n = try Tensor.elementCount(shape, "a view")
        guard offset >= 0, offset <= count, n <= count - offset else {
            throw RuntimeError.invalidShape("view of \(shape) at element \(offset) does not fit in a tensor of \(count) elements")
        }
        return Tensor(viewOf: self, offset: offset, shape: shape, count: n)
    }

    public var bytes: Int { count * MemoryLayout<Float>.stride }

    /// rows × columns of a 2-D tensor (a 1-D tensor is one row).
    public var rows: Int { shape.count >= 2 ? shape[0] : 1 }
    public var columns: Int { shape.last ?? 1 }

    /// A copy in `space` (a swap out or in, a migration, a receive buffer), on the space's
    /// device (nil: an uncharged host temporary).
    public func copy(to space: MemorySpace?, for label: @autoclosure () -> String) throws -> Tensor {
        let t = try Tensor(shape: shape, on: space?.device ?? CPUDevice.host, in: space, for: label())
        try t.assign(from: self)
        return t
    }

    /// Overwrites the elements with `source`'s (same count), whichever device it is on.
    public func assign(from source: Tensor) throws {
        guard source.count == count else {
            throw RuntimeError.invalidShape("assign: a tensor of shape \(source.shape) into one of shape \(shape)")
        }
        if source.device === device {
            device.copy(source, to: self)
        } else {
            // Between two devices (stages): through this tensor's host view. Zero-copy views
            // on CPU devices make this one memcpy; a GPU pair would copy peer to peer.
            device.withHostAccess(self) { source.device.download(source, into: $0) }
        }
    }

    /// The values, downloaded to the host.
    public func toArray() -> [Float] {
        // An empty tensor must not go through `unsafeUninitializedCapacity`: with capacity 0
        // that initialiser writes the count (0 over 0) into the runtime's one shared empty-array
        // storage, a data race with any thread reading an empty array's count (ThreadSanitizer
        // reported it between a stage thread's optimizer and a parameterless layer's readback).
        guard count > 0 else { return [] }
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            device.download(self, into: buffer)
            initialized = count
        }
    }

    /// Overwrites every element; `values` must hold exactly `count` of them.
    public func fill(from values: [Float]) throws {
        guard values.count == count else {
            throw RuntimeError.invalidShape("fill: \(values.count) values for a tensor of shape \(shape) (\(count) elements)")
        }
        values.withUnsafeBufferPointer { device.upload($0, to: self) }
    }

    /// Runs `body` on a host view of the values; writes land in the tensor.
    public func withHostAccess<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        try device.withHostAccess(self, body)
    }

    public func zero() { device.fill(self, with: 0) }
}
