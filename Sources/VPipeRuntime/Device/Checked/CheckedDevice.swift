/// A device whose memory the host cannot dereference, to prove the seam holds: the CPU
/// device's kernels, over addresses that are poisoned outside them.
///
/// Every address it hands out is the real host address plus `poison`, which makes it
/// non-canonical on x86-64 and AArch64: code that turned a tensor's address into a pointer
/// and dereferenced it (a layer bypassing its device) would fault at once. Only its kernels
/// and copies remove the poison. `withHostAccess` is staged through a host copy, as on a
/// GPU without mapped memory; host transfers are counted as on every device, so a test can
/// check that forward, backward and the optimizer never touch memory from the host.
///
/// Select it with `VPIPE_DEVICE=checked` (sessions) or `DeviceBackends.make("checked", for: …)`.
final class CheckedDevice: CPUDevice, @unchecked Sendable {
    /// Added to every real address: bit 62 set, outside any canonical user address.
    static let poison: UInt = 1 << 62

    override var isHostAddressable: Bool { false }

    override func address(of storage: UnsafeMutablePointer<Float>) -> DeviceAddress {
        DeviceAddress(bits: UInt(bitPattern: storage) &+ CheckedDevice.poison)
    }

    override func storage(at address: DeviceAddress) -> UnsafeMutablePointer<Float> {
        UnsafeMutablePointer(bitPattern: address.bits &- CheckedDevice.poison)!
    }

    /// Staged: the values are downloaded into a host buffer, `body` runs on it, and the
    /// buffer is uploaded back, as a GPU backend without mapped memory would do.
    override func withHostAccess<R>(_ tensor: Tensor, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        countHostTransfer()
        var staging = [Float](repeating: 0, count: max(tensor.count, 1))
        return try staging.withUnsafeMutableBufferPointer { all in
            let host = all.baseAddress!, memory = pointer(tensor), n = tensor.count  // never empty: max(count, 1)
            host.update(from: memory, count: n)
            defer { memory.update(from: host, count: n) }
            return try body(UnsafeMutableBufferPointer(start: host, count: n))
        }
    }
}
