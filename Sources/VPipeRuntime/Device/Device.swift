import VPipeCore

/// The element-wise nonlinearities a device computes (ReLU, GELU), as the model names them.
public typealias ActivationFunction = LayerKind.Activation

/// The seam between the runtime and the silicon it trains on.
///
/// A device owns memory (an arena with a hard capacity, and a host pool for swapped
/// stashes), moves values between them (synchronously for the host's explicit reads and
/// writes, asynchronously on a copy queue for swaps and migrations) and runs the kernels the
/// layers and optimizers need. Layers, optimizers, the copy path and the executor see only
/// `Device` and `Tensor`; no code outside a device's own folder dereferences tensor memory.
///
/// What a backend must honour:
/// - Memory a tensor lives in may not be host-addressable (a GPU's). A `Tensor`'s
///   `address` is opaque outside the device that issued it; the host reads and writes
///   tensors only through `upload`, `download` and `withHostAccess`.
/// - Kernels run in call order on the calling (stage worker) thread's compute queue; a
///   kernel may return before it finished (a GPU stream) as long as every later kernel,
///   copy and host access on the same device observes its result.
/// - Copies for swaps and migrations run on a separate copy queue (`onCopyQueue`,
///   `copyOnQueue`, `copyAsync`), in submission order, concurrently with compute; a job
///   learns that its copies landed when `copyOnQueue` returns (a CUDA event).
/// - Kernels trust their arguments: layers check shapes (naming the layer) before calling.
///
/// Adding a backend: a folder `Device/<Name>/` with a class conforming to `Device`, and one
/// line in `DeviceBackends.all`. docs/architecture.md ("The device seam") sketches CUDA.
public protocol Device: AnyObject, Sendable {
    /// `stage 1 (device "gpu1") cpu`, for errors and traces.
    var name: String { get }
    /// Device memory: activations, stashes, parameters, optimizer state.
    var arena: MemorySpace { get }
    /// Host memory swapped stashes go to (pinned on a GPU, so copies can be asynchronous).
    var hostPool: MemorySpace { get }
    /// True when the host may dereference a tensor's address (the CPU device). Code that
    /// must hand a pointer to a foreign library (MPI) checks it; everything else uses copies.
    var isHostAddressable: Bool { get }
    /// Host reads and writes of this device's memory so far (`upload`, `download`,
    /// `withHostAccess`): the traffic that crosses the host link outside the copy queue. A
    /// step costs a few (inputs in, losses out); a layer's forward or backward and an
    /// optimizer step cost none, which the tests check.
    var hostTransfers: Int { get }

    // MARK: Memory

    /// Zero-filled storage for `count` floats charged to `space` (one of this device's two
    /// spaces; nil: uncharged scratch). Throws `RuntimeError.outOfMemory` naming `label`.
    func allocate(_ count: Int, in space: MemorySpace?, for label: @autoclosure () -> String) throws -> DeviceAddress
    /// Returns storage `allocate` gave (called once, when the owning tensor goes).
    func free(_ address: DeviceAddress, count: Int, in space: MemorySpace?)

    // MARK: Copies

    /// Host values into `tensor` (`values.count == tensor.count`, checked by `Tensor.fill`).
    func upload(_ values: UnsafeBufferPointer<Float>, to tensor: Tensor)
    /// `tensor`'s values into host memory (`into.count == tensor.count`).
    func download(_ tensor: Tensor, into: UnsafeMutableBufferPointer<Float>)
    /// Runs `body` on a host view of `tensor`; what `body` writes is in the tensor afterwards.
    /// Zero-copy on a host-addressable device, staged through host memory otherwise.
    func withHostAccess<R>(_ tensor: Tensor, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R
    /// `source`'s values into `destination` (same count; either may be in the arena or the host pool).
    func copy(_ source: Tensor, to destination: Tensor)
    /// Runs `job` on the copy queue's thread, after the jobs submitted before it; copies run
    /// there concurrently with compute.
    func onCopyQueue(_ job: @escaping () -> Void)
    /// Only inside a copy-queue job: copies `tensors` (of this or another device) into new
    /// tensors in `space` and returns when they have landed (on a GPU: an event on the copy
    /// stream). Throttled to the link's bandwidth where the device models one.
    func copyOnQueue(_ tensors: [Tensor], to space: MemorySpace, label: String) throws -> [Tensor]
    /// Stops the copy queue (queued copies are dropped); called when the session closes.
    func shutdown()

    // MARK: Compute (shapes in each kernel's doc; row-major, float32)

    /// C[m×n] (at cOffset, leading dimension ldc) = alpha·op(A)·op(B) + beta·C; A, B, C are
    /// strided views starting at the given element offsets.
    func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
              a: Tensor, aOffset: Int, lda: Int, b: Tensor, bOffset: Int, ldb: Int,
              beta: Float, c: Tensor, cOffset: Int, ldc: Int)
    /// y [rows, out] = x [rows, in] · Wᵀ + b;  W [out, in], b [out].
    func linearForward(output: Tensor, input: Tensor, weight: Tensor, bias: Tensor,
                       rows: Int, inFeatures: Int, outFeatures: Int)
    /// dW += dyᵀ·x;  db += Σ_rows dy;  dx = dy·W (overwritten; skipped when nil).
    func linearBackward(gradInput: Tensor?, gradWeight: Tensor, gradBias: Tensor, gradOutput: Tensor,
                        input: Tensor, weight: Tensor, rows: Int, inFeatures: Int, outFeatures: Int)
    /// y [rows, C] = (x − mean)·rstd·γ + β, writing mean [rows] and rstd [rows].
    func layerNormForward(output: Tensor, mean: Tensor, rstd: Tensor, input: Tensor, gamma: Tensor, beta: Tensor,
                          rows: Int, features: Int, epsilon: Float)
    /// dγ, dβ accumulate; dx [rows, C] overwritten.
    func layerNormBackward(gradInput: Tensor, gradGamma: Tensor, gradBeta: Tensor, gradOutput: Tensor,
                           input: Tensor, gamma: Tensor, mean: Tensor, rstd: Tensor, rows: Int, features: Int)
    /// Causal softmax attention: qkv [B·T, 3C] -> attention [B, H, T, T], output [B·T, C].
    func attentionForward(output: Tensor, attention: Tensor, qkv: Tensor,
                          sequences: Int, sequenceLength: Int, heads: Int, features: Int)
    /// dqkv [B·T, 3C] overwritten from dout [B·T, C]; `scratch` is [T, T] workspace.
    func attentionBackward(gradQKV: Tensor, scratch: Tensor, gradOutput: Tensor, qkv: Tensor, attention: Tensor,
                           sequences: Int, sequenceLength: Int, heads: Int, features: Int)
    /// y = f(x), element-wise, same count.
    func activationForward(_ function: ActivationFunction, output: Tensor, input: Tensor)
    /// dx = f'(x)·dy, element-wise.
    func activationBackward(_ function: ActivationFunction, gradInput: Tensor, gradOutput: Tensor, input: Tensor)
    /// a += b, element-wise (same count).
    func add(_ a: Tensor, _ b: Tensor)
    /// Every element of `tensor` set to `value`.
    func fill(_ tensor: Tensor, with value: Float)
    /// The index of the first NaN or infinity in `tensor` (nil: all finite).
    func firstNonFinite(_ tensor: Tensor) -> Int?
    /// The first row whose id is not an integer in 0..<vocabulary, with that id (nil: all valid).
    func firstInvalidTokenId(_ ids: Tensor, rows: Int, vocabulary: Int) -> (row: Int, id: Float)?
    /// y[r] = wte[ids[r]] + wpe[r mod T] (wpe nil: no position term).
    func embeddingForward(output: Tensor, ids: Tensor, tokenTable: Tensor, positionTable: Tensor?,
                          rows: Int, features: Int, sequenceLength: Int)
    /// dwte[ids[r]] += dy[r];  dwpe[r mod T] += dy[r].
    func embeddingBackward(gradTokenTable: Tensor, gradPositionTable: Tensor?, gradOutput: Tensor, ids: Tensor,
                           rows: Int, features: Int, sequenceLength: Int)
    /// loss [1] = scale · Σ_r −log softmax(logits[r])[targets[r]] (summed in double).
    func crossEntropyForward(loss: Tensor, logits: Tensor, targets: [Int32], rows: Int, classes: Int, scale: Float)
    /// dlogits [rows, K] = (softmax − onehot)·scale·dloss[0].
    func crossEntropyBackward(gradLogits: Tensor, gradLoss: Tensor, logits: Tensor, targets: [Int32],
                              rows: Int, classes: Int, scale: Float)
    /// v = μ·v + g; p −= lr·v (velocity nil: p −= lr·g).
    func sgdStep(parameter: Tensor, gradient: Tensor, velocity: Tensor?, learningRate: Float, momentum: Float)
    /// Adam with bias corrections c1 = 1 − β1ᵗ, c2 = 1 − β2ᵗ.
    func adamStep(parameter: Tensor, gradient: Tensor, m: Tensor, v: Tensor, learningRate: Float,
                  beta1: Float, beta2: Float, epsilon: Float, biasCorrection1: Float, biasCorrection2: Float)
    /// A fixed small kernel (four 96×96 matrix products) whose time tells this device's speed
    /// apart from the layers' costs (the re-planner's calibration). Returns when it finished.
    func runReferenceKernel()
}

/// An address in a device's memory, opaque outside the device that issued it: a host
/// pointer on the CPU device, a device pointer on a GPU. Element offsets (views) are byte
/// arithmetic on it, which holds for both.
public struct DeviceAddress: Sendable, Equatable {
    public let bits: UInt
    public init(bits: UInt) { self.bits = bits }
    /// The address `elements` floats further on.
    public func advanced(by elements: Int) -> DeviceAddress {
        DeviceAddress(bits: UInt(bitPattern: Int(bitPattern: bits) &+ elements &* MemoryLayout<Float>.stride))
    }
}

extension Device {
    /// Copies `tensors` into new tensors in `space` on the copy queue, then calls
    /// `completion` there with the copies or the error.
    public func copyAsync(_ tensors: [Tensor], to space: MemorySpace, label: String,
                          completion: @escaping (Result<[Tensor], Error>) -> Void) {
        onCopyQueue { completion(Result { try self.copyOnQueue(tensors, to: space, label: label) }) }
    }
}
