/// Token and position embeddings on the CPU device (ids are float-coded integers).
extension CPUDevice {
    func embeddingForward(output: Tensor, ids: Tensor, tokenTable: Tensor, positionTable: Tensor?,
                          rows: Int, features c: Int, sequenceLength: Int) {
        let wte = pointer(tokenTable), wpe = positionTable.map(pointer), ys = pointer(output), id = pointer(ids)
        for r in 0..<rows {
            let y = ys + r * c
            y.update(from: wte + Int(id[r]) * c, count: c)
            if let wpe, sequenceLength > 0 {
                let p = wpe + (r % sequenceLength) * c
                for i in 0..<c { y[i] += p[i] }
            }
        }
    }

    func embeddingBackward(gradTokenTable: Tensor, gradPositionTable: Tensor?, gradOutput: Tensor, ids: Tensor,
                           rows: Int, features c: Int, sequenceLength: Int) {
        let dwte = pointer(gradTokenTable), dwpe = gradPositionTable.map(pointer), dys = pointer(gradOutput), id = pointer(ids)
        for r in 0..<rows {
            let dy = dys + r * c
            let dt = dwte + Int(id[r]) * c
            for i in 0..<c { dt[i] += dy[i] }
            if let dwpe, sequenceLength > 0 {
                let dp = dwpe + (r % sequenceLength) * c
                for i in 0..<c { dp[i] += dy[i] }
            }
        }
    }
}
