import Dispatch
import Foundation
import DistributedHyperAttention
import HyperAttention
import MPI

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

    /// The sampled rows: R query rows over all `heads` (spread evenly over the heads; within a
    /// head, one row uniformly from each of equal strata of [0, n)), as units of work
    /// (head, up to 8 rows).
    static func sampledUnits(heads: Int, n: Int, rows: Int, seed: UInt64) -> [(head: Int, rows: [Int])] {
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
        return units
    }

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
        let n = s.queryCount, d = s.headDim, dv = s.valueDim
        let units = sampledUnits(heads: s.batch * s.queryHeads, n: n, rows: rows, seed: seed)
        let qBase = query.withUnsafeBufferPointer { UnsafeMutablePointer(mutating: $0.baseAddress!) }
        let oBase = result.output.withUnsafeBufferPointer { $0.baseAddress! }
        let lBase = result.logSumExp.withUnsafeBufferPointer { $0.baseAddress! }
        var error = try measure(
            shape: s, units: units, key: key, value: value, options: options, threads: threads,
            queryHead: { head in Tensor(shape: [n, d], adopting: qBase + head * n * d, deallocator: {}) },
            output: { head, i in (oBase + (head * n + i) * dv, lBase[head * n + i]) })
        error.seconds = monotonicSeconds() - start
        return error
    }

    /// The core of the measurement: `queryHead(h)` is a `[n_q, d]` tensor whose sampled rows hold
    /// head h's queries (zero-copy views are fine: the caller keeps the storage alive), `output(h,
    /// i)` the computed O row and lse of row i of head h; key and value are the whole tensors.
    static func measure(
        shape s: AttentionShape, units: [(head: Int, rows: [Int])], key: Tensor, value: Tensor, options: AttentionOptions,
        threads: Int, queryHead: (Int) -> Tensor, output: (Int, Int) -> (UnsafePointer<Float>, Float)
    ) throws -> SampledError {
        let start = monotonicSeconds()
        let nk = s.keyCount, d = s.headDim, dv = s.valueDim
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
        let queries = (0..<(s.batch * s.queryHeads)).map { h in units.contains { $0.head == h } ? queryHead(h) : nil }

        let kBase = key.withUnsafeBufferPointer { UnsafeMutablePointer(mutating: $0.baseAddress!) }
        let vBase = value.withUnsafeBufferPointer { UnsafeMutablePointer(mutating: $0.baseAddress!) }

        withoutActuallyEscaping(output) { output in
            diffSquares.withUnsafeMutableBufferPointer { diffOut in
                referenceSquares.withUnsafeMutableBufferPointer { refOut in
                    lseErrors.withUnsafeMutableBufferPointer { lseOut in
                        failures.withUnsafeMutableBufferPointer { failOut in
                            parallelFor(units.count, threads: threads) { range in
                                for u in range {
                                    let (head, picked) = units[u]
                                    let kvHead = (head / s.queryHeads) * s.keyHeads + (head % s.queryHeads) / s.groupSize
                                    // Zero-copy single-head views; the tensors above outlive them.
                                    let k = Tensor(shape: [nk, d], adopting: kBase + kvHead * nk * d, deallocator: {})
                                    let v = Tensor(shape: [nk, dv], adopting: vBase + kvHead * nk * dv, deallocator: {})
                                    do {
                                        let ref = try referenceAttention(
                                            query: queries[head]!, key: k, value: v, causal: options.causal,
                                            scale: options.scale, rows: picked)
                                        var diff = 0.0, norm = 0.0, lseError = 0.0
                                        for (r, i) in picked.enumerated() {
                                            let (o, l) = output(head, i)
                                            for c in 0..<dv {
                                                let e = Double(o[c]) - ref.output[r * dv + c]
                                                diff += e * e
                                                norm += ref.output[r * dv + c] * ref.output[r * dv + c]
                                            }
                                            let le = abs(Double(l) - ref.logSumExp[r])
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
        }
        if let failure = failures.lazy.compactMap({ $0 }).first {
            throw CLIError("reference attention failed: \(failure)")
        }
        let diff = diffSquares.reduce(0, +).squareRoot()
        return SampledError(
            rows: sampled,
            relativeError: diff / referenceSquares.reduce(0, +).squareRoot(),
            relativeErrorToV: diff / (vRMS * Double(sampled).squareRoot()),
            maxLogSumExpError: lseErrors.max() ?? 0,
            seconds: monotonicSeconds() - start)
    }

    /// The error of a distributed run on the synthetic problem `spec`, the same rows as the
    /// single-process `measure`: every rank sends rank 0 the (o, lse) of the sampled rows it owns
    /// (one gatherv), and rank 0 generates the whole K and V and the sampled query rows and runs
    /// the float64 reference. Returns the error on rank 0 and nil elsewhere. Collective: every
    /// rank calls it. `maxKeyValueBytes` caps what rank 0 may allocate for K and V; beyond it
    /// the check is skipped (`skipped` on rank 0 says why).
    static func measureDistributed(
        world: Communicator, spec: SyntheticSpec, options: AttentionOptions, result: DistributedResult,
        queryChunks: (Int) -> [Range<Int>], rows: Int, threads: Int, maxKeyValueBytes: Int
    ) throws -> (error: SampledError?, skipped: String?) {
        let s = spec.shape
        let n = s.queryCount, d = s.headDim, dv = s.valueDim, heads = s.batch * s.queryHeads
        let kvBytes = 4 * s.batch * s.keyHeads * s.keyCount * (d + dv)
        if kvBytes > maxKeyValueBytes {
            let reason = "skipped: rank 0 would need \(fixed(Double(kvBytes) / 1_073_741_824, 2)) GiB for the whole K and V "
                + "(limit \(fixed(Double(maxKeyValueBytes) / 1_073_741_824, 2)) GiB); --error-rows 0 turns the check off"
            return (nil, world.rank == 0 ? reason : nil)
        }
        let units = sampledUnits(heads: heads, n: n, rows: rows, seed: options.seed)
        let picked: [(head: Int, row: Int)] = units.flatMap { u in u.rows.map { (u.head, $0) } }
        // This rank's sampled rows, in `picked` order: dv floats of O and the lse each.
        var mine: [Float] = []
        let mySlots = ChunkedRows(queryChunks(world.rank))
        result.output.withUnsafeBufferPointer { o in
            result.logSumExp.withUnsafeBufferPointer { l in
                for (head, row) in picked {
                    guard let offset = mySlots.offset(of: row) else { continue }
                    let local = head * mySlots.count + offset
                    mine += UnsafeBufferPointer(start: o.baseAddress! + local * dv, count: dv)
                    mine.append(l[local])
                }
            }
        }
        let gathered = try world.gatherv(mine, root: 0)
        guard world.rank == 0, let gathered else { return (nil, nil) }
        let start = monotonicSeconds()
        // Where each sampled row landed: rank by rank, in `picked` order within a rank.
        var slot = [Int: Int]()  // head·n + row → offset in gathered.values
        var offset = 0
        for rank in 0..<world.size {
            let owned = ChunkedRows(queryChunks(rank))
            for (head, row) in picked where owned.offset(of: row) != nil {
                slot[head * n + row] = offset
                offset += dv + 1
            }
        }
        let key = spec.key(tokens: 0..<n, threads: threads), value = spec.value(tokens: 0..<n, threads: threads)
        // Query rows: [n, d] per head, zero except the sampled rows (calloc: untouched pages cost nothing).
        var pointers = [Int: UnsafeMutablePointer<Float>]()
        defer { pointers.values.forEach { free($0) } }
        var queryHeads = [Int: Tensor]()
        for (head, row) in picked {
            let target: UnsafeMutablePointer<Float>
            if let p = pointers[head] {
                target = p
            } else {
                target = calloc(n * d, 4)!.assumingMemoryBound(to: Float.self)
                pointers[head] = target
                queryHeads[head] = Tensor(shape: [n, d], adopting: target, deallocator: {})
            }
            let q = spec.query(tokens: row..<(row + 1), threads: 1)  // [b, h, 1, d]
            q.withUnsafeBufferPointer { (target + row * d).update(from: $0.baseAddress! + head * d, count: d) }
        }
        var error = try gathered.values.withUnsafeBufferPointer { g in
            try measure(
                shape: s, units: units, key: key, value: value, options: options, threads: threads,
                queryHead: { queryHeads[$0]! },
                output: { head, i in
                    let at = slot[head * n + i]!
                    return (g.baseAddress! + at, g[at + dv])
                })
        }
        error.seconds = monotonicSeconds() - start
        return (error, nil)
    }
}

/// A run-time failure with a one-line message (printed as `Error: <message>`).

/// The rows of a rank's shard: token chunks stored one after the other.
struct ChunkedRows {
    var chunks: [Range<Int>]
    init(_ chunks: [Range<Int>]) { self.chunks = chunks }
    /// Rows per head.
    var count: Int { chunks.reduce(0) { $0 + $1.count } }
    /// Where token `row` sits among the rows, or nil when not held.
    func offset(of row: Int) -> Int? {
        var first = 0
        for chunk in chunks {
            if chunk.contains(row) { return first + row - chunk.lowerBound }
            first += chunk.count
        }
        return nil
    }
}
