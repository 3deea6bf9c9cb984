import Synchronization

/// The CPU backend: a virtual device whose memory is host memory (OpenBLAS and Swift loops
/// compute on it, compiled in release mode).
///
/// Its arena has the capacity of the device it stands for, so an allocation past it fails
/// like a GPU out-of-memory; storage comes from `BufferPool`; the copy queue is a
/// `CopyEngine` thread, optionally throttled to the device's host link. The kernels live in
/// the `CPUDevice+*.swift` files next to this one, one family per file.
///
/// `pointer(_:)` is the only place a tensor's address becomes a host pointer; kernels call
/// it and nothing outside this folder does. A subclass may map addresses differently
/// (`CheckedDevice` poisons them outside kernels).
class CPUDevice: Device, @unchecked Sendable {
    let name: String
    let arena: MemorySpace
    let hostPool: MemorySpace
    private let copyEngine: CopyEngine
    private let transfers = Atomic<Int>(0)

    /// The device uncharged host temporaries (`Tensor(shape:in: nil,…)`) and spaces made on
    /// their own belong to: unlimited, never shut down.
    static let host = CPUDevice(name: "host", capacity: Int.max, bandwidth: nil)

    /// `capacity`: arena bytes (capped at physical memory, since these devices live in it);
    /// `bandwidth`: bytes/s of the modelled host link (nil: copies at memcpy speed).
    init(name: String, capacity: Int, bandwidth: Double?) {
        self.name = name
        arena = MemorySpace(name: name, kind: .device, capacity: min(capacity, BufferPool.physicalBytes))
        hostPool = MemorySpace(name: "\(name) host pool", kind: .host, capacity: BufferPool.physicalBytes)
        copyEngine = CopyEngine(bandwidth: bandwidth)
        arena.owner = self
        hostPool.owner = self
    }

    var isHostAddressable: Bool { true }
    var hostTransfers: Int { transfers.load(ordering: .relaxed) }
    final func countHostTransfer() { transfers.add(1, ordering: .relaxed) }

    // MARK: Addresses (overridden by CheckedDevice)

    func address(of storage: UnsafeMutablePointer<Float>) -> DeviceAddress { DeviceAddress(bits: UInt(bitPattern: storage)) }
    func storage(at address: DeviceAddress) -> UnsafeMutablePointer<Float> { UnsafeMutablePointer(bitPattern: address.bits)! }
    /// A tensor's elements as a host pointer: for kernels only.
    @inline(__always) final func pointer(_ t: Tensor) -> UnsafeMutablePointer<Float> { storage(at: t.address) }

    // MARK: Memory

    func allocate(_ count: Int, in space: MemorySpace?, for label: @autoclosure () -> String) throws -> DeviceAddress {
        let bytes = count * MemoryLayout<Float>.stride
        try space?.reserve(bytes, for: label())
        guard let p = BufferPool.take(count) else {
            space?.release(bytes)
            throw RuntimeError.outOfMemory(space: "host allocator", what: label(), requested: bytes,
                                           inUse: 0, capacity: BufferPool.physicalBytes)
        }
        return address(of: p)
    }

    func free(_ address: DeviceAddress, count: Int, in space: MemorySpace?) {
        BufferPool.give(storage(at: address), count)
        space?.release(count * MemoryLayout<Float>.stride)
    }

    // MARK: Copies

    func upload(_ values: UnsafeBufferPointer<Float>, to tensor: Tensor) {
        countHostTransfer()
        guard let base = values.baseAddress else { return }
        pointer(tensor).update(from: base, count: min(values.count, tensor.count))
    }

    func download(_ tensor: Tensor, into: UnsafeMutableBufferPointer<Float>) {
        countHostTransfer()
        guard let base = into.baseAddress else { return }
        base.update(from: pointer(tensor), count: min(into.count, tensor.count))
    }

    func withHostAccess<R>(_ tensor: Tensor, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        countHostTransfer()
        return try body(UnsafeMutableBufferPointer(start: pointer(tensor), count: tensor.count))
    }

    func copy(_ source: Tensor, to destination: Tensor) {
        pointer(destination).update(from: pointer(source), count: min(source.count, destination.count))
    }

    func onCopyQueue(_ job: @escaping () -> Void) { copyEngine.submit(job) }

    func copyOnQueue(_ tensors: [Tensor], to space: MemorySpace, label: String) throws -> [Tensor] {
        try copyEngine.copy(tensors, to: space, label: label)
    }

    func shutdown() { copyEngine.shutdown() }

    // MARK: Calibration

    private let reference = ReferenceOperands()

    func runReferenceKernel() {
        let n = ReferenceOperands.size
        for _ in 0..<4 {
            sgemm(m: n, n: n, k: n, a: reference.a, lda: n, b: reference.b, ldb: n, c: reference.c, ldc: n)
        }
    }
}

/// The calibration product's operands: host arrays of the device, outside any arena (they
/// are the measuring instrument, not the model's memory).
private final class ReferenceOperands: @unchecked Sendable {
    static let size = 96
    let a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>, c: UnsafeMutablePointer<Float>
    init() {
        let n = ReferenceOperands.size * ReferenceOperands.size
        a = .allocate(capacity: n); a.initialize(repeating: 0.5, count: n)
        b = .allocate(capacity: n); b.initialize(repeating: 0.25, count: n)
        c = .allocate(capacity: n); c.initialize(repeating: 0, count: n)
    }
    deinit { a.deallocate(); b.deallocate(); c.deallocate() }
}

extension Tensor {
    /// The elements' host address, for a library that reads or writes them after the call
    /// returns (MPI's non-blocking sends and receives). Only a host-addressable device has
    /// one; for any other the transport must stage through host copies (or use a
    /// device-aware library), and this throws, naming the device.
    func hostAddressForTransfer() throws -> UnsafeMutablePointer<Float> {
        guard device.isHostAddressable, let cpu = device as? CPUDevice else {
            throw RuntimeError.failed("\(device.name): its memory is not host-addressable, so this transport cannot send or receive it in place")
        }
        return cpu.pointer(self)
    }
}
