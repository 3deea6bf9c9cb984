import CZlib

/// CRC-32 (the zlib/PNG polynomial) of every checkpoint blob and metadata section, computed
/// by zlib: its table-driven braided implementation runs at several GB/s, so checksumming
/// costs a fraction of writing the bytes.
enum Checksum {
    /// CRC-32 of `bytes`, continuing from `seed` (0 for a fresh checksum).
    static func crc32(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        var crc = UInt(seed)
        var offset = 0
        // zlib takes a 32-bit length: large blobs go in 1 GiB pieces.
        while offset < bytes.count {
            let n = min(bytes.count - offset, 1 << 30)
            crc = CZlib.crc32(crc, bytes.baseAddress!.advanced(by: offset).assumingMemoryBound(to: Bytef.self), uInt(n))
            offset += n
        }
        return UInt32(truncatingIfNeeded: crc)
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { crc32($0) } }
}
