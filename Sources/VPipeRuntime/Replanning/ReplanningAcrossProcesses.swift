import VPipeCore

/// Online re-planning when the stages live in several processes: each process measured only
/// its own stages, so every process shares its window (`allGather`), rank 0 decides on the
/// merged window for everyone, and broadcasts the decision; every process records the same
/// decision and, when it migrates, applies the same plan before the same step (the
/// transport's end-of-step agreement checks that it did).
///
/// A stage's speed is measured by its own process against that process's best calibration
/// (a device that slows down shows; one that was slow from the start is in the profiles).
enum ReplanningAcrossProcesses {
    static func decide(window: ReplanningWindow, transport: Transport,
                       _ decide: (ReplanningWindow) -> (decision: MigrationDecision, layout: PlanLayout?)) throws
        -> (decision: MigrationDecision, layout: PlanLayout?) {
        let parts = try transport.allGather(window.encoded()).map(ReplanningWindow.init(encoded:))
        let merged = ReplanningWindow(merging: parts)
        var payload: [UInt8]?
        if transport.rank == 0 {
            let (decision, layout) = decide(merged)
            payload = encode(decision, layout)
        }
        return try decode(try transport.broadcast(payload, error: nil, root: 0))
    }

    /// [old, new, before (Float64 bits), iteration, note length (Int64)], the note (UTF-8),
    /// then the layout's `PlanBytes` (nothing: stay).
    static func encode(_ d: MigrationDecision, _ layout: PlanLayout?) -> [UInt8] {
        let note = Array(d.note.utf8)
        let words: [UInt64] = [d.oldPredictedSeconds.bitPattern, d.newPredictedSeconds.bitPattern, d.iterationSecondsBefore.bitPattern,
                               UInt64(max(0, d.iteration)), UInt64(note.count)]
        var bytes = words.flatMap { w in withUnsafeBytes(of: w.littleEndian, Array.init) }
        bytes += note
        if let layout { bytes += PlanBytes.encode(layout) }
        return bytes
    }

    static func decode(_ bytes: [UInt8]) throws -> (decision: MigrationDecision, layout: PlanLayout?) {
        func word(_ k: Int) -> UInt64 { bytes[(8 * k)..<(8 * k + 8)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) } }
        guard bytes.count >= 40, Int(word(4)) <= bytes.count - 40 else {
            throw RuntimeError.failed("a re-planning decision received from rank 0 is malformed (\(bytes.count) bytes)")
        }
        let noteLength = Int(word(4))
        let note = String(decoding: bytes[40..<(40 + noteLength)], as: UTF8.self)
        let rest = Array(bytes[(40 + noteLength)...])
        let decision = MigrationDecision(source: "online", iteration: Int(word(3)), oldPredictedSeconds: Double(bitPattern: word(0)),
                                         newPredictedSeconds: Double(bitPattern: word(1)), applied: false,
                                         iterationSecondsBefore: Double(bitPattern: word(2)), note: note)
        return (decision, rest.isEmpty ? nil : try PlanBytes.decode(rest))
    }
}
