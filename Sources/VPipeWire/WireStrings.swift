import CVPipeProto
import VPipeCore

/// Checks the string fields of a message on the wire, before their C copies are read.
///
/// protobuf-c copies a string field into a NUL-terminated C string, so a name sent as
/// "relu\0evil" reaches the library as "relu" with no error: a callback, layer or model
/// name would be silently cut. Invalid UTF-8 would be just as silently repaired by Swift's
/// `String(cString:)`. The decoded struct cannot show either, so this walks the wire bytes
/// with the message's protobuf-c descriptors (every string field of every nested message,
/// not a hand-kept list) and refuses the message naming the field, e.g.
/// `model.layers[2].external.callback`.
enum WireStrings {
    /// Throws `invalidField` for the first string field holding a NUL byte or invalid UTF-8.
    /// `bytes` must already have been accepted by the unpacker; anything unexpected ends the walk.
    static func check(_ bytes: UnsafeRawBufferPointer, descriptor: UnsafePointer<ProtobufCMessageDescriptor>) throws {
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        var trail: [Step] = []
        try walk(UnsafeBufferPointer(start: base, count: bytes.count), descriptor, trail: &trail)
    }

    /// protobuf-c itself refuses deeper nesting long before this; the bound keeps the walk finite.
    private static let maxDepth = 100

    /// One field on the way down to the string being checked: where its tag starts in its
    /// message's bytes. The path a refusal names ("layers[2].external.callback") is built
    /// from these only when a string is refused; building it for every field cost more
    /// than the walk itself (a checkpoint's metadata has thousands of fields).
    private struct Step {
        let message: UnsafeBufferPointer<UInt8>
        let tagOffset: Int
        let number: UInt32
        let field: UnsafePointer<ProtobufCFieldDescriptor>
    }

    private static func walk(_ bytes: UnsafeBufferPointer<UInt8>, _ descriptor: UnsafePointer<ProtobufCMessageDescriptor>,
                             trail: inout [Step]) throws {
        guard trail.count < maxDepth else { return }
        var at = 0
        while let (tagOffset, number, payload) = nextField(bytes, &at) {
            guard let payload, let field = field(number, in: descriptor) else { continue }  // unknown: kept as bytes, never read
            let type = field.pointee.type
            guard type == PROTOBUF_C_TYPE_STRING || type == PROTOBUF_C_TYPE_MESSAGE else { continue }
            trail.append(Step(message: bytes, tagOffset: tagOffset, number: number, field: field))
            defer { trail.removeLast() }
            if type == PROTOBUF_C_TYPE_STRING {
                try checkString(payload, field: trail)
            } else if let sub = field.pointee.descriptor {
                try walk(payload, sub.assumingMemoryBound(to: ProtobufCMessageDescriptor.self), trail: &trail)
            }
        }
    }

    /// The field starting at `at`, which it moves past: where its tag starts, its number and,
    /// for a length-delimited field, its payload. nil at the end or on anything unexpected.
    private static func nextField(_ bytes: UnsafeBufferPointer<UInt8>, _ at: inout Int)
        -> (tagOffset: Int, number: UInt32, payload: UnsafeBufferPointer<UInt8>?)?
    {
        let tagOffset = at
        guard at < bytes.count, let tag = varint(bytes, &at) else { return nil }
        let number = UInt32(truncatingIfNeeded: tag >> 3)
        switch tag & 7 {
        case 0: guard varint(bytes, &at) != nil else { return nil }
        case 1: at += 8
        case 5: at += 4
        case 2:
            guard let length = varint(bytes, &at), length <= UInt64(bytes.count - at) else { return nil }
            let payload = UnsafeBufferPointer(rebasing: bytes[at..<(at + Int(length))])
            at += Int(length)
            return (tagOffset, number, payload)
        default: return nil
        }
        return (tagOffset, number, nil)
    }

    /// The field path of `trail`, repeated fields with their index (the number of earlier
    /// occurrences of the same field number in the same message).
    private static func path(_ trail: [Step]) -> String {
        trail.map { step in
            var name = String(cString: step.field.pointee.name)
            if step.field.pointee.label == PROTOBUF_C_LABEL_REPEATED {
                var count = 0, at = 0
                while at < step.tagOffset, let next = nextField(step.message, &at) {
                    if next.number == step.number { count += 1 }
                }
                name += "[\(count)]"
            }
            return name
        }.joined(separator: ".")
    }

    private static func checkString(_ s: UnsafeBufferPointer<UInt8>, field trail: [Step]) throws {
        if let nul = s.firstIndex(of: 0) {
            let field = path(trail)
            let before = String(decoding: s[..<nul].prefix(40), as: UTF8.self)
            throw VPipeError.invalidField(field: field, message:
                "contains a NUL byte at offset \(nul) of \(s.count) (after \"\(before)\"); a name may not contain NUL: it would be cut to \"\(before)\"")
        }
        if String(validating: s, as: UTF8.self) == nil {
            throw VPipeError.invalidField(field: path(trail), message: "is not valid UTF-8 (\(s.count) bytes)")
        }
    }

    private static func field(_ number: UInt32, in descriptor: UnsafePointer<ProtobufCMessageDescriptor>)
        -> UnsafePointer<ProtobufCFieldDescriptor>?
    {
        guard let fields = descriptor.pointee.fields else { return nil }
        for i in 0..<Int(descriptor.pointee.n_fields) where fields[i].id == number { return fields + i }
        return nil
    }

    private static func varint(_ bytes: UnsafeBufferPointer<UInt8>, _ at: inout Int) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while at < bytes.count, shift < 64 {
            let b = bytes[at]
            at += 1
            value |= UInt64(b & 0x7f) << shift
            if b & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }
}
