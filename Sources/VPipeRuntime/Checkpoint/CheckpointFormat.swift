#if canImport(Glibc)
import Glibc
#endif

/// The checkpoint file format (docs/checkpoint.md):
///
///     offset 0   "VPIPECKP"                      8 bytes
///            8   format version, u32 LE          (refused when newer than `version`)
///           12   0, u32                          (reserved)
///           16   blobs: raw little-endian float32 tensors, back to back
///            M   metadata: protobuf vpipe.Checkpoint (shapes, offsets, CRC-32 of each blob)
///      end - 24  trailer: u64 M, u64 metadata length, u32 CRC-32 of the metadata, "VPCK"
///
/// The metadata comes last so that the writer streams each tensor once (checksumming it as
/// it goes) and never holds the whole checkpoint in memory; the fixed-size trailer finds it.
/// A truncated file has no valid trailer; a flipped bit fails the metadata's or a blob's CRC.
public enum CheckpointFormat {
    public static let version = 1
    static let magic: [UInt8] = Array("VPIPECKP".utf8)
    static let trailerMagic: [UInt8] = Array("VPCK".utf8)
    static let headerBytes = 16
    static let trailerBytes = 24
}

/// Streams blobs into an `AtomicFile`, then the metadata and the trailer.
final class CheckpointWriter {
    private let file: AtomicFile
    private let codec: CheckpointCodec
    private let timing: CheckpointTiming?
    /// A blob is checksummed and written in pieces of at most this size, so that write(2)
    /// copies each piece while the CRC has just brought it into the cache: one pass over
    /// memory. The pieces end at multiples of this size in the file, so that the page cache
    /// holds the blobs in 2 MiB folios that a reader's mapping takes whole (PMD-mapped): a
    /// load then maps and unmaps the file in microseconds instead of one entry per 4 KiB page
    /// (measured: 0.001 s instead of 0.03 s to map 805 MB; docs/benchmarks.md).
    static let piece = 2 << 20

    init(path: String, codec: CheckpointCodec, timing: CheckpointTiming? = nil) throws {
        file = try AtomicFile(path: path, timing: timing)
        self.codec = codec
        self.timing = timing
        var header = CheckpointFormat.magic
        header += UInt32(CheckpointFormat.version).littleEndianBytes
        header += UInt32(0).littleEndianBytes
        try file.write(header)
    }

    /// Appends a tensor's values (float32, little-endian: the host's order on every platform
    /// Swift builds libvpipe for here) and returns where it went.
    func blob(_ tensor: Tensor) throws -> CheckpointMetadata.Blob {
        // Zero-copy on a host-addressable device; staged through host memory on another.
        try tensor.withHostAccess { values in
            let bytes = UnsafeRawBufferPointer(values)
            let offset = file.offset
            var crc: UInt32 = 0
            var done = 0
            while done < bytes.count {
                let end = min(bytes.count, done + Self.piece - (offset + done) % Self.piece)
                let piece = UnsafeRawBufferPointer(rebasing: bytes[done..<end])
                crc = timing.measure(\.checksum) { Checksum.crc32(piece, seed: crc) }
                try file.write(piece)
                done += piece.count
            }
            return CheckpointMetadata.Blob(shape: tensor.shape, offset: offset, bytes: bytes.count, crc32: crc)
        }
    }

    /// Writes the metadata and trailer and commits the file under its name. Returns the
    /// file's size and the metadata's CRC (a manifest records both for each shard).
    func finish(_ metadata: CheckpointMetadata) throws -> (bytes: Int, metadataCRC: UInt32) {
        let meta = timing.measure(\.serialise) { codec.encode(metadata) }
        let crc = timing.measure(\.checksum) { Checksum.crc32(meta) }
        var trailer = UInt64(file.offset).littleEndianBytes
        trailer += UInt64(meta.count).littleEndianBytes
        trailer += crc.littleEndianBytes
        trailer += CheckpointFormat.trailerMagic
        try file.write(meta)
        try file.write(trailer)
        let size = file.offset
        try file.commit()
        return (size, crc)
    }

    func abandon() { file.abandon() }
}

/// A checkpoint file opened for reading: mapped read-only, header, trailer and metadata
/// checked (version, bounds, CRC). Blobs are checked one by one with `verify` before use.
final class CheckpointReader {
    let path: String
    let metadata: CheckpointMetadata
    let metadataCRC: UInt32
    let size: Int
    private let base: UnsafeRawPointer?

    private let timing: CheckpointTiming?

    init(path: String, codec: CheckpointCodec, timing: CheckpointTiming? = nil) throws {
        self.path = path
        self.timing = timing
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw CheckpointError.io(path: path, "cannot open: \(AtomicFile.reason())") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw CheckpointError.io(path: path, "cannot stat: \(AtomicFile.reason())") }
        size = Int(st.st_size)
        guard size >= CheckpointFormat.headerBytes else {
            throw CheckpointError.damaged(path: path, "\(size) bytes is shorter than the \(CheckpointFormat.headerBytes)-byte header (truncated, or not a checkpoint)")
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw CheckpointError.io(path: path, "cannot map \(size) bytes: \(AtomicFile.reason())")
        }
        // The page tables in one call instead of a fault per 4 KiB page, and a file that is
        // not in the page cache read ahead in large sequential pieces (MADV_POPULATE_READ,
        // Linux 5.14; best effort: older kernels fault the pages in as the CRCs read them).
        _ = madvise(p, size, MADV_SEQUENTIAL)
        _ = madvise(p, size, 22 /* MADV_POPULATE_READ */)
        base = UnsafeRawPointer(p)
        let bytes = UnsafeRawBufferPointer(start: p, count: size)
        do {
            guard Array(bytes[0..<8]) == CheckpointFormat.magic else {
                throw CheckpointError.damaged(path: path, "it does not start with \"VPIPECKP\": not a libvpipe checkpoint")
            }
            let version = Int(bytes.loadLE(UInt32.self, at: 8))
            if version > CheckpointFormat.version {
                throw CheckpointError.newerFormat(path: path, found: version, supported: CheckpointFormat.version)
            }
            guard version >= 1 else { throw CheckpointError.damaged(path: path, "format version 0 does not exist") }
            guard size >= CheckpointFormat.headerBytes + CheckpointFormat.trailerBytes else {
                throw CheckpointError.damaged(path: path, "\(size) bytes: truncated (no room for the trailer)")
            }
            let t = size - CheckpointFormat.trailerBytes
            guard Array(bytes[(t + 20)..<(t + 24)]) == CheckpointFormat.trailerMagic else {
                throw CheckpointError.damaged(path: path, "no trailer at its end (\(size) bytes): the file is truncated or was not completely written")
            }
            let metaOffset = bytes.loadLE(UInt64.self, at: t), metaLength = bytes.loadLE(UInt64.self, at: t + 8)
            let crc = bytes.loadLE(UInt32.self, at: t + 16)
            guard metaOffset >= UInt64(CheckpointFormat.headerBytes), metaLength <= UInt64(t), metaOffset <= UInt64(t) - metaLength else {
                throw CheckpointError.damaged(path: path, "the trailer places the metadata at \(metaOffset)+\(metaLength), outside the file's \(size) bytes")
            }
            let meta = UnsafeRawBufferPointer(rebasing: bytes[Int(metaOffset)..<Int(metaOffset + metaLength)])
            let actual = Checksum.crc32(meta)
            guard actual == crc else {
                throw CheckpointError.damaged(path: path, "metadata checksum mismatch (stored CRC-32 \(hex(crc)), computed \(hex(actual)))")
            }
            metadataCRC = crc
            do {
                metadata = try codec.decode(meta)
            } catch {
                throw CheckpointError.damaged(path: path, "metadata does not decode: \(error)")
            }
            if metadata.formatVersion > CheckpointFormat.version {
                throw CheckpointError.newerFormat(path: path, found: metadata.formatVersion, supported: CheckpointFormat.version)
            }
            for layer in metadata.layers {
                for (k, b) in (layer.parameters + layer.optimizerState).enumerated() {
                    try checkBounds(b, "layer \(layer.index) (\"\(layer.name)\") tensor \(k)", limit: Int(metaOffset))
                }
            }
        } catch {
            munmap(p, size)
            throw error
        }
    }

    deinit { if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) } }

    /// `what` names the blob in a refusal; built only then (a checkpoint has thousands).
    private func checkBounds(_ b: CheckpointMetadata.Blob, _ what: @autoclosure () -> String, limit: Int) throws {
        var count = 1
        for d in b.shape {
            guard d >= 0, d <= 1 << 40 else { throw CheckpointError.damaged(path: path, "\(what()) has dimension \(d)") }
            let (c, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else { throw CheckpointError.damaged(path: path, "\(what()) has shape \(b.shape), too large") }
            count = c
        }
        guard count.multipliedReportingOverflow(by: 4).partialValue == b.bytes, count <= Int.max / 4 else {
            throw CheckpointError.damaged(path: path, "\(what()) has shape \(b.shape) but \(b.bytes) bytes")
        }
        guard b.offset >= CheckpointFormat.headerBytes, b.offset % 4 == 0, b.bytes <= limit, b.offset <= limit - b.bytes else {
            throw CheckpointError.damaged(path: path, "\(what()) lies at \(b.offset)+\(b.bytes), outside the blob section (\(CheckpointFormat.headerBytes)..<\(limit))")
        }
    }

    /// The blob's values after checking its CRC-32 and, with `finite` (weights), that each is
    /// a finite number. Both checks run chunk by chunk, the finite check on a chunk the CRC has
    /// just brought into the cache, so the blob is read from memory once.
    func verify(_ b: CheckpointMetadata.Blob, _ what: @autoclosure () -> String, finite: Bool = false) throws -> UnsafeBufferPointer<Float> {
        let values = UnsafeBufferPointer(start: base!.advanced(by: b.offset).assumingMemoryBound(to: Float.self), count: b.bytes / 4)
        let chunk = 64 << 10  // floats (256 KiB): stays in L2 between the two checks
        var actual: UInt32 = 0, nonFinite: Int?
        timing.measure(\.verify) {
            var at = 0
            while at < values.count {
                let n = min(chunk, values.count - at), start = values.baseAddress! + at
                actual = Checksum.crc32(UnsafeRawBufferPointer(start: start, count: n * 4), seed: actual)
                if finite, nonFinite == nil, let i = FiniteCheck.firstNonFinite(start, count: n) { nonFinite = at + i }
                at += n
            }
        }
        guard actual == b.crc32 else {
            throw CheckpointError.damaged(path: path, "\(what()): checksum mismatch (stored CRC-32 \(hex(b.crc32)), computed \(hex(actual)))")
        }
        if let nonFinite { throw CheckpointError.damaged(path: path, "\(what()) holds a non-finite value (index \(nonFinite))") }
        return values
    }
}

func hex(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
}

extension FixedWidthInteger {
    var littleEndianBytes: [UInt8] { withUnsafeBytes(of: self.littleEndian, Array.init) }
}

extension UnsafeRawBufferPointer {
    /// A little-endian integer at `offset`, whatever its alignment.
    func loadLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
