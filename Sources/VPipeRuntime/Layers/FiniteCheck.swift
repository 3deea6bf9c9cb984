import Synchronization

/// Finds NaN and ±infinity in tensors, so that a bad value stops a step where it appears
/// instead of spreading silently into the weights.
///
/// Cost: one vectorised read of the tensor, three SSE2 operations per 16 bytes: a float is
/// NaN or infinite exactly when its exponent bits are all ones, and `(bits & 0x7f800000) +
/// 0x00800000` reaches the sign bit exactly then, so OR-ing those sums over the tensor sets
/// the sign bit iff some value is bad (no compare, no unsigned max, which baseline x86-64 lacks).
/// Only when that finds something does a scalar pass locate the first bad element for the
/// message. Layers that keep finite values finite exactly (`Layer.keepsFiniteValuesFinite`,
/// ReLU) are not checked at all: their inputs already were. `make bench-runtime` measures the cost per step. The scan is
/// a device kernel (`Device.firstNonFinite`); `firstNonFinite(_:count:)` is the CPU's.
public enum FiniteCheck {
    static let exponentMask: UInt32 = 0x7f80_0000

    /// Only `make bench-runtime` turns this off, to measure what the checks cost per step;
    /// the library never does.
    nonisolated(unsafe) public static var enabledForBenchmark = true

    /// Only `make bench-runtime` turns this on: every check then adds its duration to
    /// `nanosecondsForBenchmark`, so the bench can report the checks' share of the very steps
    /// it times (a direct measurement that a loaded machine does not blur the way an on/off
    /// comparison of two step times is blurred).
    nonisolated(unsafe) public static var timedForBenchmark = false
    public static let nanosecondsForBenchmark = Atomic<UInt64>(0)

    /// Index of the first NaN or infinite value among `count` floats at `values`; nil when
    /// every value is finite.
    public static func firstNonFinite(_ values: UnsafePointer<Float>, count: Int) -> Int? {
        UnsafeRawPointer(values).withMemoryRebound(to: UInt32.self, capacity: count) { bits in
            let exponent = SIMD16<UInt32>(repeating: exponentMask)
            let carry = SIMD16<UInt32>(repeating: 0x0080_0000)
            var seen = SIMD16<UInt32>(repeating: 0)
            var i = 0
            while i + 16 <= count {
                let v = UnsafeRawPointer(bits + i).loadUnaligned(as: SIMD16<UInt32>.self)
                seen |= (v & exponent) &+ carry
                i += 16
            }
            var tail: UInt32 = 0
            while i < count {
                tail |= (bits[i] & exponentMask) &+ 0x0080_0000
                i += 1
            }
            guard (seen.max() | tail) & 0x8000_0000 != 0 else { return nil }
            return (0..<count).first { bits[$0] & 0x7fff_ffff >= exponentMask }
        }
    }

    /// Throws when `tensor` holds a NaN or an infinity, naming `what` (e.g. "output") and the
    /// row and column of the first one, after `label` (stage, layer, micro-batch).
    public static func require(_ tensor: Tensor, _ what: String, label: @autoclosure () -> String, hint: @autoclosure () -> String = "") throws {
        guard enabledForBenchmark else { return }
        let start = timedForBenchmark ? monotonicNanoseconds() : 0
        let found = tensor.device.firstNonFinite(tensor)
        if timedForBenchmark { nanosecondsForBenchmark.add(monotonicNanoseconds() &- start, ordering: .relaxed) }
        guard let k = found else { return }
        let columns = max(1, tensor.columns)
        let h = hint()
        let value = tensor.toArray()[k]  // the error path only: the one host read
        throw RuntimeError.failed("\(label()): \(what) row \(k / columns) column \(k % columns) is \(value)\(h.isEmpty ? "" : "; " + h); the step stopped and no weight changed")
    }

}
