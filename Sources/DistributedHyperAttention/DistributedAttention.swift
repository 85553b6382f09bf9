import Foundation
import HyperAttention
import HyperAttentionCUDA
import MPI

/// One attention problem spread over the ranks of a communicator (sequence parallel).
///
/// Rank p owns tokens [⌊p·n/P⌋, ⌊(p+1)·n/P⌋) of every head (queries by n_q, keys and values by
/// n_k) and gets back the output rows of exactly those tokens. The result equals the
/// single-process `attention(query:key:value:options:)` for the same options: bit for bit,
/// except with the `stratifiedControlVariate` estimator, whose Σ V is summed in another order
/// (agreement to fp32 rounding there).
///
/// How (DESIGN.md §3): the pieces of the single-process plan (exact leaves and HyperAttention
/// rectangles of the causal recursion, or the one non-causal piece) are run where their rows
/// live. A piece inside one rank's shard runs there with the core's executor. A HyperAttention
/// piece spanning several ranks goes through the distributed rectangle (`DistributedRectangle`):
/// local hashing, a global stable counting sort from bucket histograms (exscan + allreduce),
/// whole blocks dealt to ranks, one alltoallv for Q rows and one for K|V rows, the sampled rows
/// allgathered, the core's block kernel, and a reverse alltoallv of (o, lse), pipelined over
/// the heads and pieces of a level (`runPipeline`). An exact piece
/// spanning ranks (a leaf that straddles a shard boundary, or a problem shorter than
/// `minSeqLen`) is gathered to the lowest of its ranks, computed there, and sent back. Every
/// rank merges its tokens' partials in the single-process order: leaves, then rectangles from
/// the deepest level to the root.
public struct DistributedAttention: SequenceParallelAttention {
    public let communicator: Communicator
    /// The global problem.
    public let shape: AttentionShape
    public let options: AttentionOptions
    /// How the blocks of a rectangle spanning ranks are dealt to them. Default `.measuredSpeed`.
    public let balancing: BlockBalancing
    /// Which blocks each rank computes (how many is `balancing`). Default `.rowLocality`.
    public let placement: BlockPlacement
    /// Where the sample parts of the causal recursion's rectangles run. Default `.withBlocks`.
    public let sampleParts: SamplePartPlacement
    /// Whether the rectangles spanning ranks are pipelined over heads and pieces (default), or
    /// run one after another with each step's collective completed before the next (the same
    /// results, bit for bit; for comparison).
    public let pipelined: Bool
    /// Exchange buffers, kept from call to call: a fresh buffer's pages are zeroed by the kernel
    /// at first touch, which measured slower than the exchange itself. They hold about 4× this
    /// rank's Q+K+V+O rows of one head (two rectangles in flight) and are freed with the last
    /// copy of this value. Also the last call's output and lse tensors: the next call writes
    /// into them if the caller has dropped every copy (else it allocates new ones). One call at
    /// a time per instance (as MPI collectives on one communicator require anyway).
    let scratch: ExchangeScratch
    /// Where this rank computes its pieces and blocks when not on its CPU cores (`options.backend`
    /// `.cuda`: its GPU). Rows, exchanges and merges stay on the host either way.
    package let accelerator: PieceAccelerator?

    /// The tokens of 0..<count that rank `rank` of `ranks` owns.
    public static func tokenRange(rank: Int, ranks: Int, count: Int) -> Range<Int> {
        (rank * count / ranks)..<((rank + 1) * count / ranks)
    }

    /// The default weight of the speed history at each new measurement (`.measuredSpeed`).
    public static let defaultSpeedHistoryDecay = 1.0

    /// - Parameters:
    ///   - balancing: how many blocks of a rectangle spanning ranks each rank gets (default by
    ///     measured speed).
    ///   - placement: which blocks (default: where their rows already are).
    ///   - sampleParts: where the causal rectangles' sample parts run (default: chosen per
    ///     rectangle from its ranks' speeds, `.bySpeeds`).
    ///   - pipelined: whether rectangles are pipelined over heads and pieces (default) or run one
    ///     after another (the same output).
    ///   - speedHistoryDecay: in (0, 1]: each measured rectangle's share of the speed history is
    ///     multiplied by this at every later one (1: all count the same).
    ///
    /// With `options.backend` `.cuda(device:precision:)`, each rank computes on CUDA device
    /// `device` (give each rank its own: `defaultCUDADevice(explicit:)` picks the local rank):
    /// the pieces inside its shard as one GPU would, and its blocks of the rectangles spanning
    /// ranks on their gathered rows (`CUDAPieceAccelerator`).
    /// - Throws: `AttentionError.invalidArgument` for bad options (the same checks as the
    ///   single-process call) or a decay outside (0, 1]; `CUDAError` when the CUDA backend is
    ///   asked for and the driver, NVRTC or the device is missing, or the shape is unsupported.
    public init(communicator: Communicator, shape: AttentionShape, options: AttentionOptions,
                balancing: BlockBalancing = .measuredSpeed, placement: BlockPlacement = .rowLocality,
                sampleParts: SamplePartPlacement = .bySpeeds, pipelined: Bool = true,
                speedHistoryDecay: Double = DistributedAttention.defaultSpeedHistoryDecay) throws {
        var accelerator: PieceAccelerator? = nil
        if case let .cuda(device, precision) = options.backend {
            try options.validate(for: shape)
            try checkCUDAShape(shape)
            accelerator = try CUDAPieceAccelerator(device: device, precision: precision)
        }
        try self.init(communicator: communicator, shape: shape, options: options, balancing: balancing, placement: placement,
                      sampleParts: sampleParts, pipelined: pipelined, speedHistoryDecay: speedHistoryDecay, accelerator: accelerator)
    }

    /// As the public initialiser, computing on `accelerator` when given (whatever
    /// `options.backend` says).
    package init(communicator: Communicator, shape: AttentionShape, options: AttentionOptions,
                 balancing: BlockBalancing = .measuredSpeed, placement: BlockPlacement = .rowLocality,
                 sampleParts: SamplePartPlacement = .bySpeeds, pipelined: Bool = true,
                 speedHistoryDecay: Double = DistributedAttention.defaultSpeedHistoryDecay, accelerator: PieceAccelerator?) throws {
        guard speedHistoryDecay > 0, speedHistoryDecay <= 1 else {
            throw AttentionError.invalidArgument("speedHistoryDecay", "must be in (0, 1], got \(speedHistoryDecay)")
        }
        try options.validate(for: shape)
        self.communicator = communicator
        self.shape = shape
        self.options = options
        self.balancing = balancing
        self.placement = placement
        self.sampleParts = sampleParts
        self.pipelined = pipelined
        self.accelerator = accelerator
        scratch = ExchangeScratch(speedHistoryDecay: speedHistoryDecay)
    }

    /// Pretends this rank's block kernel has already run `pairs` query–key pairs in `seconds`
    /// (for tests of `.measuredSpeed` dealing with unequal ranks).
    package func seedSpeedMeasurement(pairs: Int, seconds: Double) {
        scratch.recordBlockKernel(pairs: pairs, seconds: seconds)
    }

    /// With `.measuredSpeed` dealing on the CPU, before this rank's first HyperAttention block (a
    /// call whose plan has HyperAttention pieces):
    /// times its block kernel on a small synthetic problem (`measureBlockKernel`, 20 ms of block
    /// time) into the speed history, so that the first rectangles are dealt by speed too. Without
    /// it, a non-causal call's first rectangles (no own-shard blocks run before them) were dealt
    /// equally, and a slow core kept that lag to the end of the call.
    private func calibrateSpeedIfUnknown(_ plan: AttentionPlan, _ report: inout DistributedReport) {
        guard balancing == .measuredSpeed, accelerator == nil, communicator.size > 1, !scratch.measuresSpeed,
              plan.hasHyperPieces else { return }
        let start = monotonicNanoseconds()
        let m = measureBlockKernel(options: options, headDim: shape.headDim, valueDim: shape.valueDim,
                                   minimumSeconds: DistributedAttention.speedCalibrationSeconds)
        scratch.recordBlockKernel(pairs: m.pairs, seconds: m.seconds)
        report.speedCalibrationSeconds = Double(monotonicNanoseconds() - start) / 1e9
    }

    /// Block-kernel time of the speed calibration of a rank's first call (`calibrateSpeedIfUnknown`).
    public static let speedCalibrationSeconds = 0.020

    /// This rank's query rows and key rows.
    public var localQueries: Range<Int> { Self.tokenRange(rank: communicator.rank, ranks: communicator.size, count: shape.queryCount) }
    public var localKeys: Range<Int> { Self.tokenRange(rank: communicator.rank, ranks: communicator.size, count: shape.keyCount) }

    public func queryChunks(rank: Int) -> [Range<Int>] {
        [Self.tokenRange(rank: rank, ranks: communicator.size, count: shape.queryCount)]
    }
    public func keyChunks(rank: Int) -> [Range<Int>] {
        [Self.tokenRange(rank: rank, ranks: communicator.size, count: shape.keyCount)]
    }

    /// Runs the problem. Every rank of the communicator calls this with its shards.
    /// - Parameters:
    ///   - query: this rank's query rows, `localQueryShape`.
    ///   - key, value: this rank's key and value rows, `localKeyShape` / `localValueShape`.
    ///   - logSumExp: whether the caller wants the row log-sum-exp. Non-causal, the lse of a row
    ///     is needed by nothing else, so `false` saves returning 4 bytes per row and leaves
    ///     `logSumExp` as −inf where it was not computed on this rank; causal merges need it and
    ///     always have it. Default `true`.
    /// - Throws: `AttentionError` for shards of the wrong shape, `MPIError` for MPI failures.
    public func run(query: Tensor, key: Tensor, value: Tensor, logSumExp wantsLogSumExp: Bool = true) throws -> DistributedResult {
        try checkShards(query: query, key: key, value: value)
        var report = DistributedReport()
        let start = MPIEnvironment.wallTime
        // Every local row is written by its first piece (as in one process), so no zero fill.
        // The previous call's tensors are reused when the caller has let go of them.
        var output = scratch.results.takeOutput(shape: [shape.batch, shape.queryHeads, localQueries.count, shape.valueDim])
        var lse = scratch.results.takeLogSumExp(shape: [shape.batch, shape.queryHeads, localQueries.count])
        defer { scratch.results.keep(output: output, logSumExp: lse) }
        let plan = AttentionPlan(shape: shape, options: options)
        calibrateSpeedIfUnknown(plan, &report)
        try withAttentionIO(query: query, key: key, value: value, output: &output, lse: &lse,
                            queryRows: localQueries, keyRows: localKeys) { io in
            let executor = PieceExecutor(
                plan: plan, io: io, threads: options.effectiveThreads, meter: ProgressMeter(total: 1, callback: nil))
            var run = DistributedRun(attention: self, plan: plan, executor: executor, report: report,
                                     returnsLogSumExp: wantsLogSumExp || options.causal)
            defer { report = run.report }
            try run.execute()
        }
        report.totalSeconds = MPIEnvironment.wallTime - start
        var stats = AttentionStats()
        stats.evaluatedPairs = report.evaluatedPairs
        stats.flops = Double(report.evaluatedPairs) * 2 * Double(shape.headDim + shape.valueDim)
        return DistributedResult(output: output, logSumExp: lse, stats: stats, report: report)
    }
}

/// How a HyperAttention rectangle spanning ranks deals its LSH blocks to them. Either way the
/// output is the same, bit for bit: a block's result does not depend on the rank computing it.
public enum BlockBalancing: String, Sendable, CaseIterable {
    /// ⌊c·nb/P⌋ blocks to rank c: the same work (FLOPs) on every rank.
    case equalWork = "work"
    /// Blocks in proportion to each rank's measured block-kernel speed (query–key pairs per second
    /// over the HyperAttention blocks this `DistributedAttention` has run, its own shard's and the
    /// rectangles', its earlier calls included; see `speedHistoryDecay`), so that ranks on slower
    /// or busier cores get fewer. A call that starts with no measurement (the first call of a
    /// `DistributedAttention`) first times each rank's block kernel on a small synthetic problem
    /// (20 ms of block time), so that its first rectangles are dealt by speed too.
    case measuredSpeed = "speed"
}

/// Which of a rectangle's LSH blocks a rank computes (`BlockBalancing` says how many). Either
/// way the output is the same, bit for bit.
public enum BlockPlacement: String, Sendable, CaseIterable {
    /// Each block preferably to a rank that already holds its rows, most bytes first
    /// (`BlockDealing.assign`). Within an LSH bucket the sorted order is token order, and ranks
    /// hold contiguous tokens, so once a bucket has more rows per rank than a block
    /// (n ≳ P · 2^r · blockSize per side) most blocks' query rows, or key rows, sit on one rank:
    /// only the other side travels, and a query computed at home sends no result back.
    case rowLocality = "local"
    /// Contiguous runs of blocks in sorted order, rank 0 first (the earlier dealing; rows travel
    /// wherever they are).
    case contiguous
}

/// Where the sample part of a block of the causal recursion's rectangles spanning ranks runs: its
/// queries against the node's samples, which every rank has (the other part, its queries against
/// the block's keys, runs where the block is dealt). Either way the output is the same, bit for
/// bit: the kernel computes the two parts as separately normalised partials and merges them.
public enum SamplePartPlacement: String, Sendable, CaseIterable {
    /// On the rank that computes the block: the rectangle's whole work is dealt by speed, and the
    /// key side sends K|V rows or receives Q rows as the block needs. Faster than `.atOwners` on
    /// average at P = 16 on one busy 16-core host, in 3 of 4 alternating rounds
    /// (docs/results/scaling/sample-parts-option/).
    case withBlocks = "blocks"
    /// On the rank that owns each query row: the key side computes the block parts of its own
    /// key rows and returns (o, lse), d_v + 1 floats a row instead of d + d_v, and the blocks'
    /// Σ v travel by allgatherv for the control variate. Fewer bytes for the busiest rank
    /// (0.17–0.19 of ring's at P = 16, n = 2^20, against 0.22), but half of each rectangle's work
    /// is then fixed at the owners and cannot be dealt by speed. CPU only (an accelerator
    /// computes both parts together).
    case atOwners = "owners"
    /// Chosen per rectangle from the speeds its ranks report with their histograms: at the
    /// owners unless that would leave some rank more than `overloadLimit` × its share of the
    /// rectangle's work. At the owners, a rank's sample parts are fixed work and only the blocks
    /// are dealt by speed, so the dealing can balance the ranks unless a rank's sample parts alone
    /// exceed its share (a query-side rank slower than the rectangle's mean: in a causal
    /// rectangle the query side's sample parts are half of the work). Unmeasured or equal speeds
    /// (as always with `.equalWork` dealing) give equal shares: at the owners. Every rank of the
    /// rectangle decides from the same allgathered integers. Before 2026-12-07 the rule was "at
    /// the owners while the fastest rank is at most 1.1 × the slowest", which kept the blocks on
    /// most rectangles of a busy host's uneven cores (0.20–0.22 of ring's bytes there, against
    /// 0.16–0.17 at the owners), also where only key-side ranks were slow; on 2 ranks with the
    /// key side's core at half speed the new rule sends 20% fewer bytes in the same time
    /// (docs/results/scaling/auto-overload/). The default: at P = 16 on a busy 16-core host the
    /// first rule took 10.39–11.15 s (median 10.63) against 10.96–11.46 s (11.39) with the blocks
    /// and 10.09–12.92 s (11.11) at the owners, alternating
    /// (docs/results/scaling/sample-parts-auto/h100/).
    case bySpeeds = "auto"

    /// The largest predicted overload (a rank's time over the balanced time) at which `.bySpeeds`
    /// still runs the sample parts at the owners.
    public static let overloadLimit = 1.1

    /// Whether a causal rectangle (CPU) runs its sample parts at the query rows' owners.
    /// - Parameters:
    ///   - speedWeights: each rank's speed weight (`ExchangeScratch.speedWeight`: 1 where not
    ///     measured); clamped as the dealing clamps them (`BlockDealing.shares`).
    ///   - sampleWork: each rank's sample-part work if they run at the owners (its query rows × m).
    ///   - totalBlockWork: the work of all the blocks' block parts, in the same unit.
    public func samplesAtOwners(speedWeights weights: [Int64], sampleWork: [Double], totalBlockWork: Double) -> Bool {
        switch self {
        case .withBlocks: return false
        case .atOwners: return true
        case .bySpeeds:
            return Self.predictedOverload(speedWeights: weights, sampleWork: sampleWork, totalBlockWork: totalBlockWork) <= Self.overloadLimit
        }
    }

    /// With the sample parts at the owners and the blocks dealt by speed, the largest ratio of a
    /// rank's work to its share of the whole (1 when every rank's sample parts fit in its share).
    static func predictedOverload(speedWeights weights: [Int64], sampleWork: [Double], totalBlockWork: Double) -> Double {
        let shares = BlockDealing.shares(weights)
        let total = totalBlockWork + sampleWork.reduce(0, +)
        guard total > 0 else { return 1 }
        return zip(sampleWork, shares).map { work, share in share > 0 ? work / (total * share) : 1 }.reduce(1, max)
    }
}

/// A sequence-parallel attention method over the ranks of a communicator: which token rows each
/// rank holds, and the collective call. `DistributedAttention` (HyperAttention, or exact pieces
/// gathered where they span ranks) and `RingAttention` (exact) implement it.
public protocol SequenceParallelAttention {
    var communicator: Communicator { get }
    /// The global problem.
    var shape: AttentionShape { get }
    var options: AttentionOptions { get }
    /// The query tokens `rank` holds, chunk after chunk in its shards (non-empty list; a chunk
    /// may be empty).
    func queryChunks(rank: Int) -> [Range<Int>]
    /// The key/value tokens `rank` holds.
    func keyChunks(rank: Int) -> [Range<Int>]
    /// Runs the problem; every rank calls it with its shards (`localQueryShape` and so on).
    /// `logSumExp: false` lets a method skip returning the lse where nothing needs it.
    func run(query: Tensor, key: Tensor, value: Tensor, logSumExp: Bool) throws -> DistributedResult
}

extension SequenceParallelAttention {
    public var localQueryChunks: [Range<Int>] { queryChunks(rank: communicator.rank) }
    public var localKeyChunks: [Range<Int>] { keyChunks(rank: communicator.rank) }
    public var localQueryCount: Int { localQueryChunks.reduce(0) { $0 + $1.count } }
    public var localKeyCount: Int { localKeyChunks.reduce(0) { $0 + $1.count } }

    /// Shapes of this rank's shards, `[b, h, rows, d]` (rows: the chunks one after the other).
    public var localQueryShape: [Int] { [shape.batch, shape.queryHeads, localQueryCount, shape.headDim] }
    public var localKeyShape: [Int] { [shape.batch, shape.keyHeads, localKeyCount, shape.headDim] }
    public var localValueShape: [Int] { [shape.batch, shape.keyHeads, localKeyCount, shape.valueDim] }

    /// - Throws: `AttentionError.invalidArgument` naming the shard whose shape is wrong.
    func checkShards(query: Tensor, key: Tensor, value: Tensor) throws {
        for (name, t, expected) in [("query", query, localQueryShape), ("key", key, localKeyShape), ("value", value, localValueShape)]
        where t.shape != expected {
            throw AttentionError.invalidArgument(name, "rank \(communicator.rank) expected its shard of shape \(expected), got \(t.shape)")
        }
    }
}

/// This rank's output rows and what it took to get them.
public struct DistributedResult {
    /// O for this rank's query rows, `[b, h_q, rows, d_v]`.
    public var output: Tensor
    /// lse for this rank's query rows, `[b, h_q, rows]`.
    public var logSumExp: Tensor
    /// Work done on this rank.
    public var stats: AttentionStats
    public var report: DistributedReport
}

/// Per-rank timings and traffic of a distributed call.
public struct DistributedReport: Sendable, Codable, Equatable {
    /// Local hashing of this rank's rows.
    public var hashSeconds = 0.0
    /// Timing this rank's block kernel on a small synthetic problem, in a call that starts with
    /// no speed measurement (`.measuredSpeed` dealing: the first call of a `DistributedAttention`
    /// on the CPU); 0 otherwise.
    public var speedCalibrationSeconds = 0.0
    /// Bucket histograms, packing rows and waiting for the alltoallv of Q and K|V rows, polling
    /// other rectangles' transfers between chunks of blocks; also the gathering of pieces to
    /// their leader rank.
    public var exchangeSeconds = 0.0
    /// Allgather of the sampled key/value rows (contributed by their owners) and waiting for it.
    /// (The control variate's Σ V travels with the histograms.)
    public var sampleGatherSeconds = 0.0
    /// Attention kernels on this rank (local pieces, blocks, gathered pieces).
    public var computeSeconds = 0.0
    /// Reverse alltoallv of (o, lse) and the merges into this rank's rows.
    public var returnSeconds = 0.0
    public var totalSeconds = 0.0
    /// Of the phases above, the time spent blocked waiting for other ranks' data (histograms,
    /// rows, samples and results of pipelined rectangles): stalls, as opposed to this rank's own
    /// hashing, packing, copying and computing. Not measured for ring attention.
    public var waitSeconds = 0.0
    /// Payload bytes this rank sent and received in collectives (counters included).
    public var bytesSent = 0
    public var bytesReceived = 0
    /// Of `bytesSent`, the rows a rank addressed to itself in personalised exchanges and gathers
    /// (MPI copies them locally; no link carries them). Ring attention sends nothing to itself.
    public var bytesSentToSelf = 0
    /// Query–key pairs evaluated on this rank.
    public var evaluatedPairs = 0
    /// HyperAttention rectangles spanning ranks that this rank took part in, and of those the
    /// ones whose sample parts ran at the query rows' owners (`SamplePartPlacement`).
    public var spanningRectangles = 0
    public var rectanglesWithSamplesAtOwners = 0
    public init() {}
}

/// The state of one distributed call on one rank.
struct DistributedRun {
    let attention: DistributedAttention
    let plan: AttentionPlan
    let executor: PieceExecutor
    var report: DistributedReport
    /// Whether (o, lse) or only o goes back to a row's owner from a rectangle that does not merge.
    let returnsLogSumExp: Bool
    /// Exchange buffers reused by every rectangle (the attention's, kept between calls).
    var scratch: ExchangeScratch { attention.scratch }

    var comm: Communicator { attention.communicator }
    var shape: AttentionShape { attention.shape }

    /// The ranks (contiguous) that own any of `rows` of a side of length `count`.
    func owners(of rows: Range<Int>, count: Int) -> ClosedRange<Int>? {
        guard !rows.isEmpty, count > 0 else { return nil }
        let p = comm.size
        return proportionalPart(containing: rows.lowerBound, parts: p, length: count)...proportionalPart(containing: rows.upperBound - 1, parts: p, length: count)
    }

    /// Ranks taking part in a piece: owners of its queries or of its keys.
    func participants(_ piece: Piece) -> ClosedRange<Int> {
        let a = owners(of: piece.queries, count: shape.queryCount)!, b = owners(of: piece.keys, count: shape.keyCount)!
        return min(a.lowerBound, b.lowerBound)...max(a.upperBound, b.upperBound)
    }

    mutating func execute() throws {
        let heads = shape.batch * shape.queryHeads
        // The levels are the same for every head; only the head index differs.
        let template = plan.levels(head: 0)
        func isLocal(_ piece: Piece) -> Bool { participants(piece).count == 1 && participants(piece).lowerBound == comm.rank }
        if let accelerator = attention.accelerator {
            // The pieces inside this shard, every level, all at once on the device. A row's
            // pieces inside its shard all come before those spanning ranks (nodes nest, and the
            // deeper levels run first), so each row still merges in the single-process order.
            let levels = template.map { level in (0..<heads).flatMap { h in level.filter(isLocal).map { var p = $0; p.head = h; return p } } }
            if levels.contains(where: { !$0.isEmpty }) {
                let t = MPIEnvironment.wallTime
                report.evaluatedPairs += try accelerator.runPieces(shardPieces(levels), options: plan.options)
                report.computeSeconds += MPIEnvironment.wallTime - t
            }
        }
        for level in template {
            let spanning = level.filter { participants($0).count > 1 }
            let local = attention.accelerator == nil ? level.filter(isLocal) : []
            // Pieces over several ranks: one sub-communicator per piece. A rank can be in two
            // pieces of a level (at most, and then adjacent ones), so split twice: pieces of
            // even and of odd index.
            var mine: [(piece: Piece, comm: Communicator)] = []
            if !spanning.isEmpty {
                for parity in 0..<2 {
                    let index = spanning.indices.first { $0 % 2 == parity && participants(spanning[$0]).contains(comm.rank) }
                    if let sub = try comm.split(color: index, key: comm.rank), let index {
                        mine.append((spanning[index], sub))
                    }
                }
                mine.sort { $0.piece.queries.lowerBound < $1.piece.queries.lowerBound }
            }
            // Exact pieces spanning ranks: gathered to their leader, one head after another.
            for h in 0..<heads {
                for (template, sub) in mine where !template.hyper {
                    var piece = template
                    piece.head = h
                    try gatherToLeader(piece, comm: sub, firstWorldRank: participants(piece).lowerBound)
                }
            }
            // HyperAttention rectangles spanning ranks, pipelined over heads (and pieces).
            var rectangles: [DistributedRectangle] = []
            // The blocks' Σ v travel (control variate) when an accelerator computes the blocks or
            // the sample parts run at the query rows' owners.
            let accelerated = attention.accelerator != nil, controlVariate = plan.options.estimator == .stratifiedControlVariate
            let communicators = try mine.filter { $0.piece.hyper }.map {
                (piece: $0.piece, comms: try PieceCommunicators($0.comm, controlSums: controlVariate &&
                    (accelerated || DistributedRectangle.maySampleAtOwners($0.piece, accelerated: false, sampleParts: attention.sampleParts))))
            }
            for h in 0..<heads {
                for (template, comms) in communicators {
                    var piece = template
                    piece.head = h
                    rectangles.append(DistributedRectangle(run: self, piece: piece, comms: comms, bufferSet: rectangles.count % ExchangeScratch.sets))
                }
            }
            let executor = self.executor, scratch = self.scratch
            try Self.runPipeline(rectangles, lookahead: attention.pipelined, report: &report) { report in
                // Pieces inside this rank's shard, all heads at once, while the first
                // rectangles' histograms and rows are on their way.
                guard !local.isEmpty else { return }
                let t = MPIEnvironment.wallTime
                let before = executor.evaluatedPairs, blocksBefore = executor.blockKernel
                executor.run((0..<heads).flatMap { h in local.map { var p = $0; p.head = h; return p } })
                report.evaluatedPairs += executor.evaluatedPairs - before
                report.computeSeconds += MPIEnvironment.wallTime - t
                // The same block kernel as the rectangles', so its speed on this rank's cores
                // counts in the dealing too: in a causal call most of a rank's blocks are in its
                // own shard, and they run before the first level spanning ranks is dealt.
                let blocks = executor.blockKernel
                scratch.recordBlockKernel(pairs: blocks.pairs - blocksBefore.pairs, seconds: blocks.seconds - blocksBefore.seconds)
            }
        }
    }

    /// This rank's shard as a job for the accelerator: `levels` over its rows.
    func shardPieces(_ levels: [[Piece]]) -> ShardPieces {
        let io = executor.io, s = shape
        let nq = io.queryRows.count, nk = io.keyRows.count
        let local = AttentionShape(batch: s.batch, queryHeads: s.queryHeads, keyHeads: s.keyHeads, queryCount: nq, keyCount: nk,
                                   headDim: s.headDim, valueDim: s.valueDim)
        let qRows = s.batch * s.queryHeads * nq, kRows = s.batch * s.keyHeads * nk
        return ShardPieces(
            shape: local, queryOrigin: io.queryRows.lowerBound, keyOrigin: io.keyRows.lowerBound, levels: levels,
            query: UnsafeBufferPointer(start: io.query, count: qRows * s.headDim),
            key: UnsafeBufferPointer(start: io.key, count: kRows * s.headDim),
            value: UnsafeBufferPointer(start: io.value, count: kRows * s.valueDim),
            output: UnsafeMutableBufferPointer(start: io.output, count: qRows * s.valueDim),
            logSumExp: UnsafeMutableBufferPointer(start: io.lse, count: qRows))
    }

    /// Runs `rectangles` as a software pipeline: while rectangle i computes, rectangle i + 1's
    /// rows travel, rectangle i + 2's histograms are gathered and rectangle i − 1's results come
    /// back. A slower rank delays the others only through the histograms of two rectangles ahead,
    /// not at every collective. Every rank orders its rectangles by (head, piece), so each
    /// piece's communicators see their operations in the same order everywhere. `meanwhile`
    /// runs once the first rectangle's rows are on their way (also when there are none).
    /// Without `lookahead`, each rectangle runs its stages alone, one after another.
    static func runPipeline(_ rectangles: [DistributedRectangle], lookahead: Bool, report: inout DistributedReport,
                            meanwhile: (inout DistributedReport) throws -> Void) throws {
        let count = rectangles.count
        if !lookahead {
            try meanwhile(&report)
            for rectangle in rectangles {
                try rectangle.announce(&report)
                try rectangle.dispatch(&report)
                try rectangle.compute(&report) {}
                try rectangle.finish(&report)
            }
            return
        }
        for i in 0..<min(2, count) { try rectangles[i].announce(&report) }
        if count > 0 { try rectangles[0].dispatch(&report) }
        try meanwhile(&report)
        for i in 0..<count {
            if i + 2 < count { try rectangles[i + 2].announce(&report) }
            if i + 1 < count { try rectangles[i + 1].dispatch(&report) }
            let inFlight = rectangles[max(0, i - 1)..<min(count, i + 3)].filter { $0 !== rectangles[i] }
            try rectangles[i].compute(&report) { for other in inFlight { try other.poll() } }
            if i >= 1 { try rectangles[i - 1].finish(&report) }
        }
        if count > 0 { try rectangles[count - 1].finish(&report) }
    }

    // MARK: - Exact pieces spanning ranks

    /// Gathers an exact piece's rows to the lowest participating rank, computes it there with
    /// the core executor, and sends each rank the (o, lse) of its own query rows.
    mutating func gatherToLeader(_ piece: Piece, comm sub: Communicator, firstWorldRank: Int) throws {
        let d = shape.headDim, dv = shape.valueDim
        let myQ = clamp(piece.queries, to: executor.io.queryRows), myK = clamp(piece.keys, to: executor.io.keyRows)
        var t = MPIEnvironment.wallTime
        var qRows: [Float] = [], kRows: [Float] = [], vRows: [Float] = []
        qRows.reserveCapacity(myQ.count * d)
        for r in myQ { qRows += UnsafeBufferPointer(start: executor.queryRow(piece.head, r), count: d) }
        for r in myK {
            kRows += UnsafeBufferPointer(start: executor.keyRow(piece.head, r), count: d)
            vRows += UnsafeBufferPointer(start: executor.valueRow(piece.head, r), count: dv)
        }
        let gq = try sub.gatherv(qRows, root: 0), gk = try sub.gatherv(kRows, root: 0), gv = try sub.gatherv(vRows, root: 0)
        report.bytesSent += 4 * (qRows.count + kRows.count + vRows.count)
        if sub.rank == 0 { report.bytesSentToSelf += 4 * (qRows.count + kRows.count + vRows.count) }
        report.exchangeSeconds += MPIEnvironment.wallTime - t
        // Leader: run the piece on the gathered rows (one head, rows named by global index).
        var results: [Float] = []
        var sendCounts = [Int](repeating: 0, count: sub.size)
        if let gq, let gk, let gv {
            report.bytesReceived += 4 * (gq.values.count + gk.values.count + gv.values.count)
            t = MPIEnvironment.wallTime
            let local = AttentionShape(batch: 1, queryHeads: 1, keyHeads: 1, queryCount: shape.queryCount, keyCount: shape.keyCount, headDim: d, valueDim: dv)
            var out = [Float](repeating: 0, count: piece.queries.count * dv)
            var lse = [Float](repeating: -.infinity, count: piece.queries.count)
            var one = piece
            one.head = 0
            one.merge = false
            let pairs = try gq.values.withUnsafeBufferPointer { q in
                try gk.values.withUnsafeBufferPointer { k in
                    try gv.values.withUnsafeBufferPointer { v in
                        try out.withUnsafeMutableBufferPointer { o in
                            try lse.withUnsafeMutableBufferPointer { l in
                                if let accelerator = attention.accelerator {
                                    let rows = AttentionShape(batch: 1, queryHeads: 1, keyHeads: 1, queryCount: piece.queries.count,
                                                              keyCount: piece.keys.count, headDim: d, valueDim: dv)
                                    return try accelerator.runPieces(ShardPieces(
                                        shape: rows, queryOrigin: piece.queries.lowerBound, keyOrigin: piece.keys.lowerBound, levels: [[one]],
                                        query: q, key: k, value: v, output: o, logSumExp: l), options: plan.options)
                                }
                                let io = AttentionIO(query: q.baseAddress!, key: k.baseAddress!, value: v.baseAddress!, output: o.baseAddress!,
                                                     lse: l.baseAddress!, queryRows: piece.queries, keyRows: piece.keys)
                                let ex = PieceExecutor(plan: AttentionPlan(shape: local, options: plan.options), io: io,
                                                       threads: executor.threads, meter: ProgressMeter(total: 1, callback: nil))
                                ex.run([one])
                                return ex.evaluatedPairs
                            }
                        }
                    }
                }
            }
            report.evaluatedPairs += pairs
            report.computeSeconds += MPIEnvironment.wallTime - t
            // Rows go back to their owners in token order: owner c gets its slice of the queries.
            results.reserveCapacity(piece.queries.count * (dv + 1))
            for c in 0..<sub.size {
                let rows = clamp(piece.queries, to: DistributedAttention.tokenRange(rank: firstWorldRank + c, ranks: comm.size, count: shape.queryCount))
                for r in rows {
                    let i = r - piece.queries.lowerBound
                    results += out[i * dv ..< (i + 1) * dv]
                    results.append(lse[i])
                }
                sendCounts[c] = rows.count * (dv + 1)
            }
        }
        t = MPIEnvironment.wallTime
        let back = try sub.allToAllv(results, sendCounts: sendCounts)
        report.bytesSent += 4 * results.count + 8 * sub.size
        report.bytesSentToSelf += 4 * sendCounts[sub.rank]
        report.bytesReceived += 4 * back.values.count + 8 * sub.size
        back.values.withUnsafeBufferPointer { b in
            for (i, r) in myQ.enumerated() {
                let row = b.baseAddress! + i * (dv + 1)
                mergePartial(into: executor.outputRow(piece.head, r), logSumExp: executor.lseEntry(piece.head, r),
                             partial: row, partialLogSumExp: row[dv], count: dv, merge: piece.merge)
            }
        }
        report.returnSeconds += MPIEnvironment.wallTime - t
    }
}

/// The part of `rows` inside `bounds`.
func clamp(_ rows: Range<Int>, to bounds: Range<Int>) -> Range<Int> {
    let lo = max(rows.lowerBound, bounds.lowerBound), hi = min(rows.upperBound, bounds.upperBound)
    return lo < hi ? lo..<hi : lo..<lo
}

/// Growable buffers for the row exchanges of distributed calls, reused by every rectangle
/// (every head and level, and the next call): a fresh buffer's pages are zeroed by the kernel
/// at first touch, which cost more than the copies themselves. Buffers of 2 MiB or more are offered to
/// transparent huge pages. Contents are not initialised.
final class ExchangeScratch {
    enum Slot: Int, CaseIterable {
        case sendQ, sendKV, receivedQ, receivedKV, back, returned, homePartials, blockSums, sampleStates
    }
    /// Buffer sets: consecutive rectangles of the pipeline alternate between them.
    static let sets = 2

    private var buffers: [Tensor?] = Array(repeating: nil, count: Slot.allCases.count * ExchangeScratch.sets)
    /// Block-kernel work and time of this rank (for `.measuredSpeed`), each earlier rectangle's
    /// share multiplied by `speedHistoryDecay` at every later one: below 1, a core that turns slow
    /// or fast during a call (other tenants of a shared machine) is seen sooner.
    private var kernelPairs = 0.0
    private var kernelSeconds = 0.0
    /// The weight of the history at each new measurement (1: every rectangle counts the same).
    let speedHistoryDecay: Double
    init(speedHistoryDecay: Double) {
        self.speedHistoryDecay = speedHistoryDecay
    }

    /// Adds one measurement to the history. One with no pairs (a rank with no blocks in a
    /// rectangle, or whose sample parts all ran elsewhere) says nothing of its speed and is
    /// dropped, so that it does not decay the history either.
    func recordBlockKernel(pairs: Int, seconds: Double) {
        guard pairs > 0 else { return }
        kernelPairs = speedHistoryDecay * kernelPairs + Double(pairs)
        kernelSeconds = speedHistoryDecay * kernelSeconds + seconds
    }

    /// This rank's weight in the block dealing: its measured speed in query–key pairs per
    /// second, or a constant (equal for every rank) before any measurement or for `.equalWork`.
    func speedWeight(balancing: BlockBalancing) -> Int64 {
        guard balancing == .measuredSpeed, measuresSpeed else { return 1 }
        return max(2, Int64(kernelPairs / kernelSeconds))
    }

    /// Whether the history holds enough block-kernel time (5 ms) to say this rank's speed.
    var measuresSpeed: Bool { kernelSeconds > ExchangeScratch.minimumMeasuredSeconds && kernelPairs > 0 }
    static let minimumMeasuredSeconds = 0.005

    /// The last call's output and lse tensors, reused by the next call when the caller has
    /// dropped them.
    let results = KeptResults()

    /// The buffer of `slot` in buffer set `set`, with room for at least `count` floats (valid
    /// until the next call for the same slot and set with a larger count). Tensor storage:
    /// 2 MiB-aligned and offered to huge pages when large.
    func buffer(_ slot: Slot, set: Int, count: Int) -> UnsafeMutableBufferPointer<Float> {
        let i = set * Slot.allCases.count + slot.rawValue
        if buffers[i].map({ $0.count < count }) ?? true {
            buffers[i] = Tensor(shape: [max(count, 1)]) { _ in }
        }
        return UnsafeMutableBufferPointer(start: buffers[i]!.unsafeStoragePointer, count: count)
    }
}

/// The last call's output and lse tensors of a distributed attention instance
/// (`DistributedAttention`, `RingAttention`), for the next call to write into. A call takes them
/// (so that it holds the only reference if the caller has dropped the result it returned them
/// in) and writes into them when nobody else holds them: fresh memory is faulted in page by
/// page at first touch, measured 7.11 s against 5.25 s per call on a 2-core VM (n = 2^18,
/// h = 8, one rank; docs/mpi.md).
/// The output's contents are not initialised (every row is written by its first piece); the lse
/// is set to −inf, what the merges read in a row no piece has reached. One call at a time.
final class KeptResults {
    private var keptOutput: Tensor?, keptLogSumExp: Tensor?

    /// A tensor of `shape` for a call's output: the last call's if it has that shape and no
    /// other holder, else a new one (contents not initialised).
    func takeOutput(shape: [Int]) -> Tensor { take(&keptOutput, shape: shape) }
    /// The same for the lse, every entry set to −inf.
    func takeLogSumExp(shape: [Int]) -> Tensor {
        var lse = take(&keptLogSumExp, shape: shape)
        lse.withUnsafeMutableBufferPointer { $0.update(repeating: -.infinity) }
        return lse
    }
    private func take(_ kept: inout Tensor?, shape: [Int]) -> Tensor {
        if var tensor = kept {
            kept = nil
            if tensor.shape == shape && tensor.hasUniqueStorage() { return tensor }
        }
        return Tensor(shape: shape) { _ in }
    }
    /// Keeps a call's tensors for the next call (they are reused only if the caller drops them).
    func keep(output: Tensor, logSumExp: Tensor) {
        keptOutput = output
        keptLogSumExp = logSumExp
    }
}
