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
public struct RingAttention: SequenceParallelAttention {
    public let communicator: Communicator
    public let shape: AttentionShape
    /// The options in effect: `mode` is always `.exact`; `causal`, `scale` and `threads` are used.
    public let options: AttentionOptions

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

        // Local layout: Q, O and lse per query chunk; two K|V message buffers (ping-pong).
        var t = MPIEnvironment.wallTime
        let rows = RingRows(queryChunks: myQueries, heads: bh, headDim: d, valueDim: dv,
                            messageCapacity: (0..<p).map(messageCount(rank:)).max() ?? 0)
        rows.packQueries(from: query)
        rows.packKeysValues(key: key, value: value, chunks: keyChunks(rank: r), kvHeads: bkv)
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
            let units = work(queryChunks: myQueries, keyChunks: keyChunks(rank: origin), heads: bh)
            var offset = 0
            for (j, keys) in keyChunks(rank: origin).enumerated() {
                let kv = rows.currentKeysValues(offset: offset, rows: keys.count, kvHeads: bkv, headDim: d, valueDim: dv)
                offset += bkv * keys.count * (d + dv)
                for a in myQueries.indices {
                    let mine = units.filter { $0.queryChunk == a && $0.keyChunk == j }
                    guard !mine.isEmpty else { continue }
                    let io = rows.io(queryChunk: a, keys: kv, keyRows: keys)
                    let executor = PieceExecutor(plan: plan, io: io, threads: threads, meter: ProgressMeter(total: 1, callback: nil))
                    for unit in mine {
                        executor.run(unit.pieces)
                        let tp = MPIEnvironment.wallTime
                        for request in pending { try request.test() }
                        polling += MPIEnvironment.wallTime - tp
                    }
                    report.evaluatedPairs += executor.evaluatedPairs
                }
            }
            report.computeSeconds += MPIEnvironment.wallTime - t - polling
            t = MPIEnvironment.wallTime
            try Request.waitAll(pending)
            report.exchangeSeconds += MPIEnvironment.wallTime - t + polling
            rows.swapMessages()
        }

        t = MPIEnvironment.wallTime
        let (output, lse) = rows.unpack(batch: shape.batch, heads: shape.queryHeads)
        report.returnSeconds += MPIEnvironment.wallTime - t
        report.totalSeconds = MPIEnvironment.wallTime - start
        var stats = AttentionStats()
        stats.evaluatedPairs = report.evaluatedPairs
        stats.flops = Double(report.evaluatedPairs) * 2 * Double(d + dv)
        return DistributedResult(output: output, logSumExp: lse, stats: stats, report: report)
    }

    /// One piece of work of a step: the pieces of some heads × a part of one query chunk against
    /// one key chunk.
    struct Unit {
        var queryChunk: Int
        var keyChunk: Int
        var pieces: [Piece]
    }

    /// The work of a step, in a fixed order (so every run merges in the same order): for each
    /// key chunk and query chunk, the visible part (all keys; causal: none for a later key
    /// chunk, the causal diagonal for the same chunk), cut into about `unitsPerStep` units.
    func work(queryChunks: [Range<Int>], keyChunks: [Range<Int>], heads: Int) -> [Unit] {
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
        var units: [Unit] = []
        for (a, j, causal) in pairs {
            let queries = queryChunks[a], keys = keyChunks[j]
            let tile = AttentionPlan.queryTile
            let tiles = (queries.count + tile - 1) / tile
            let parts = min(partsPerPair, tiles)
            for part in 0..<parts {
                let lo = queries.lowerBound + part * tiles / parts * tile
                let hi = min(queries.upperBound, queries.lowerBound + (part + 1) * tiles / parts * tile)
                let pieces = (0..<heads).map {
                    Piece(head: $0, queries: lo..<hi, keys: keys, causal: causal, hyper: false, merge: true)
                }
                units.append(Unit(queryChunk: a, keyChunk: j, pieces: pieces))
            }
        }
        return units
    }
}

/// A rank's rows during ring attention: Q, O and lse per query chunk (`[b·h, rows, ·]`) and two
/// K|V message buffers, the one being computed on and the one being received into.
final class RingRows {
    let queryChunks: [Range<Int>]
    let heads: Int, headDim: Int, valueDim: Int
    private var queries: [UnsafeMutableBufferPointer<Float>]
    private var outputs: [UnsafeMutableBufferPointer<Float>]
    private var lses: [UnsafeMutableBufferPointer<Float>]
    private var current: UnsafeMutableBufferPointer<Float>
    private var next: UnsafeMutableBufferPointer<Float>

    init(queryChunks: [Range<Int>], heads: Int, headDim: Int, valueDim: Int, messageCapacity: Int) {
        self.queryChunks = queryChunks
        self.heads = heads
        self.headDim = headDim
        self.valueDim = valueDim
        func buffer(_ count: Int, _ value: Float) -> UnsafeMutableBufferPointer<Float> {
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(count, 1))
            b.initialize(repeating: value)
            return b
        }
        queries = queryChunks.map { buffer(heads * $0.count * headDim, 0) }
        outputs = queryChunks.map { buffer(heads * $0.count * valueDim, 0) }
        lses = queryChunks.map { buffer(heads * $0.count, -.infinity) }
        current = buffer(messageCapacity, 0)
        next = buffer(messageCapacity, 0)
    }

    deinit {
        for b in queries + outputs + lses + [current, next] { b.deallocate() }
    }

    /// Copies the rows of every head of a shard (`[heads, Σ chunk rows, width]`) into per-chunk
    /// buffers (`[heads, chunk rows, width]`).
    private static func pack(_ shard: UnsafePointer<Float>, chunks: [Range<Int>], heads: Int, width: Int,
                             into buffers: [UnsafeMutableBufferPointer<Float>]) {
        let total = chunks.reduce(0) { $0 + $1.count }
        var first = 0
        for (c, chunk) in chunks.enumerated() {
            for h in 0..<heads {
                (buffers[c].baseAddress! + h * chunk.count * width).update(from: shard + (h * total + first) * width, count: chunk.count * width)
            }
            first += chunk.count
        }
    }

    /// The inverse of `pack`.
    private static func unpack(_ buffers: [UnsafeMutableBufferPointer<Float>], chunks: [Range<Int>], heads: Int, width: Int,
                               into shard: UnsafeMutablePointer<Float>) {
        let total = chunks.reduce(0) { $0 + $1.count }
        var first = 0
        for (c, chunk) in chunks.enumerated() {
            for h in 0..<heads {
                (shard + (h * total + first) * width).update(from: buffers[c].baseAddress! + h * chunk.count * width, count: chunk.count * width)
            }
            first += chunk.count
        }
    }

    func packQueries(from query: Tensor) {
        query.withUnsafeBufferPointer {
            Self.pack($0.baseAddress!, chunks: queryChunks, heads: heads, width: headDim, into: queries)
        }
    }

    /// Lays this rank's K and V rows out as its ring message.
    func packKeysValues(key: Tensor, value: Tensor, chunks: [Range<Int>], kvHeads: Int) {
        let total = chunks.reduce(0) { $0 + $1.count }
        key.withUnsafeBufferPointer { kb in
            value.withUnsafeBufferPointer { vb in
                var out = current.baseAddress!, first = 0
                for chunk in chunks {
                    for (src, width) in [(kb.baseAddress!, headDim), (vb.baseAddress!, valueDim)] {
                        for h in 0..<kvHeads {
                            out.update(from: src + (h * total + first) * width, count: chunk.count * width)
                            out += chunk.count * width
                        }
                    }
                    first += chunk.count
                }
            }
        }
    }

    func currentMessage(count: Int) -> UnsafeBufferPointer<Float> { UnsafeBufferPointer(rebasing: current[0..<count]) }
    func nextMessage(count: Int) -> UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(rebasing: next[0..<count]) }
    func swapMessages() { swap(&current, &next) }

    /// K and V of one key chunk of the current message, starting `offset` floats in.
    func currentKeysValues(offset: Int, rows: Int, kvHeads: Int, headDim: Int, valueDim: Int)
        -> (keys: UnsafePointer<Float>, values: UnsafePointer<Float>) {
        let k = UnsafePointer(current.baseAddress! + offset)
        return (k, k + kvHeads * rows * headDim)
    }

    /// The core's view of query chunk `a` against the key chunk `keys` (rows `keyRows`).
    func io(queryChunk a: Int, keys: (keys: UnsafePointer<Float>, values: UnsafePointer<Float>), keyRows: Range<Int>) -> AttentionIO {
        AttentionIO(query: UnsafePointer(queries[a].baseAddress!), key: keys.keys, value: keys.values,
                    output: outputs[a].baseAddress!, lse: lses[a].baseAddress!, queryRows: queryChunks[a], keyRows: keyRows)
    }

    /// O `[b, h, Σ rows, d_v]` and lse `[b, h, Σ rows]` in the shard layout.
    func unpack(batch: Int, heads h: Int) -> (Tensor, Tensor) {
        let total = queryChunks.reduce(0) { $0 + $1.count }
        var output = Tensor(shape: [batch, h, total, valueDim]) { _ in }
        var lse = Tensor(shape: [batch, h, total]) { _ in }
        output.withUnsafeMutableBufferPointer {
            Self.unpack(outputs, chunks: queryChunks, heads: heads, width: valueDim, into: $0.baseAddress!)
        }
        lse.withUnsafeMutableBufferPointer {
            Self.unpack(lses, chunks: queryChunks, heads: heads, width: 1, into: $0.baseAddress!)
        }
        return (output, lse)
    }
}
