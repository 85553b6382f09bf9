import Foundation
import HyperAttention

/// Deterministic test inputs and error measures shared by the test bundles.
public enum TestData {
    /// A tensor of i.i.d. standard normal values (xorshift + Box–Muller), times `scale`.
    public static func gaussian(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
        var s = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        func next() -> Double {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17
            return Double(s >> 11) / 9_007_199_254_740_992.0
        }
        return Tensor(shape: shape) { buffer in
            for i in buffer.indices {
                let u1 = next() + 1e-300, u2 = next()
                buffer[i] = Float((-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)) * scale
            }
        }
    }
}

/// Error of a computed tensor against a float64 reference.
public enum ErrorMeasure {
    /// max_i |a_i − b_i| / max_i |b_i|  (0 when both are all zero).
    public static func maxRelative(_ a: [Float], _ b: [Double]) -> Double {
        precondition(a.count == b.count, "length mismatch \(a.count) vs \(b.count)")
        var err = 0.0, scale = 0.0
        for i in a.indices {
            err = max(err, abs(Double(a[i]) - b[i]))
            scale = max(scale, abs(b[i]))
        }
        return scale == 0 ? err : err / scale
    }

    /// ‖a − b‖₂ / ‖b‖₂.
    public static func frobeniusRelative(_ a: [Float], _ b: [Double]) -> Double {
        precondition(a.count == b.count)
        var num = 0.0, den = 0.0
        for i in a.indices {
            let e = Double(a[i]) - b[i]
            num += e * e
            den += b[i] * b[i]
        }
        return den == 0 ? num.squareRoot() : (num / den).squareRoot()
    }

    /// max_i |a_i − b_i| / max(1, |b_i|)  (for log-sum-exp values).
    public static func maxAbsoluteOrRelative(_ a: [Float], _ b: [Double]) -> Double {
        precondition(a.count == b.count)
        var err = 0.0
        for i in a.indices { err = max(err, abs(Double(a[i]) - b[i]) / max(1, abs(b[i]))) }
        return err
    }

    /// Rows `rows` of a `[b·h, n, dv]` flattened tensor, for every (batch, head).
    public static func selectRows(_ t: [Float], heads: Int, n: Int, dim: Int, rows: [Int]) -> [Float] {
        var out: [Float] = []
        out.reserveCapacity(heads * rows.count * dim)
        for h in 0..<heads { for r in rows { out += t[(h * n + r) * dim ..< (h * n + r + 1) * dim] } }
        return out
    }
}
