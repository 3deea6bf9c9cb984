/// An optimizer updates parameters from their gradients once per iteration (after the
/// flush), keeping per-parameter state in the stage's arena. The update itself is a kernel
/// of the parameters' device.
public protocol Optimizer: Sendable {
    /// State tensors per parameter (SGD with momentum: 1, Adam: 2), allocated in `space`.
    func makeState(for parameters: [Tensor], in space: MemorySpace?, label: String) throws -> [[Tensor]]
    /// One update; `iteration` counts from 1 (Adam's bias correction).
    func step(parameters: [Tensor], gradients: [Tensor], state: [[Tensor]], iteration: Int)
    /// State tensors per parameter, each of the parameter's shape (the layout `makeState`
    /// returns, and the one a stage's parameter block reserves).
    var statesPerParameter: Int { get }
    /// Bytes of weights + gradients + state per parameter byte (κ of the cost model).
    var stateBytesPerParamByte: Double { get }
}
