import CVPipeKernels

/// CRC-32 (the zlib/PNG polynomial, zlib's values) of every checkpoint blob and metadata
/// section: vpk_crc32 (Sources/CVPipeKernels/crc32.c) folds with carry-less multiplies at
/// memory speed, where a table-driven CRC would take longer than the disk takes the bytes.
enum Checksum {
    /// CRC-32 of `bytes`, continuing from `seed` (0 for a fresh checksum).
    static func crc32(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress else { return seed }
        return vpk_crc32(seed, base, bytes.count)
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { crc32($0) } }
}
