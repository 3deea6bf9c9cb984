/// Where a save's or a load's time goes (seconds, summed over the files this process wrote
/// or read), for `make bench-checkpoint`: pass one to `save(to:timing:)` / `load(from:timing:)`.
public final class CheckpointTiming: @unchecked Sendable {
    // Save.
    /// Gathering the metadata and encoding it (protobuf).
    public var serialise = 0.0
    /// CRC-32 of the blobs and the metadata.
    public var checksum = 0.0
    /// write(2) of blobs, metadata and trailer into the temporary file (the page cache).
    public var write = 0.0
    /// fsync of the temporary file (the bytes reach the disk).
    public var fsync = 0.0
    /// rename over the final name and fsync of the directory.
    public var rename = 0.0
    // Load.
    /// open, map, header, trailer, metadata CRC and decode, the model checks.
    public var open = 0.0
    /// CRC-32 of the blobs read (and the finite-weights check).
    public var verify = 0.0
    /// Copying the checked values into the session's tensors.
    public var copy = 0.0

    public init() {}

    /// Runs `body`, adding its duration to the field `phase`.
    func measure<T>(_ phase: ReferenceWritableKeyPath<CheckpointTiming, Double>, _ body: () throws -> T) rethrows -> T {
        let t0 = monotonicSeconds()
        defer { self[keyPath: phase] += monotonicSeconds() - t0 }
        return try body()
    }
}

extension Optional where Wrapped == CheckpointTiming {
    /// `body`, timed into `phase` when there is a timing to fill.
    func measure<T>(_ phase: ReferenceWritableKeyPath<CheckpointTiming, Double>, _ body: () throws -> T) rethrows -> T {
        guard let timing = self else { return try body() }
        return try timing.measure(phase, body)
    }
}
