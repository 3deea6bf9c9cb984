import CVPipeKernels

/// CRC-32 (the zlib/PNG polynomial) of every checkpoint blob and metadata section. Debian's
/// zlib computes it at about 1 GB/s, slower than the disk takes the bytes; vpk_crc32
/// (Sources/CVPipeKernels/crc32.c) folds with carry-less multiplies at memory speed and
/// gives zlib's result.
enum Checksum {
    /// CRC-32 of `bytes`, continuing from `seed` (0 for a fresh checksum).
    static func crc32(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress else { return seed }
        return vpk_crc32(seed, base, bytes.count)
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { crc32($0) } }
}
