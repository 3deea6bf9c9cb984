/// The loss: softmax over each row of logits, cross-entropy against one class per row.
///
///     logits [rows, K], targets (context) [rows] Int32 -> loss [1]
///     loss = lossScale · Σ_r −log softmax(logits[r])[targets[r]]
///     dlogits [rows, K] = (softmax − onehot(targets)) · lossScale · dloss      (dloss normally 1)
///     saved: logits (backward recomputes the softmax into dlogits: no extra [rows, K] stash)
///
/// With lossScale = 1/(rows in the mini-batch) the micro-batch losses add up to the
/// mini-batch mean. A target outside 0..<K throws, naming the layer and the row.
public final class SoftmaxCrossEntropy: Layer {
    public let name: String
    private let params: Parameters

    public var parameters: [Tensor] { params.values }
    public var gradients: [Tensor] { params.gradients }

    public init(name: String, label: String? = nil) throws {
        self.name = name
        params = try Parameters(shapes: [], in: nil, label: label ?? "\"\(name)\"")
    }

    public func place(in space: MemorySpace?) throws { try params.place(in: space) }
    public func adopt(values: [Tensor], gradients: [Tensor]) throws { try params.adopt(values: values, gradients: gradients) }

    /// (rows, classes) after checking the logits and the targets.
    private func validate(_ logits: Tensor, _ context: LayerContext) throws -> (rows: Int, classes: Int) {
        guard logits.shape.count == 2, logits.shape[1] > 0 else {
            throw RuntimeError.invalidShape("\(context.label): logits must be [rows, classes], got \(logits.shape)")
        }
        let rows = logits.shape[0], classes = logits.shape[1]
        guard context.targets.count == rows else {
            throw RuntimeError.invalidShape(
                "\(context.label): \(context.targets.count) targets for \(rows) rows of logits \(logits.shape)")
        }
        for (r, t) in context.targets.enumerated() where t < 0 || Int(t) >= classes {
            throw RuntimeError.invalidShape("\(context.label): target \(t) at row \(r) is not a class in 0..<\(classes)")
        }
        return (rows, classes)
    }

    public func forward(_ input: Tensor, _ context: LayerContext) throws -> (output: Tensor, saved: [Tensor]) {
        let (rows, classes) = try validate(input, context)
        let output = try context.allocate([1], "output")  // [1]
        context.device.crossEntropyForward(loss: output, logits: input, targets: context.targets,
                                           rows: rows, classes: classes, scale: context.lossScale)
        return (output, [input])
    }

    public func backward(_ gradOutput: Tensor, saved: [Tensor], _ context: LayerContext) throws -> Tensor? {
        try ShapeCheck.saved(saved, count: 1, context)
        let logits = saved[0]
        let (rows, classes) = try validate(logits, context)
        guard gradOutput.count == 1 else {
            throw RuntimeError.invalidShape("\(context.label): loss gradient must hold 1 value, got shape \(gradOutput.shape)")
        }
        let gradInput = try context.allocate([rows, classes], "input gradient")  // [rows, K]
        context.device.crossEntropyBackward(gradLogits: gradInput, gradLoss: gradOutput, logits: logits, targets: context.targets,
                                            rows: rows, classes: classes, scale: context.lossScale)
        return gradInput
    }
}
