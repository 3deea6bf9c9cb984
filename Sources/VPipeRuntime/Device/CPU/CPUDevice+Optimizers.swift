/// Optimizer updates on the CPU device, one parameter tensor at a time.
extension CPUDevice {
    func sgdStep(parameter: Tensor, gradient: Tensor, velocity: Tensor?, learningRate lr: Float, momentum mu: Float) {
        let w = pointer(parameter), dw = pointer(gradient), n = parameter.count
        if let velocity {
            let vel = pointer(velocity)
            for j in 0..<n {
                vel[j] = mu * vel[j] + dw[j]
                w[j] -= lr * vel[j]
            }
        } else {
            for j in 0..<n { w[j] -= lr * dw[j] }
        }
    }

    func adamStep(parameter: Tensor, gradient: Tensor, m: Tensor, v: Tensor, learningRate: Float,
                  beta1: Float, beta2: Float, epsilon: Float, biasCorrection1 c1: Float, biasCorrection2 c2: Float) {
        let w = pointer(parameter), dw = pointer(gradient), m = pointer(m), v = pointer(v)
        for j in 0..<parameter.count {
            m[j] = beta1 * m[j] + (1 - beta1) * dw[j]
            v[j] = beta2 * v[j] + (1 - beta2) * dw[j] * dw[j]
            let mHat = m[j] / c1, vHat = v[j] / c2
            w[j] -= learningRate * mHat / (vHat.squareRoot() + epsilon)
        }
    }
}
