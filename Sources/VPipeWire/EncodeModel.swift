import CVPipeProto
import VPipeCore

extension WireEncode {
    /// A serialised `vpipe.ModelSpec` (what `vpipe import` writes; a host embeds it in its own
    /// `PlanRequest`).
    public static func modelSpec(_ model: ModelSpec) -> [UInt8] {
        let arena = CArena()
        let message = fill(model, arena)
        return pack(message, size: vpipe__model_spec__get_packed_size, pack: vpipe__model_spec__pack)
    }
}
