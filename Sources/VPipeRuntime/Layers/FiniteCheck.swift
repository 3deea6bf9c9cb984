/// Finds NaN and ±infinity in tensors, so that a bad value stops a step where it appears
/// instead of spreading silently into the weights.
///
/// Cost: one vectorised read of the tensor (16 lanes of `bits & 0x7fffffff`, max-reduced:
/// a float is NaN or infinite exactly when its exponent bits are all ones, i.e. when those
/// bits are >= 0x7f800000). Only when that finds something does a scalar pass locate the first
/// bad element for the message. `make bench-runtime` measures the cost per step. The scan is
/// a device kernel (`Device.firstNonFinite`); `firstNonFinite(_:count:)` is the CPU's.
public enum FiniteCheck {
    static let exponentMask: UInt32 = 0x7f80_0000

    /// Only `make bench-runtime` turns this off, to measure what the checks cost per step;
    /// the library never does.
    nonisolated(unsafe) public static var enabledForBenchmark = true

    /// Index of the first NaN or infinite value among `count` floats at `values`; nil when
    /// every value is finite.
    public static func firstNonFinite(_ values: UnsafePointer<Float>, count: Int) -> Int? {
        UnsafeRawPointer(values).withMemoryRebound(to: UInt32.self, capacity: count) { bits in
            let magnitude = SIMD16<UInt32>(repeating: 0x7fff_ffff)
            var largest = SIMD16<UInt32>(repeating: 0)
            var i = 0
            while i + 16 <= count {
                let v = UnsafeRawPointer(bits + i).loadUnaligned(as: SIMD16<UInt32>.self)
                largest = pointwiseMax(largest, v & magnitude)
                i += 16
            }
            var top = largest.max()
            while i < count {
                top = max(top, bits[i] & 0x7fff_ffff)
                i += 1
            }
            guard top >= exponentMask else { return nil }
            return (0..<count).first { bits[$0] & 0x7fff_ffff >= exponentMask }
        }
    }

    /// Throws when `tensor` holds a NaN or an infinity, naming `what` (e.g. "output") and the
    /// row and column of the first one, after `label` (stage, layer, micro-batch).
    public static func require(_ tensor: Tensor, _ what: String, label: @autoclosure () -> String, hint: @autoclosure () -> String = "") throws {
        guard enabledForBenchmark, let k = tensor.device.firstNonFinite(tensor) else { return }
        let columns = max(1, tensor.columns)
        let h = hint()
        let value = tensor.toArray()[k]  // the error path only: the one host read
        throw RuntimeError.failed("\(label()): \(what) row \(k / columns) column \(k % columns) is \(value)\(h.isEmpty ? "" : "; " + h); the step stopped and no weight changed")
    }
}
