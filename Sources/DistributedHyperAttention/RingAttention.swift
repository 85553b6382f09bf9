import Foundation
import HyperAttention
import MPI

/// Exact attention over the ranks of a communicator by ring attention (Liu, Zaharia and Abbeel,
/// 2023): the baseline HyperAttention is measured against.
///
/// Every rank keeps its query rows and passes its key/value rows around the ring: at step s it
/// holds the K/V rows of rank (r − s) mod P, sends them on to rank r + 1 and receives the next
/// ones from rank r − 1 with non-blocking calls, while it runs the core's exact tile kernel on
/// the block it holds (polling the transfers between pieces of work, so that they progress
/// during the compute). Partial outputs are lse-merged in fp32 into the rank's rows, in step
/// order. After P − 1 transfers every query has seen every key.
///
/// Layout. Non-causal: rank p owns the contiguous tokens [⌊p·n/P⌋, ⌊(p+1)·n/P⌋), as in
/// `DistributedAttention`. Causal: the zigzag (load-balanced) layout: the sequence is cut into
/// 2P chunks and rank p owns chunks p and 2P−1−p, so every rank has one early and one late
/// chunk and the same causal work (up to rounding of the chunk lengths). The shards passed to
/// `run` hold the rows of `queryChunks(rank:)` / `keyChunks(rank:)` one chunk after the other.
///
/// The result equals the single-process exact attention to fp32 rounding (the merges add in
/// another order); with one rank it is the single-process kernel.
///
/// Like `DistributedAttention`, an instance keeps its last call's output and lse tensors and
/// the next call writes into them if the caller has dropped every copy (fresh pages are faulted
/// in at first touch); the results are the same bit for bit either way. Its two K|V message
/// buffers are kept too.
public struct RingAttention: SequenceParallelAttention {
    public let communicator: Communicator
    public let shape: AttentionShape
    /// The options in effect: `mode` is always `.exact`; `causal`, `scale` and `threads` are used.
    public let options: AttentionOptions
    /// The last call's output and lse tensors and the K|V message buffers, kept from call to
    /// call (freed with the last copy of this value). One call at a time per instance.
    let scratch: RingScratch

    /// Message tag of the ring transfers.
    static let tag = 17
    /// Work units per step (heads × query parts) between which the transfers are polled.
    static let unitsPerStep = 32

    /// - Throws: `AttentionError.invalidArgument` for bad options (the single-process checks).
    public init(communicator: Communicator, shape: AttentionShape, options: AttentionOptions) throws {
        var exact = options
        exact.mode = .exact
        try exact.validate(for: shape)
        self.communicator = communicator
        self.shape = shape
        self.options = exact
        scratch = RingScratch()
    }

    /// The token chunks that `rank` of `ranks` owns of a side of length `count`, in storage order.
    public static func chunks(rank: Int, ranks: Int, count: Int, causal: Bool) -> [Range<Int>] {
        guard causal else { return [DistributedAttention.tokenRange(rank: rank, ranks: ranks, count: count)] }
        return [DistributedAttention.tokenRange(rank: rank, ranks: 2 * ranks, count: count),
                DistributedAttention.tokenRange(rank: 2 * ranks - 1 - rank, ranks: 2 * ranks, count: count)]
    }

    public func queryChunks(rank: Int) -> [Range<Int>] {
        Self.chunks(rank: rank, ranks: communicator.size, count: shape.queryCount, causal: options.causal)
    }

    public func keyChunks(rank: Int) -> [Range<Int>] {
        Self.chunks(rank: rank, ranks: communicator.size, count: shape.keyCount, causal: options.causal)
    }

    /// Floats of the K|V message of `rank`: per chunk, K `[b·h_kv, rows, d]` then V `[b·h_kv, rows, d_v]`.
    func messageCount(rank: Int) -> Int {
        keyChunks(rank: rank).reduce(0) { $0 + shape.batch * shape.keyHeads * $1.count * (shape.headDim + shape.valueDim) }
    }

    /// Runs the problem; every rank of the communicator calls this with its shards.
    /// - Parameters:
    ///   - query: `localQueryShape`, the rows of `queryChunks(rank:)` chunk after chunk.
    ///   - key, value: `localKeyShape` / `localValueShape`, the rows of `keyChunks(rank:)`.
    ///   - logSumExp: unused (ring attention always has the lse); for the protocol.
    /// - Throws: `AttentionError` for shards of the wrong shape, `MPIError` for MPI failures.
    public func run(query: Tensor, key: Tensor, value: Tensor, logSumExp: Bool = true) throws -> DistributedResult {
        try checkShards(query: query, key: key, value: value)
        let start = MPIEnvironment.wallTime
        var report = DistributedReport()
        let p = communicator.size, r = communicator.rank
        let bh = shape.batch * shape.queryHeads, bkv = shape.batch * shape.keyHeads
        let d = shape.headDim, dv = shape.valueDim
        let myQueries = queryChunks(rank: r)

        // O and lse in the shard layout, the previous call's if the caller has let go of them.
        // Every row is written (not merged) by its first piece, which sees lse = −inf: all
        // rows have one (each sees all keys, or causal its own), so only the lse is reset (by takeLogSumExp);
        // with no keys at all nothing is written and O is zeroed, as a fresh tensor would be.
        let localRows = myQueries.reduce(0) { $0 + $1.count }
        var output = scratch.results.takeOutput(shape: [shape.batch, shape.queryHeads, localRows, dv])
        let lse = scratch.results.takeLogSumExp(shape: [shape.batch, shape.queryHeads, localRows])
        if shape.keyCount == 0 { output.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
        defer { scratch.results.keep(output: output, logSumExp: lse) }

        // Two K|V message buffers (ping-pong), the previous call's.
        var t = MPIEnvironment.wallTime
        let rows = RingRows(query: query, output: output, logSumExp: lse, queryChunks: myQueries, key: key, value: value,
                            keyChunks: keyChunks(rank: r), messages: scratch.messages(count: (0..<p).map(messageCount(rank:)).max() ?? 0))
        report.exchangeSeconds += MPIEnvironment.wallTime - t

        let plan = AttentionPlan(shape: shape, options: options)
        let threads = options.effectiveThreads
        let right = (r + 1) % p, left = (r + p - 1) % p
        for step in 0..<p {
            let origin = (r + p - step) % p
            // Start passing the block on before computing with it.
            var pending: [Request] = []
            if step < p - 1 {
                let incoming = messageCount(rank: (origin + p - 1) % p), outgoing = messageCount(rank: origin)
                pending.append(try communicator.immediateReceive(into: rows.nextMessage(count: incoming), from: left, tag: Self.tag))
                pending.append(try communicator.immediateSend(borrowing: rows.currentMessage(count: outgoing), to: right, tag: Self.tag))
                report.bytesSent += 4 * outgoing
                report.bytesReceived += 4 * incoming
            }
            t = MPIEnvironment.wallTime
            var polling = 0.0
            let keys = keyChunks(rank: origin)
            for pair in work(queryChunks: myQueries, keyChunks: keys, heads: bh) {
                let io = rows.io(queryChunk: pair.queryChunk, keyChunk: pair.keyChunk, of: keys, kvHeads: bkv)
                let executor = PieceExecutor(plan: plan, io: io, threads: threads, meter: ProgressMeter(total: 1, callback: nil))
                for pieces in pair.units {
                    executor.run(pieces)
                    let tp = MPIEnvironment.wallTime
                    for request in pending { try request.test() }
                    polling += MPIEnvironment.wallTime - tp
                }
                report.evaluatedPairs += executor.evaluatedPairs
            }
            report.computeSeconds += MPIEnvironment.wallTime - t - polling
            t = MPIEnvironment.wallTime
            try Request.waitAll(pending)
            report.exchangeSeconds += MPIEnvironment.wallTime - t + polling
            rows.swapMessages()
        }

        report.totalSeconds = MPIEnvironment.wallTime - start
        var stats = AttentionStats()
        stats.evaluatedPairs = report.evaluatedPairs
        stats.flops = Double(report.evaluatedPairs) * 2 * Double(d + dv)
        return DistributedResult(output: output, logSumExp: lse, stats: stats, report: report)
    }

    /// The work of a step on one (query chunk, key chunk) pair: the visible part (all keys; causal:
    /// the causal diagonal for the same chunk), cut into units of whole heads × query tiles
    /// between which the transfers are polled.
    struct PairWork {
        var queryChunk: Int
        var keyChunk: Int
        var units: [[Piece]]
    }

    /// The work of a step, in a fixed order (so every run merges in the same order): key chunk by
    /// key chunk, query chunk by query chunk, skipping pairs whose keys are all in the queries'
    /// future; about `unitsPerStep` units in all.
    func work(queryChunks: [Range<Int>], keyChunks: [Range<Int>], heads: Int) -> [PairWork] {
        var pairs: [(a: Int, j: Int, causal: Bool)] = []
        for (j, keys) in keyChunks.enumerated() where !keys.isEmpty {
            for (a, queries) in queryChunks.enumerated() where !queries.isEmpty {
                if options.causal {
                    if keys.lowerBound >= queries.upperBound { continue }  // all in the future
                    pairs.append((a, j, keys == queries))
                } else {
                    pairs.append((a, j, false))
                }
            }
        }
        guard !pairs.isEmpty else { return [] }
        // Heads go whole; a chunk is cut into parts of whole query tiles.
        let partsPerPair = max(1, Self.unitsPerStep / (pairs.count * heads))
        let tile = AttentionPlan.queryTile
        return pairs.map { a, j, causal in
            let queries = queryChunks[a], keys = keyChunks[j]
            let tiles = (queries.count + tile - 1) / tile
            let parts = min(partsPerPair, tiles)
            let units = (0..<parts).map { part -> [Piece] in
                let lo = queries.lowerBound + part * tiles / parts * tile
                let hi = min(queries.upperBound, queries.lowerBound + (part + 1) * tiles / parts * tile)
                return (0..<heads).map { Piece(head: $0, queries: lo..<hi, keys: keys, causal: causal, hyper: false, merge: true) }
            }
            return PairWork(queryChunk: a, keyChunk: j, units: units)
        }
    }
}

/// A rank's rows during ring attention: Q, O and lse in the shard layout (`[b, h, Σ rows, ·]`,
/// the query chunks one after the other in every head) and two K|V message buffers, the one
/// being computed on and the one being received into. A message holds, chunk after chunk,
/// K `[b·h_kv, rows, d]` then V `[b·h_kv, rows, d_v]`.
final class RingRows {
    let queryChunks: [Range<Int>]
    private let query: Tensor
    private let output: Tensor
    private let lse: Tensor
    private var current: UnsafeMutablePointer<Float>
    private var next: UnsafeMutablePointer<Float>

    /// - Parameters:
    ///   - query, key, value: the rank's shards (rows of `queryChunks` / `keyChunks`, chunk after chunk).
    ///   - output, logSumExp: where O `[b, h, Σ rows, d_v]` and lse `[b, h, Σ rows]` are written,
    ///     in the query shard's layout; not shared with any other holder.
    ///   - messages: two buffers of at least the floats of the largest K|V message of any rank,
    ///     valid while this lives (contents not initialised).
    init(query: Tensor, output: Tensor, logSumExp: Tensor, queryChunks: [Range<Int>], key: Tensor, value: Tensor,
         keyChunks: [Range<Int>], messages: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>)) {
        self.queryChunks = queryChunks
        self.query = query
        self.output = output
        self.lse = logSumExp
        (current, next) = messages
        // This rank's own message, copied chunk by chunk from the shards.
        var destination = current
        for rows in Self.storedRows(of: keyChunks) {
            for part in [key, value] {
                let width = part.shape[part.shape.count - 1], total = part.shape[part.shape.count - 2]
                let heads = part.shape.dropLast(2).reduce(1, *)
                part.withUnsafeBufferPointer { source in
                    for head in 0..<heads where !rows.isEmpty {
                        destination.update(from: source.baseAddress! + (head * total + rows.lowerBound) * width, count: rows.count * width)
                        destination += rows.count * width
                    }
                }
            }
        }
    }

    /// Where each chunk's rows sit in a shard that stores the chunks one after the other.
    private static func storedRows(of chunks: [Range<Int>]) -> [Range<Int>] {
        var first = 0
        return chunks.map { chunk in
            defer { first += chunk.count }
            return first..<(first + chunk.count)
        }
    }

    func currentMessage(count: Int) -> UnsafeBufferPointer<Float> { UnsafeBufferPointer(start: current, count: count) }
    func nextMessage(count: Int) -> UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: next, count: count) }
    func swapMessages() { swap(&current, &next) }

    /// The core's view of query chunk `a` against key chunk `j` of the current message, whose
    /// key chunks are `keyChunks`. The core finds row i of head h of a tensor of rows
    /// `queryRows` at (h·|queryRows| + i − queryRows.lowerBound): in the shard, where a head
    /// holds Σ rows and chunk a starts `stored` rows in, that is the window of Σ rows starting
    /// `stored` rows before the chunk's first token (it contains the chunk; the rest of it is
    /// never addressed).
    func io(queryChunk a: Int, keyChunk j: Int, of keyChunks: [Range<Int>], kvHeads: Int) -> AttentionIO {
        let d = query.shape.last!, dv = output.shape.last!
        let total = query.shape[query.shape.count - 2]
        let stored = queryChunks[..<a].reduce(0) { $0 + $1.count }
        let first = queryChunks[a].lowerBound - stored
        let keys = UnsafePointer(current + keyChunks[..<j].reduce(0) { $0 + kvHeads * $1.count * (d + dv) })
        return AttentionIO(query: UnsafePointer(query.unsafeStoragePointer), key: keys, value: keys + kvHeads * keyChunks[j].count * d,
                           output: output.unsafeStoragePointer, lse: lse.unsafeStoragePointer,
                           queryRows: first..<(first + total), keyRows: keyChunks[j])
    }
}

/// What a `RingAttention` keeps from call to call: its last call's output and lse tensors, and
/// the two K|V message buffers (a fresh buffer's pages are zeroed by the kernel at first touch,
/// every call).
final class RingScratch {
    let results = KeptResults()
    private var buffers: [Tensor] = []

    /// Two buffers of at least `count` floats (contents not initialised), valid until the next
    /// call with a larger count or the end of this object.
    func messages(count: Int) -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) {
        if buffers.count != 2 || buffers[0].count < count {
            buffers = (0..<2).map { _ in Tensor(shape: [max(count, 1)]) { _ in } }
        }
        return (buffers[0].unsafeStoragePointer, buffers[1].unsafeStoragePointer)
    }
}
