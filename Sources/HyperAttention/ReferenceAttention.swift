import Foundation

/// Exact attention computed in float64 for chosen query rows: the yardstick for every test and
/// for the error column of `hyperattn bench`.
///
///     o_i = Σ_k softmax_k(scale · q_i·k_k) v_k,   lse_i = log Σ_k exp(scale · q_i·k_k)
///
/// with keys k ≤ i only when `causal`. Cost O(|rows| · n_k · (d + d_v)).
/// - Parameters:
///   - rows: query row indices (into n_q) to evaluate, for every (batch, head).
///   - scale: logit scale; `nil` means 1 / sqrt(d).
/// - Returns: `output` as `[b][h_q][rows.count][d_v]` flattened, and `logSumExp` as `[b][h_q][rows.count]`.
public func referenceAttention(
    query: Tensor, key: Tensor, value: Tensor, causal: Bool = false, scale: Float? = nil, rows: [Int]? = nil
) throws -> (output: [Double], logSumExp: [Double]) {
    let s = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
    if causal && s.queryCount != s.keyCount {
        throw AttentionError.invalidArgument("causal", "causal attention needs n_q == n_k, got \(s.queryCount) and \(s.keyCount)")
    }
    let rows = rows ?? Array(0..<s.queryCount)
    if let bad = rows.first(where: { !(0..<s.queryCount).contains($0) }) {
        throw AttentionError.invalidArgument("rows", "row \(bad) is outside 0..<\(s.queryCount)")
    }
    let sc = Double(scale ?? 1 / Float(s.headDim).squareRoot())
    let d = s.headDim, dv = s.valueDim
    var out = [Double](repeating: 0, count: s.batch * s.queryHeads * rows.count * dv)
    var lse = [Double](repeating: 0, count: s.batch * s.queryHeads * rows.count)
    query.withUnsafeBufferPointer { q in
        key.withUnsafeBufferPointer { k in
            value.withUnsafeBufferPointer { v in
                var logits = [Double](repeating: 0, count: s.keyCount)
                var acc = [Double](repeating: 0, count: dv)
                for b in 0..<s.batch {
                    for h in 0..<s.queryHeads {
                        let kvHead = b * s.keyHeads + h / s.groupSize
                        let qBase = (b * s.queryHeads + h) * s.queryCount * d
                        let kBase = kvHead * s.keyCount * d
                        let vBase = kvHead * s.keyCount * dv
                        for (r, i) in rows.enumerated() {
                            let keys = causal ? i + 1 : s.keyCount
                            var rowMax = -Double.infinity
                            for j in 0..<keys {
                                var dot = 0.0
                                for c in 0..<d { dot += Double(q[qBase + i * d + c]) * Double(k[kBase + j * d + c]) }
                                logits[j] = dot * sc
                                rowMax = max(rowMax, logits[j])
                            }
                            for c in 0..<dv { acc[c] = 0 }
                            var rowSum = 0.0
                            for j in 0..<keys {
                                let p = Foundation.exp(logits[j] - rowMax)
                                rowSum += p
                                for c in 0..<dv { acc[c] += p * Double(v[vBase + j * dv + c]) }
                            }
                            let outRow = ((b * s.queryHeads + h) * rows.count + r)
                            for c in 0..<dv { out[outRow * dv + c] = acc[c] / rowSum }
                            lse[outRow] = rowMax + Foundation.log(rowSum)
                        }
                    }
                }
            }
        }
    }
    return (out, lse)
}
