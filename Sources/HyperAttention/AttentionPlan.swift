import Foundation
import Synchronization

/// One attention call, laid out as levels of independent pieces.
///
/// A *piece* is attention of a range of one head's queries against a range of its keys: exact
/// (optionally causal) or HyperAttention (non-causal). Non-causal attention is one piece per
/// head. Causal HyperAttention follows the recursion of DESIGN.md §1: split at s = ⌈n/2⌉ until
/// the length is at most `minSeqLen`; the leaves are exact causal pieces and every inner node
/// adds the rectangle Q[s..<hi] × K[lo..<s]. The pieces of one level touch disjoint query rows,
/// so they run in parallel; levels run in a fixed order (leaves, then rectangles from the
/// deepest to the root), so each row's partials are lse-merged in the same order every time.
package struct AttentionPlan {
    package let shape: AttentionShape
    package let options: AttentionOptions

    /// Tile sizes of the kernel, chosen by measurement (README, "Performance"): exact tiles of
    /// 96 queries stream K and V half as often as 48; HyperAttention blocks (~b = 256 queries)
    /// use tiles of 48 (5 full tiles and a 16-query tail), where the two measure the same;
    /// keys go in chunks of 48 (a multiple of the 6-row micro-kernel).
    package static let queryTile = 96
    package static let blockQueryTile = 48
    package static let keyChunk = 48

    package init(shape: AttentionShape, options: AttentionOptions) {
        self.shape = shape
        self.options = options
    }

    /// Whether the call has HyperAttention pieces (every head has the same levels).
    package var hasHyperPieces: Bool { levels(head: 0).joined().contains(where: \.hyper) }

    /// The levels of pieces for one head, in execution order.
    package func levels(head: Int) -> [[Piece]] {
        let nq = shape.queryCount, nk = shape.keyCount
        let hyperAllowed = options.mode == .hyper
        if !options.causal {
            let hyper = hyperAllowed && nq >= options.minSeqLen
            return [[Piece(head: head, queries: 0..<nq, keys: 0..<nk, causal: false, hyper: hyper, merge: false)]]
        }
        if !hyperAllowed {
            return [[Piece(head: head, queries: 0..<nq, keys: 0..<nk, causal: true, hyper: false, merge: false)]]
        }
        var leaves: [Piece] = []
        var rectangles: [[Piece]] = []
        func split(_ lo: Int, _ hi: Int, depth: Int) {
            if hi - lo <= options.minSeqLen {
                leaves.append(Piece(head: head, queries: lo..<hi, keys: lo..<hi, causal: true, hyper: false, merge: false))
                return
            }
            let s = lo + (hi - lo + 1) / 2
            split(lo, s, depth: depth + 1)
            split(s, hi, depth: depth + 1)
            while rectangles.count <= depth { rectangles.append([]) }
            rectangles[depth].append(Piece(
                head: head, queries: s..<hi, keys: lo..<s, causal: false,
                hyper: hi - s >= options.minSeqLen, merge: true))
        }
        split(0, nq, depth: 0)
        return [leaves] + rectangles.reversed().filter { !$0.isEmpty }
    }

    /// Runs the call, writing every element of `output` (`[..., n_q, d_v]`, the query's rank)
    /// and `lse` (the query's shape without its last dimension), whatever they held before.
    /// The shapes must have been checked by the caller.
    func run(query: Tensor, key: Tensor, value: Tensor, output: inout Tensor, lse: inout Tensor,
             progress: (@Sendable (Double) -> Void)?) -> AttentionStats {
        let heads = shape.batch * shape.queryHeads
        precondition(output.count == heads * shape.queryCount * shape.valueDim && lse.count == heads * shape.queryCount,
                     "AttentionPlan.run: output \(output.shape) or lse \(lse.shape) does not fit \(shape)")
        // The output is not cleared: every row is written (not merged) by the first piece that
        // covers it (exact tiles, LSH blocks and causal leaves each cover all rows). The lse is:
        // merging pieces read it, and a row's first piece sees -inf there, as in a fresh call.
        lse.withUnsafeMutableBufferPointer { $0.update(repeating: -.infinity) }
        // Levels of all heads, merged level by level (heads never share rows).
        var levelsAll: [[Piece]] = []
        for h in 0..<heads {
            for (i, level) in levels(head: h).enumerated() {
                if levelsAll.count <= i { levelsAll.append([]) }
                levelsAll[i] += level
            }
        }
        let totalCost = levelsAll.joined().reduce(0.0) { $0 + Double(cost(of: $1)) }
        let meter = ProgressMeter(total: totalCost, callback: progress)
        let threads = options.effectiveThreads
        var stats = AttentionStats()
        withAttentionIO(query: query, key: key, value: value, output: &output, lse: &lse,
                        queryRows: 0..<shape.queryCount, keyRows: 0..<shape.keyCount) { io in
            let executor = PieceExecutor(plan: self, io: io, threads: threads, meter: meter)
            for level in levelsAll { executor.run(level) }
            stats.evaluatedPairs = executor.evaluatedPairs
        }
        stats.flops = Double(stats.evaluatedPairs) * 2 * Double(shape.headDim + shape.valueDim)
        progress?(1)
        return stats
    }

    /// Approximate work of a piece, in query–key pairs (for progress and scheduling).
    package func cost(of p: Piece) -> Int {
        if p.hyper {
            let blocks = BlockPartition(keyCount: p.keys.count, blockSize: options.blockSize).blocks
            return p.queries.count * (p.keys.count / blocks + options.samples)
        }
        return p.causal ? p.queries.count * (p.queries.count + 1) / 2 : p.queries.count * p.keys.count
    }
}

/// Attention of `queries` × `keys` of one head (global query-head index `head`).
package struct Piece: Sendable, Equatable {
    package var head: Int
    package var queries: Range<Int>
    package var keys: Range<Int>
    /// Exact causal (only for square pieces on the diagonal: queries == keys).
    package var causal: Bool
    /// HyperAttention (non-causal) rather than exact.
    package var hyper: Bool
    /// lse-merge into the rows' existing partials rather than overwrite them.
    package var merge: Bool

    package init(head: Int, queries: Range<Int>, keys: Range<Int>, causal: Bool, hyper: Bool, merge: Bool) {
        self.head = head
        self.queries = queries
        self.keys = keys
        self.causal = causal
        self.hyper = hyper
        self.merge = merge
    }
}

/// Raw pointers of one call's tensors (valid for the call), laid out `[b, h, rows, d]`, holding
/// the global token rows `queryRows` (Q, O, lse) and `keyRows` (K, V) of every head: all of them
/// in a single process, one rank's shard under MPI. Pieces name rows by global token index.
package struct AttentionIO: @unchecked Sendable {
    package let query: UnsafePointer<Float>
    package let key: UnsafePointer<Float>
    package let value: UnsafePointer<Float>
    package let output: UnsafeMutablePointer<Float>
    package let lse: UnsafeMutablePointer<Float>
    package let queryRows: Range<Int>
    package let keyRows: Range<Int>

    package init(query: UnsafePointer<Float>, key: UnsafePointer<Float>, value: UnsafePointer<Float>,
                 output: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>, queryRows: Range<Int>, keyRows: Range<Int>) {
        self.query = query
        self.key = key
        self.value = value
        self.output = output
        self.lse = lse
        self.queryRows = queryRows
        self.keyRows = keyRows
    }
}

/// Calls `body` with the raw pointers of the call's tensors (valid only inside `body`), the
/// rows `queryRows` (Q, O, lse) and `keyRows` (K, V) stored in them.
package func withAttentionIO<R>(
    query: Tensor, key: Tensor, value: Tensor, output: inout Tensor, lse: inout Tensor,
    queryRows: Range<Int>, keyRows: Range<Int>, _ body: (AttentionIO) throws -> R
) rethrows -> R {
    try query.withUnsafeBufferPointer { q in
        try key.withUnsafeBufferPointer { k in
            try value.withUnsafeBufferPointer { v in
                try output.withUnsafeMutableBufferPointer { o in
                    try lse.withUnsafeMutableBufferPointer { l in
                        try body(AttentionIO(query: q.baseAddress!, key: k.baseAddress!, value: v.baseAddress!,
                                             output: o.baseAddress!, lse: l.baseAddress!, queryRows: queryRows, keyRows: keyRows))
                    }
                }
            }
        }
    }
}

/// The sortLSH order and the shared sample set of one HyperAttention piece.
struct HyperPreparation: @unchecked Sendable {
    /// Sorted position → query (key) row, relative to the piece's first query (key).
    var queryOrder: [Int32]
    var keyOrder: [Int32]
    var partition: BlockPartition
    var samples: SampleSet
    /// The sampled rows, gathered once for all blocks.
    var sampleRows: SampleRows
    /// Σ_k v_k over the piece's keys (control variate only).
    var valueSum: [Double]
}

/// Non-causal attention of one recursion piece — query rows `queries` against key rows `keys` of
/// the global query head `head` — exactly as the causal recursion computes it (HyperAttention
/// when `queries.count ≥ minSeqLen` and mode is `.hyper`, else exact; the same node randomness).
/// For tests and for the distributed layer; returns the piece's rows only.
package func attentionPiece(
    query: Tensor, key: Tensor, value: Tensor, options: AttentionOptions, head: Int, queries: Range<Int>, keys: Range<Int>
) throws -> (output: [Float], logSumExp: [Float]) {
    let shape = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
    var o = options
    o.causal = false
    try o.validate(for: shape)
    let plan = AttentionPlan(shape: shape, options: o)
    let hyper = o.mode == .hyper && queries.count >= o.minSeqLen
    let piece = Piece(head: head, queries: queries, keys: keys, causal: false, hyper: hyper, merge: false)
    var output = Tensor(shape: [shape.batch * shape.queryHeads * shape.queryCount * shape.valueDim])
    var lse = Tensor(shape: [shape.batch * shape.queryHeads * shape.queryCount], repeating: -.infinity)
    withAttentionIO(query: query, key: key, value: value, output: &output, lse: &lse,
                    queryRows: 0..<shape.queryCount, keyRows: 0..<shape.keyCount) { io in
        PieceExecutor(plan: plan, io: io, threads: o.effectiveThreads, meter: ProgressMeter(total: 1, callback: nil)).run([piece])
    }
    let rowBase = head * shape.queryCount
    let outRows = Array(output.scalars[(rowBase + queries.lowerBound) * shape.valueDim ..< (rowBase + queries.upperBound) * shape.valueDim])
    let lseRows = Array(lse.scalars[(rowBase + queries.lowerBound) ..< (rowBase + queries.upperBound)])
    return (outRows, lseRows)
}
