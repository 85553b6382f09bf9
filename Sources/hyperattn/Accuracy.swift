import Dispatch
import Foundation
import HyperAttention

/// Useful floating-point operations of one attention call: the single formula behind every
/// GFLOP/s figure of `hyperattn`.
///
///     exact:  2 · n_q · n_k · (d + d_v) · b · h_q    (halved when causal)
///     hyper:  result.stats.flops  (evaluated query–key pairs · 2 · (d + d_v))
///
/// i.e. one multiply-add per element of q·k and of p·v; softmax and hashing are not counted.
func usefulFLOPs(shape s: AttentionShape, options: AttentionOptions, stats: AttentionStats) -> Double {
    switch options.mode {
    case .exact:
        let full = 2 * Double(s.queryCount) * Double(s.keyCount) * Double(s.headDim + s.valueDim)
            * Double(s.batch * s.queryHeads)
        return options.causal ? full / 2 : full
    case .hyper:
        return stats.flops
    }
}

/// The error of an attention output against exact attention (float64 reference) on sampled rows.
///
/// R query rows are sampled over all b·h_q heads (spread evenly over the heads; within a head,
/// one row uniformly from each of equal strata of [0, n_q), from the seed). Over those rows:
///
///     relativeError      = ‖O − O*‖_F / ‖O*‖_F
///     relativeErrorToV   = ‖O − O*‖_F / (‖V‖_rms · √R),   ‖V‖_rms = sqrt(mean over all rows of V of ‖v‖²)
///     maxLogSumExpError  = max_i |lse_i − lse*_i|
///
/// `relativeErrorToV` measures the error against output rows of the scale of a value row: when
/// attention averages many unrelated values, ‖O*‖ is small and `relativeError` is large even for
/// a good approximation, while `relativeErrorToV` stays comparable across inputs. The reference is
/// `referenceAttention(..., rows:)` in float64, run in parallel over (head, row chunk).
struct SampledError: Codable, Sendable {
    /// Number of sampled rows R (over all heads).
    var rows: Int
    var relativeError: Double
    var relativeErrorToV: Double
    var maxLogSumExpError: Double
    /// Seconds spent on the reference.
    var seconds: Double

    /// Measures the error of `result` for the problem (query, key, value, options).
    /// - Parameters:
    ///   - rows: R, the number of sampled query rows over all heads (≥ 1).
    ///   - seed: picks the rows.
    ///   - threads: threads for the reference.
    static func measure(
        query: Tensor, key: Tensor, value: Tensor, options: AttentionOptions, result: AttentionResult,
        rows: Int, seed: UInt64, threads: Int
    ) throws -> SampledError {
        let start = monotonicSeconds()
        let s = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
        let heads = s.batch * s.queryHeads
        let n = s.queryCount, nk = s.keyCount, d = s.headDim, dv = s.valueDim

        // Units of work: (head, chunk of its sampled rows).
        var units: [(head: Int, rows: [Int])] = []
        for head in 0..<heads {
            let count = min(n, rows / heads + (head < rows % heads ? 1 : 0))
            guard count > 0 else { continue }
            let picked = (0..<count).map { j -> Int in
                let lo = j * n / count, hi = (j + 1) * n / count
                return lo + Int(mix(seed, 0xE44, UInt64(head) << 32 | UInt64(j)) % UInt64(max(hi - lo, 1)))
            }
            stride(from: 0, to: picked.count, by: 8).forEach { units.append((head, Array(picked[$0..<min($0 + 8, picked.count)]))) }
        }
        let sampled = units.reduce(0) { $0 + $1.rows.count }

        var diffSquares = [Double](repeating: 0, count: units.count)
        var referenceSquares = [Double](repeating: 0, count: units.count)
        var lseErrors = [Double](repeating: 0, count: units.count)
        var failures = [String?](repeating: nil, count: units.count)
        let vRMS: Double = value.withUnsafeBufferPointer { v in
            var sum = 0.0
            for x in v { sum += Double(x) * Double(x) }
            return (sum / Double(max(v.count / max(dv, 1), 1))).squareRoot()
        }

        let qBase = query.withUnsafeBufferPointer { UnsafeMutablePointer(mutating: $0.baseAddress!) }
        let kBase = key.withUnsafeBufferPointer { UnsafeMutablePointer(mutating: $0.baseAddress!) }
        let vBase = value.withUnsafeBufferPointer { UnsafeMutablePointer(mutating: $0.baseAddress!) }
        let oBase = result.output.withUnsafeBufferPointer { $0.baseAddress! }
        let lBase = result.logSumExp.withUnsafeBufferPointer { $0.baseAddress! }

        diffSquares.withUnsafeMutableBufferPointer { diffOut in
            referenceSquares.withUnsafeMutableBufferPointer { refOut in
                lseErrors.withUnsafeMutableBufferPointer { lseOut in
                    failures.withUnsafeMutableBufferPointer { failOut in
                        parallelFor(units.count, threads: threads) { range in
                            for u in range {
                                let (head, picked) = units[u]
                                let kvHead = (head / s.queryHeads) * s.keyHeads + (head % s.queryHeads) / s.groupSize
                                // Zero-copy single-head views; the tensors above outlive them.
                                let q = Tensor(shape: [n, d], adopting: qBase + head * n * d, deallocator: {})
                                let k = Tensor(shape: [nk, d], adopting: kBase + kvHead * nk * d, deallocator: {})
                                let v = Tensor(shape: [nk, dv], adopting: vBase + kvHead * nk * dv, deallocator: {})
                                do {
                                    let ref = try referenceAttention(
                                        query: q, key: k, value: v, causal: options.causal, scale: options.scale,
                                        rows: picked)
                                    var diff = 0.0, norm = 0.0, lseError = 0.0
                                    for (r, i) in picked.enumerated() {
                                        let o = oBase + (head * n + i) * dv
                                        for c in 0..<dv {
                                            let e = Double(o[c]) - ref.output[r * dv + c]
                                            diff += e * e
                                            norm += ref.output[r * dv + c] * ref.output[r * dv + c]
                                        }
                                        let le = abs(Double(lBase[head * n + i]) - ref.logSumExp[r])
                                        lseError = le.isNaN ? .infinity : max(lseError, le)
                                    }
                                    diffOut[u] = diff
                                    refOut[u] = norm
                                    lseOut[u] = lseError
                                } catch {
                                    failOut[u] = "\(error)"
                                }
                            }
                        }
                    }
                }
            }
        }
        if let failure = failures.lazy.compactMap({ $0 }).first {
            throw ValidationFailure("reference attention failed: \(failure)")
        }
        let diff = diffSquares.reduce(0, +).squareRoot()
        return SampledError(
            rows: sampled,
            relativeError: diff / referenceSquares.reduce(0, +).squareRoot(),
            relativeErrorToV: diff / (vRMS * Double(sampled).squareRoot()),
            maxLogSumExpError: lseErrors.max() ?? 0,
            seconds: monotonicSeconds() - start)
    }
}

/// A run-time failure with a one-line message (printed as `Error: <message>`).
struct ValidationFailure: Error, CustomStringConvertible {
    var description: String
    init(_ message: String) { description = message }
}
