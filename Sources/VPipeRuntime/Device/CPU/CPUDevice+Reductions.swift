/// Checks that scan a tensor and report one index back to the host.
extension CPUDevice {
    func firstNonFinite(_ tensor: Tensor) -> Int? {
        FiniteCheck.firstNonFinite(pointer(tensor), count: tensor.count)
    }

    func firstInvalidTokenId(_ ids: Tensor, rows: Int, vocabulary: Int) -> (row: Int, id: Float)? {
        let p = pointer(ids)
        for r in 0..<rows {
            let id = p[r]
            guard id.isFinite, id >= 0, id < Float(vocabulary), id.rounded(.towardZero) == id else { return (r, id) }
        }
        return nil
    }
}
