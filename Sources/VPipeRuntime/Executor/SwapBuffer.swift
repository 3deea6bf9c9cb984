import VPipeCore

/// One stage's swapping during one iteration, layer by layer, inside the double buffer cost
/// model v1 charges (2 · max a_l over the stage's SWAP layers): at most one stash on its way
/// out and one on its way back, plus the one the running backward uses while the next one
/// comes in behind it.
///
/// - A SWAP layer's stash goes out as soon as its forward returns. Before the next SWAP
///   layer's forward makes a new stash, the previous swap-out must have landed: a copy
///   engine that falls behind (a throttled link, a machine busy with other work) stalls the
///   stage, as a GPU runtime would, instead of piling stashes up on the device.
/// - Swap-ins run in the order the backwards consume the stashes, one ahead: the next stash
///   is claimed once its swap-out has landed and no other swapped-in stash is waiting for
///   its backward (the running backward's own excepted). The copy queue runs in submission
///   order, so a swap-in submitted behind a swap-out allocates only after that one released
///   its device copy: at any moment at most two stashes are on the device.
/// - A backward whose stash was not claimed yet claims it itself and waits for it.
///
/// Before (micro-batch granular: all of a micro-batch's stashes moved as a unit, swap-outs
/// not awaited once a swap-in was issued) the stage held up to 3 · Σ a_l, and a copy queue
/// that fell behind kept stashes alive into later steps (measured: twice the predicted peak).
struct SwapBuffer {
    /// (micro-batch, local layer) of every swapped stash, in the order the backwards use them.
    private let order: [(microBatch: Int, layer: Int)]
    private var cursor = 0
    private var outgoing: SwapSlot?
    /// Claimed swap-ins whose backward has not taken them yet, oldest first.
    private var incoming: [SwapSlot] = []
    /// The stash the running backward uses.
    private var inUse: SwapSlot?
    private let device: Device
    private let stage: Stage

    init(stage: Stage, actions: [ScheduleAction]) {
        self.stage = stage
        device = stage.device
        let swapped = stage.policies.indices.filter { stage.policies[$0] == .swap }.reversed()
        order = actions.filter { $0.kind == .backward }.flatMap { a in swapped.map { (a.microBatch, $0) } }
    }

    var isEmpty: Bool { order.isEmpty }

    private func label(_ mb: Int, _ j: Int) -> String { "stage \(stage.index) layer \(stage.layers.lowerBound + j) micro-batch \(mb)" }

    /// Before a SWAP layer's forward: the previous swap-out must have left the device.
    mutating func beforeSwapForward(aborted: () -> Error?) throws {
        try outgoing?.waitSwappedOut(aborted: aborted)
        outgoing = nil
    }

    /// After a SWAP layer's forward: its stash starts out.
    mutating func sendOut(_ slot: SwapSlot, microBatch mb: Int, layer j: Int) {
        outgoing = slot
        let device = self.device, host = stage.host, label = label(mb, j)
        device.onCopyQueue { slot.swapOut(device, host: host, label: label) }
    }

    /// Claims the next stash's swap-in when the double buffer has room (call after every
    /// layer and action: the stage notices a landed swap-out at its next step).
    mutating func prefetch(_ slot: (Int, Int) -> SwapSlot?) {
        guard cursor < order.count, incoming.isEmpty || (incoming.count == 1 && incoming[0] === inUse) else { return }
        let (mb, j) = order[cursor]
        guard let next = slot(mb, j), next.isOnHost else { return }
        claim(next, mb, j)
    }

    private mutating func claim(_ slot: SwapSlot, _ mb: Int, _ j: Int) {
        cursor += 1
        incoming.append(slot)
        guard slot.claimSwapIn() else { return }
        let device = self.device, arena = stage.arena, label = label(mb, j)
        device.onCopyQueue { slot.swapIn(device, arena: arena, label: label) }
    }

    /// The backward of layer `j` for micro-batch `mb` takes its stash (claiming it now if
    /// the prefetch has not), after claiming the next one behind it.
    mutating func take(_ slot: SwapSlot, microBatch mb: Int, layer j: Int, aborted: () -> Error?,
                       lookup: (Int, Int) -> SwapSlot?) throws -> [Tensor] {
        if !incoming.contains(where: { $0 === slot }) {
            // Not prefetched: it is the next in order (a hand-written schedule may differ: find it).
            if let k = order[cursor...].firstIndex(where: { $0.microBatch == mb && $0.layer == j }) { cursor = k }
            claim(slot, mb, j)
        }
        inUse = slot
        prefetch(lookup)
        return try slot.take(aborted: aborted)
    }

    /// The backward that used `slot` returned.
    mutating func done(_ slot: SwapSlot, lookup: (Int, Int) -> SwapSlot?) {
        incoming.removeAll { $0 === slot }
        inUse = nil
        prefetch(lookup)
    }

    /// Waits until every copy this stage submitted has run, so that nothing of this
    /// iteration's swapping is still on the device when the next one starts.
    func drain() {
        guard !order.isEmpty else { return }
        let monitor = Monitor()
        final class Flag: @unchecked Sendable { var done = false }
        let flag = Flag()
        device.onCopyQueue { monitor.locked { flag.done = true; monitor.broadcast() } }
        monitor.locked { while !flag.done { monitor.wait() } }
    }
}
