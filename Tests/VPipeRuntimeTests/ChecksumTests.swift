import CVPipeKernels
import XCTest

/// The checkpoint's CRC-32 (Sources/CVPipeKernels/crc32.c): every path this CPU has (512-bit
/// and 128-bit carry-less folding, slicing-by-8 tables) gives the bitwise CRC-32 (zlib's
/// values) for every length, alignment and starting value, so a checkpoint written on one
/// machine verifies on any other.
final class ChecksumTests: XCTestCase {
    /// CRC-32 bit by bit, continuing `crc` as zlib's crc32 does: the reference.
    static func bitwise(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var c = ~crc
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c >> 1) ^ (0xEDB8_8320 & (0 &- (c & 1))) }
        }
        return ~c
    }

    func testKnownValue() {
        let check = Array("123456789".utf8)
        for path in 0...2 {
            XCTAssertEqual(vpk_crc32_using(Int32(path), 0, check, check.count), 0xCBF4_3926, "path \(path) (CPU: \(String(cString: vpk_crc32_path())))")
        }
    }

    func testEveryPathAgreesWithTheBitwiseReference() {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        let bytes: [UInt8] = (0..<(1 << 20) + 300).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
        bytes.withUnsafeBytes { raw in
            var cases: [(offset: Int, length: Int)] = []
            for length in 0..<700 { cases.append((length % 13, length)) }
            for length in [1023, 1024, 4096 + 48, 65536 + 17, 1 << 20] { cases.append((3, length)) }
            for (offset, length) in cases {
                let seed = UInt32(truncatingIfNeeded: length &* 2654435761)
                let p = raw.baseAddress! + offset
                let expected = Self.bitwise(seed, UnsafeRawBufferPointer(start: p, count: length))
                XCTAssertEqual(vpk_crc32_using(0, seed, p, length), expected, "slicing-by-8, \(length) bytes at offset \(offset)")
                XCTAssertEqual(vpk_crc32_using(1, seed, p, length), expected, "128-bit folding, \(length) bytes at offset \(offset)")
                XCTAssertEqual(vpk_crc32_using(2, seed, p, length), expected, "512-bit folding, \(length) bytes at offset \(offset)")
                XCTAssertEqual(vpk_crc32(seed, p, length), expected, "vpk_crc32 (\(String(cString: vpk_crc32_path()))), \(length) bytes at offset \(offset)")
            }
            // Continuing a checksum piece by piece (the writer's pieces) equals one pass.
            let whole = vpk_crc32(0, raw.baseAddress!, raw.count)
            var pieces: UInt32 = 0
            var done = 0
            for size in [5, 64, 1000, 4096, 123_457] where done < raw.count {
                pieces = vpk_crc32(pieces, raw.baseAddress! + done, size)
                done += size
            }
            pieces = vpk_crc32(pieces, raw.baseAddress! + done, raw.count - done)
            XCTAssertEqual(pieces, whole, "a CRC continued over pieces differs from one pass")
        }
    }
}
