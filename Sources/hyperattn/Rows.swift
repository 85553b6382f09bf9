import HyperAttention

// Row-axis helpers for shards made of several token chunks (ring attention's zigzag layout).

/// Tensors `[..., rows_i, width]` with the same leading axes, joined along the rows axis.
func concatenateRows(_ parts: [Tensor]) -> Tensor {
    let lead = Array(parts[0].shape.dropLast(2)), width = parts[0].shape.last!
    let rows = parts.map { $0.shape[$0.shape.count - 2] }
    let outer = lead.reduce(1, *), total = rows.reduce(0, +)
    var out = Tensor(shape: lead + [total, width]) { _ in }
    out.withUnsafeMutableBufferPointer { o in
        var first = 0
        for (part, count) in zip(parts, rows) {
            part.withUnsafeBufferPointer { src in
                for i in 0..<outer {
                    (o.baseAddress! + (i * total + first) * width).update(from: src.baseAddress! + i * count * width, count: count * width)
                }
            }
            first += count
        }
    }
    return out
}

/// Rows `rows` of a `[..., total, width]` tensor, as `[..., rows.count, width]`.
func sliceRows(_ t: Tensor, _ rows: Range<Int>) -> Tensor {
    let lead = Array(t.shape.dropLast(2)), width = t.shape.last!, total = t.shape[t.shape.count - 2]
    let outer = lead.reduce(1, *)
    if rows == 0..<total { return t }
    var out = Tensor(shape: lead + [rows.count, width]) { _ in }
    out.withUnsafeMutableBufferPointer { o in
        t.withUnsafeBufferPointer { src in
            for i in 0..<outer {
                (o.baseAddress! + i * rows.count * width).update(from: src.baseAddress! + (i * total + rows.lowerBound) * width, count: rows.count * width)
            }
        }
    }
    return out
}
