/// What a layer needs from its surroundings during one forward or backward.
public struct LayerContext: @unchecked Sendable {
    /// Where activations, stashes and gradients of this step are charged (the stage's arena).
    public var space: MemorySpace?
    /// The device the layer computes on: the space's (nil space: the host CPU device).
    public var device: Device
    /// `layer 4 ("block2")`, for allocation labels and errors.
    public var label: String
    /// Class targets of this micro-batch (one per row), for the loss layer.
    public var targets: [Int32]
    /// 1 / (rows in the whole mini-batch): the loss layer scales by it, so the loss and the
    /// gradients are those of the mini-batch mean whatever the micro-batch count.
    public var lossScale: Float
    /// The training iteration (1-based; 0 outside training), for layers whose computation
    /// depends on it (a supernet's choice blocks).
    public var iteration: Int
    /// False for the model's first layer: its input is data, so a layer may skip computing
    /// the input gradient (a Linear saves a whole matrix product) and return nil.
    public var needsInputGradient: Bool

    public init(space: MemorySpace?, label: String, targets: [Int32] = [], lossScale: Float = 1, iteration: Int = 0,
                needsInputGradient: Bool = true) {
        self.space = space
        device = space?.device ?? CPUDevice.host
        self.label = label
        self.targets = targets
        self.lossScale = lossScale
        self.iteration = iteration
        self.needsInputGradient = needsInputGradient
    }
}

/// One layer of the chain: forward and backward side by side, parameters and their
/// gradients as tensors of the stage's arena. A layer checks shapes and computes through
/// `context.device`'s kernels; it never touches tensor memory itself.
///
/// Contract the executor relies on:
/// - `forward` returns the output and the tensors the backward needs (`saved`: the stash).
///   It must not keep references to them itself: the memory policy decides whether they
///   stay (KEEP), go to the host and come back (SWAP) or are dropped and recomputed by
///   calling `forward` again on the same input (RECOMPUTE), so `forward` must be a pure
///   function of its input and the parameters.
/// - `backward` receives the output gradient and `saved`, ADDS the parameter gradients into
///   `gradients` (micro-batches accumulate), and returns the input gradient (nil for a
///   layer whose input is not differentiable, e.g. token ids).
/// - Everything is float32, activations 2-D `[rows, features]`.
public protocol Layer: AnyObject {
    var name: String { get }
    /// Parameters and gradients, same order and shapes.
    var parameters: [Tensor] { get }
    var gradients: [Tensor] { get }
    func forward(_ input: Tensor, _ context: LayerContext) throws -> (output: Tensor, saved: [Tensor])
    func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor?
    /// Moves parameters and gradients into `space` (placement on a stage, migration).
    func place(in space: MemorySpace?) throws
    /// Takes over parameters and gradients that already live in another space, in the order
    /// of `parameters` (a migration's pre-copied weights and handed-over gradients).
    func adopt(values: [Tensor], gradients: [Tensor]) throws
    /// True when finite inputs (and a finite output gradient) always give a finite output
    /// (and input gradient), exactly, so the step's NaN/Inf check may skip this layer's
    /// output and input gradient: its inputs were checked already (FiniteCheck). ReLU:
    /// y is x or 0, dx is dy or 0. False for anything that can overflow.
    var keepsFiniteValuesFinite: Bool { get }
}

extension Layer {
    public var keepsFiniteValuesFinite: Bool { false }
}
