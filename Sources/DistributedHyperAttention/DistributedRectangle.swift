import HyperAttention
import MPI

/// One non-causal HyperAttention piece (a whole non-causal problem, or a rectangle of the causal
/// recursion) over the ranks that own its rows (DESIGN.md §3, the rectangle primitive):
///
/// 1. each rank hashes its own query and key rows of the piece (the query head's hyperplanes;
///    `RowBuckets` keeps them for the other levels);
/// 2. global stable counting sort: local bucket histograms, allgathered (which gives what an
///    exclusive scan over lower ranks and an allreduce of totals would), give every row its global
///    sorted position, with no data moved — the same order as the single-process stable sort,
///    since lower ranks hold lower tokens;
/// 3. blocks are dealt whole, query block j with key block j: as many to rank c as ⌊c·nb/P⌋
///    gives (`.equalWork`: blocks differ in size by at most one row), or in proportion to the
///    ranks' measured block-kernel speed (`.measuredSpeed`, the default: cores of one machine can
///    differ by 30% under load); which blocks go where is `BlockPlacement`: by default each block
///    to a rank that already holds many of its rows (within a bucket the sorted order is token
///    order, so at large n most of a block's rows come from one rank), else contiguous runs;
///    one alltoallv moves Q rows, one moves K|V rows, each sent to a rank in ascending sorted
///    position, so the receiver knows every row's position from the histograms and no ids travel;
///    rows of a rank's own blocks that it holds are not sent (nor copied): the kernel reads them
///    in the shard;
/// 4. the node's samples (positions in sorted-key order) are contributed by the ranks that own
///    those rows and allgathered, so every rank has all m (k, v) rows;
/// 5. each rank runs the core's block kernel on its blocks — the same gathered rows in the same
///    order as in one process, so the same bits: both parts (the block's keys, then the samples,
///    merged), or with `samplesAtOwners` (`SamplePartPlacement.atOwners`, or `.bySpeeds` with even
///    speeds; causal rectangles) the block part alone;
/// 6. a reverse alltoallv returns (o, lse) to the rows' owners, who lse-merge them; with
///    `samplesAtOwners` an allgatherv brings every block's Σ v (for the control variate), and each
///    owner computes its rows' sample parts and merges them into the returned block parts first.
/// One rectangle on one rank, split into the stages that `DistributedRun` pipelines over the heads
/// and pieces of a level, so that one rectangle's rows travel while another's blocks compute:
///
/// - `announce`: hash this rank's rows; start the allgather of the histograms (step 2);
/// - `dispatch`: once the histograms are in, deal the blocks, pack this rank's rows in sorted
///   order and start their alltoallvs (step 3) and the samples' allgather (step 4);
/// - `compute`: once this rank's rows are in, the block kernel (step 5), polling the other
///   rectangles' transfers between chunks of blocks; start the results' alltoallv (step 6);
/// - `finish`: once the results are back, merge them into this rank's rows.
///
/// Every collective is non-blocking and each kind has its own communicator
/// (`PieceCommunicators`), so a rank in two pieces of a level can interleave them with any
/// lookahead while each communicator still sees its operations in head order on every rank.
final class DistributedRectangle {
    let piece: Piece
    let comms: PieceCommunicators
    /// Which of the two exchange buffer sets this rectangle uses (consecutive rectangles of a
    /// rank alternate).
    let bufferSet: Int
    private let executor: PieceExecutor
    private let options: AttentionOptions
    private let shape: AttentionShape
    private let scratch: ExchangeScratch
    private let balancing: BlockBalancing
    private let placement: BlockPlacement
    private let returnsLogSumExp: Bool
    private let accelerator: PieceAccelerator?

    private var comm: Communicator { comms.histograms }
    private var d: Int { shape.headDim }
    private var dv: Int { shape.valueDim }
    private var nq: Int { piece.queries.count }
    private var nk: Int { piece.keys.count }
    private var controlVariate: Bool { options.estimator == .stratifiedControlVariate }
    /// This rank's query and key rows of the piece.
    private let myQ: Range<Int>, myK: Range<Int>
    private let node: UInt64
    /// Whether each query row's sample part runs on the rank that owns the row (and only the block
    /// part where the block is dealt), rather than both parts where the block is. Chosen for the
    /// causal recursion's rectangles, whose query rows and key rows are on different ranks: the
    /// query side then computes half of the rectangle's work without sending a row, so the key
    /// side computes the block parts of all of its key rows and sends back (o, lse) instead of
    /// sending K|V rows. Either way the arithmetic is the same (`TileWorkspace.runBlock` is the
    /// two parts and their merge), so the output bits do not depend on it. Not with an
    /// accelerator, whose block kernel fuses the two parts. Set in `dispatch` from the ranks'
    /// speeds (`SamplePartPlacement.samplesAtOwners(speedWeights:sampleWork:totalBlockWork:)`), for the rectangles that may.
    private var samplesAtOwners = false
    private let sampleParts: SamplePartPlacement
    /// Whether this rectangle may run its sample parts at the owners (`maySampleAtOwners`).
    private let mayRunSamplesAtOwners: Bool

    // announce
    private var queryBuckets: [UInt16] = [], keyBuckets: [UInt16] = []
    private var histogramLength = 0
    private var histogramRequest: GatherRequest<Int64>?
    // dispatch
    private var buckets = 0
    private var partition = BlockPartition(keyCount: 0, blockSize: 1)
    /// This rank's blocks, ascending, and where each one's query and key rows start among the
    /// rows this rank receives (its blocks' rows side by side, in sorted order).
    private var myBlocks: [Int] = []
    /// The rank computing each block of the rectangle.
    private var blockOwner: [Int] = []
    private var querySlotBase: [Int] = [], keySlotBase: [Int] = []
    /// This rank's query rows (local indices) in the order they were sent: by destination rank,
    /// ascending sorted position within each. Their results come back in this order.
    private var queryOrder: [Int] = []
    private var querySendCounts: [Int] = [], queryReceiveCounts: [Int] = []
    /// For each arriving query / key row, in arrival order, its slot among this rank's blocks' rows.
    private var arrivingQ: [Int] = [], arrivingK: [Int] = []
    /// This rank's rows of its own blocks (not sent): where they are in `queryOrder`, each one's
    /// slot (in that order), and for keys each one's slot and local token.
    private var homeQueries = 0..<0
    private var homeQuerySlots: [Int] = [], homeKeySlots: [Int] = [], homeKeyRows: [Int] = []
    private var receivedQ = UnsafeMutableBufferPointer<Float>(start: nil, count: 0)
    private var receivedKV = UnsafeMutableBufferPointer<Float>(start: nil, count: 0)
    private var exchangeRequests: [Request] = []
    private var samples: SampleSet?
    private var sampleRequest: GatherRequest<Float>?
    private var nodeValueSum: [Double] = []
    /// With `samplesAtOwners`: this rank's query rows of the piece in sorted order (local index
    /// and sorted position), and where each one is in `queryOrder`.
    private var sortedQueries: [(row: Int, position: Int, sent: Int)] = []
    private var homePartials = UnsafeMutableBufferPointer<Float>(start: nil, count: 0)
    /// With `samplesAtOwners`: the runs of this rank's sorted query rows by block (`blockRuns`),
    /// and the first whose sample parts `computeSampleParts` has not run yet.
    private var sampleRuns: [(block: Int, start: Int, count: Int)] = []
    private var nextSampleRun = 0
    private var sampleRows: SampleRows?
    private var blockSumRequest: GatherRequest<Float>?
    // compute
    private var width = 0
    private var returned = UnsafeMutableBufferPointer<Float>(start: nil, count: 0)
    private var returnRequest: Request?

    init(run: DistributedRun, piece: Piece, comms: PieceCommunicators, bufferSet: Int) {
        self.piece = piece
        self.comms = comms
        self.bufferSet = bufferSet
        executor = run.executor
        options = run.plan.options
        shape = run.shape
        scratch = run.scratch
        balancing = run.attention.balancing
        placement = run.attention.placement
        returnsLogSumExp = run.returnsLogSumExp
        accelerator = run.attention.accelerator
        myQ = clamp(piece.queries, to: executor.io.queryRows)
        myK = clamp(piece.keys, to: executor.io.keyRows)
        node = CounterRandom.nodeID(queries: piece.queries, keys: piece.keys)
        sampleParts = run.attention.sampleParts
        mayRunSamplesAtOwners = Self.maySampleAtOwners(piece, accelerated: accelerator != nil, sampleParts: sampleParts)
    }

    /// Whether a piece's sample parts may run at the query rows' owners (`samplesAtOwners`): asked
    /// for (`SamplePartPlacement.atOwners`, or `.bySpeeds` when the speeds are even), and only for
    /// the causal recursion's rectangles (keys before queries), unless an accelerator fuses the
    /// parts.
    static func maySampleAtOwners(_ piece: Piece, accelerated: Bool, sampleParts: SamplePartPlacement) -> Bool {
        sampleParts != .withBlocks && !accelerated && piece.keys.upperBound <= piece.queries.lowerBound
    }

    /// Tests every transfer in flight without blocking, so that it progresses (MPI moves data
    /// only inside MPI calls).
    func poll() throws {
        if let histogramRequest { try histogramRequest.test() }
        for request in exchangeRequests { try request.test() }
        if let sampleRequest { try sampleRequest.test() }
        if let returnRequest { try returnRequest.test() }
        if let blockSumRequest { try blockSumRequest.test() }
    }

    // MARK: 1–2. Hash, and start the histograms' allgather

    func announce(_ report: inout DistributedReport) throws {
        let t = MPIEnvironment.wallTime
        let h = piece.head, ex = executor
        // This rank's rows' buckets (hashed once per call: the hyperplanes are the query head's,
        // whatever the level).
        let table = ex.rowBuckets
        table.prepare([.init(head: h, keys: false, rows: myQ), .init(head: h, keys: true, rows: myK)], threads: ex.threads) {
            head, keys, row in keys ? ex.keyRow(head, row) : ex.queryRow(head, row)
        }
        queryBuckets = Array(UnsafeBufferPointer(start: table.buckets(head: h, keys: false, from: myQ.lowerBound), count: myQ.count))
        keyBuckets = Array(UnsafeBufferPointer(start: table.buckets(head: h, keys: true, from: myK.lowerBound), count: myK.count))
        buckets = 1 << options.lshBits
        // [query counts | key counts | this rank's speed weight | its Σ v over its keys (control
        // variate; float64 bit patterns, summed in rank order by every rank)]. The allgather
        // gives what MPI_Exscan (counts of lower ranks) and MPI_Allreduce (totals) would, and
        // also tells each receiver which sorted positions every sender holds, so rows travel
        // without ids.
        var histogram = [Int64](repeating: 0, count: 2 * buckets + 1 + (controlVariate ? dv : 0))
        for b in queryBuckets { histogram[Int(b)] += 1 }
        for b in keyBuckets { histogram[buckets + Int(b)] += 1 }
        histogram[2 * buckets] = scratch.speedWeight(balancing: balancing)
        if controlVariate {
            var sum = [Double](repeating: 0, count: dv)
            if !myK.isEmpty { addRows(ex.valueRow(h, myK.lowerBound), count: myK.count, width: dv, into: &sum) }
            for c in 0..<dv { histogram[2 * buckets + 1 + c] = Int64(bitPattern: sum[c].bitPattern) }
        }
        histogramLength = histogram.count
        report.hashSeconds += MPIEnvironment.wallTime - t
        histogramRequest = try comm.immediateAllGather(histogram)
        report.bytesSent += 8 * histogram.count
        report.bytesReceived += 8 * histogram.count * comm.size
    }

    // MARK: 2–4. Global sorted positions, dealing, rows and samples on their way

    func dispatch(_ report: inout DistributedReport) throws {
        var t = MPIEnvironment.wallTime
        let all = try histogramRequest!.waitForValues()  // [rank][stride]
        histogramRequest = nil
        report.waitSeconds += MPIEnvironment.wallTime - t
        let ranks = comm.size, stride = histogramLength, buckets = self.buckets, h = piece.head, ex = executor
        let rank = comm.rank
        /// First position of rank r's rows of bucket b (side offset 0: queries, `buckets`: keys).
        func layout(offset: Int) -> [[Int]] {
            var rankStart = [[Int]](repeating: [Int](repeating: 0, count: buckets), count: ranks)
            var position = 0
            for b in 0..<buckets {
                for r in 0..<ranks {
                    rankStart[r][b] = position
                    position += Int(all[r * stride + offset + b])
                }
            }
            return rankStart
        }
        let queryLayout = layout(offset: 0), keyLayout = layout(offset: buckets)
        /// This rank's rows in ascending sorted position (a stable counting sort by bucket), and
        /// each one's position.
        func sortedRows(_ rowBuckets: [UInt16], _ rankStart: [[Int]]) -> (order: [Int], positions: [Int]) {
            var order = [Int32](repeating: 0, count: rowBuckets.count)
            rowBuckets.withUnsafeBufferPointer { b in
                order.withUnsafeMutableBufferPointer { o in
                    SortLSH.sortedOrder(buckets: b.baseAddress!, count: b.count, bucketCount: buckets, order: o.baseAddress!)
                }
            }
            var next = rankStart[rank]
            let positions = order.map { i -> Int in
                let b = Int(rowBuckets[Int(i)])
                defer { next[b] += 1 }
                return next[b]
            }
            return (order.map(Int.init), positions)
        }
        let mineQ = sortedRows(queryBuckets, queryLayout), mineK = sortedRows(keyBuckets, keyLayout)
        queryBuckets = []
        keyBuckets = []

        // 3. Deal blocks to ranks and move the rows.
        partition = BlockPartition(keyCount: nk, blockSize: options.blockSize)
        let partition = self.partition, nq = self.nq, nk = self.nk
        let random = CounterRandom(seed: options.seed, head: h, node: node, purpose: .samplePositions)
        let samples = SampleSet(estimator: options.estimator, keyCount: nk, count: options.samples, random: random)
        self.samples = samples
        let weights = (0..<ranks).map { all[$0 * stride + 2 * buckets] }
        // At the owners, each rank's query rows bring their sample parts (m pairs a row); the
        // blocks (their block parts, about (nq/nb)·(nk/nb) pairs each) make up the rest of its share.
        let queryRows = (0..<ranks).map { r in (0..<buckets).reduce(0) { $0 + Int(all[r * stride + $1]) } }
        let sampleWork = queryRows.map { Double($0 * samples.positions.count) }
        let blockWork = Double(nq) * Double(nk) / Double(max(partition.blocks * partition.blocks, 1))
        samplesAtOwners = mayRunSamplesAtOwners
            && sampleParts.samplesAtOwners(speedWeights: weights, sampleWork: sampleWork, totalBlockWork: Double(partition.blocks) * blockWork)
        report.spanningRectangles += 1
        if samplesAtOwners { report.rectanglesWithSamplesAtOwners += 1 }
        let quota: [Int]
        if samplesAtOwners {
            quota = BlockDealing.firstBlocks(blocks: partition.blocks, weights: weights, fixedWork: sampleWork, blockWork: blockWork)
        } else {
            quota = BlockDealing.firstBlocks(blocks: partition.blocks, weights: weights)
        }
        // A query row that moves costs its d floats out and its (o[, lse]) back; a key row d + d_v.
        // A block part always goes back with its lse: its owner merges the sample part into it.
        width = piece.merge || returnsLogSumExp || samplesAtOwners ? dv + 1 : dv
        let owner: [Int]
        switch placement {
        case .contiguous:
            owner = (0..<partition.blocks).map { BlockDealing.owner(ofBlock: $0, firstBlocks: quota) }
        case .rowLocality:
            /// Every rank's rows of each bucket, in sorted order: (rank, first position, count).
            func runs(_ rankStart: [[Int]], offset: Int) -> [BlockDealing.RowRun] {
                var runs: [BlockDealing.RowRun] = []
                for b in 0..<buckets {
                    for r in 0..<ranks where all[r * stride + offset + b] > 0 {
                        runs.append(.init(rank: r, start: rankStart[r][b], count: Int(all[r * stride + offset + b])))
                    }
                }
                return runs
            }
            var affinity = BlockAffinity(blocks: partition.blocks)
            affinity.add(runs(queryLayout, offset: 0), partition: partition, length: nq, bytesPerRow: 4 * (d + width), queries: true)
            affinity.add(runs(keyLayout, offset: buckets), partition: partition, length: nk, bytesPerRow: 4 * (d + dv), queries: false)
            owner = BlockDealing.assign(quota: quota, affinity: affinity)
        }
        myBlocks = (0..<partition.blocks).filter { owner[$0] == rank }
        blockOwner = (accelerator != nil || samplesAtOwners) && controlVariate ? owner : []
        /// Where each of this rank's blocks starts among its received rows of one side, and the
        /// maximal runs of consecutive sorted positions they cover, with their first slot.
        func slots(length: Int) -> (base: [Int], spans: [(positions: Range<Int>, slot: Int)]) {
            var base: [Int] = [], spans: [(positions: Range<Int>, slot: Int)] = []
            var slot = 0
            for j in myBlocks {
                let r = partition.range(j, length: length)
                base.append(slot)
                if let last = spans.last, last.positions.upperBound == r.lowerBound {
                    spans[spans.count - 1].positions = last.positions.lowerBound..<r.upperBound
                } else if !r.isEmpty {
                    spans.append((r, slot))
                }
                slot += r.count
            }
            return (base, spans)
        }
        let querySlots = slots(length: nq), keySlots = slots(length: nk)
        /// This rank's part of a list laid out rank by rank with `counts` rows from (or for) each.
        func home(_ counts: [Int]) -> Range<Int> {
            let first = counts[..<rank].reduce(0, +)
            return first..<(first + counts[rank])
        }
        querySlotBase = querySlots.base
        keySlotBase = keySlots.base
        /// This rank's rows grouped by destination rank (a stable counting sort of their sorted
        /// positions, which ascend): the send order, and how many go to each rank.
        func sendOrder(_ positions: [Int], length: Int) -> (order: [Int], counts: [Int]) {
            let destination = positions.map { owner[partition.block(containing: $0, length: length)] }
            var counts = [Int](repeating: 0, count: ranks)
            for r in destination { counts[r] += 1 }
            var next = [Int](repeating: 0, count: ranks)
            for r in 1..<max(ranks, 1) { next[r] = next[r - 1] + counts[r - 1] }
            var order = [Int](repeating: 0, count: positions.count)
            for (k, r) in destination.enumerated() {
                order[next[r]] = k
                next[r] += 1
            }
            return (order, counts)
        }
        /// The rows each rank sends here, rank by rank, each rank's in ascending sorted position
        /// (the order in which they arrive), as slots among this rank's blocks' rows; and how
        /// many come from each rank.
        func arrivals(_ rankStart: [[Int]], offset: Int, spans: [(positions: Range<Int>, slot: Int)]) -> (slots: [Int], perRank: [Int]) {
            var slots: [Int] = []
            var perRank = [Int](repeating: 0, count: ranks)
            guard !spans.isEmpty else { return (slots, perRank) }
            for r in 0..<ranks {
                for b in 0..<buckets {
                    let first = rankStart[r][b], end = first + Int(all[r * stride + offset + b])
                    guard end > first else { continue }
                    // The first span ending after `first`.
                    var lo = 0, hi = spans.count
                    while lo < hi {
                        let mid = (lo + hi) / 2
                        if spans[mid].positions.upperBound <= first { lo = mid + 1 } else { hi = mid }
                    }
                    var k = lo
                    while k < spans.count, spans[k].positions.lowerBound < end {
                        let span = spans[k]
                        let a = max(first, span.positions.lowerBound), z = min(end, span.positions.upperBound)
                        if a < z {
                            slots += (span.slot + a - span.positions.lowerBound)..<(span.slot + z - span.positions.lowerBound)
                            perRank[r] += z - a
                        }
                        k += 1
                    }
                }
            }
            return (slots, perRank)
        }

        // Q rows (d floats each) and K|V rows (d + d_v floats each) for other ranks, grouped by
        // destination, through buffers reused by every rectangle of the call (fresh pages would
        // be zeroed by the kernel on first touch, every time). Rows this rank keeps (its blocks'
        // rows it holds itself) are not copied or sent: the kernel reads them in the shard and
        // merges their results straight into the output.
        let sentQ = sendOrder(mineQ.positions, length: nq), sentK = sendOrder(mineK.positions, length: nk)
        queryOrder = sentQ.order.map { mineQ.order[$0] }
        let homeQ = home(sentQ.counts), homeK = home(sentK.counts)
        homeQueries = homeQ
        let sendQ = scratch.buffer(.sendQ, set: bufferSet, count: (myQ.count - homeQ.count) * d)
        for (k, i) in queryOrder.enumerated() where !homeQ.contains(k) {
            copyRow(from: ex.queryRow(h, myQ.lowerBound + i), to: sendQ.baseAddress! + packedIndex(k, without: homeQ) * d, count: d)
        }
        let sendKV = scratch.buffer(.sendKV, set: bufferSet, count: (myK.count - homeK.count) * (d + dv))
        for (k, s) in sentK.order.enumerated() where !homeK.contains(k) {
            let i = mineK.order[s]
            let row = sendKV.baseAddress! + packedIndex(k, without: homeK) * (d + dv)
            copyRow(from: ex.keyRow(h, myK.lowerBound + i), to: row, count: d)
            copyRow(from: ex.valueRow(h, myK.lowerBound + i), to: row + d, count: dv)
        }
        // Where the rows go among this rank's blocks' rows: every rank knows every rank's
        // positions from the counts. This rank's own rows arrive (in the rank-by-rank order) in
        // the same order as it listed them for itself: ascending sorted position.
        let allQ = arrivals(queryLayout, offset: 0, spans: querySlots.spans)
        let allK = arrivals(keyLayout, offset: buckets, spans: keySlots.spans)
        let ownQ = home(allQ.perRank), ownK = home(allK.perRank)
        homeQuerySlots = Array(allQ.slots[ownQ])
        homeKeySlots = Array(allK.slots[ownK])
        homeKeyRows = sentK.order[homeK].map { myK.lowerBound + mineK.order[$0] }
        arrivingQ = Array(allQ.slots[..<ownQ.lowerBound]) + allQ.slots[ownQ.upperBound...]
        arrivingK = Array(allK.slots[..<ownK.lowerBound]) + allK.slots[ownK.upperBound...]
        if samplesAtOwners {
            var sent = [Int](repeating: 0, count: mineQ.order.count)
            for (k, s) in sentQ.order.enumerated() { sent[s] = k }
            sortedQueries = (0..<mineQ.order.count).map { (mineQ.order[$0], mineQ.positions[$0], sent[$0]) }
            sampleRuns = blockRuns()
            nextSampleRun = 0
        }
        querySendCounts = sentQ.counts
        queryReceiveCounts = allQ.perRank
        querySendCounts[rank] = 0
        queryReceiveCounts[rank] = 0
        var keySendCounts = sentK.counts, keyReceiveCounts = allK.perRank
        keySendCounts[rank] = 0
        keyReceiveCounts[rank] = 0
        receivedQ = scratch.buffer(.receivedQ, set: bufferSet, count: arrivingQ.count * d)
        receivedKV = scratch.buffer(.receivedKV, set: bufferSet, count: arrivingK.count * (d + dv))
        exchangeRequests = [
            try comms.exchange.immediateAllToAllv(
                borrowing: UnsafeBufferPointer(sendQ), partition: BufferPartition(counts: querySendCounts.map { $0 * d }),
                into: receivedQ, partition: BufferPartition(counts: queryReceiveCounts.map { $0 * d })),
            try comms.exchange.immediateAllToAllv(
                borrowing: UnsafeBufferPointer(sendKV), partition: BufferPartition(counts: keySendCounts.map { $0 * (d + dv) }),
                into: receivedKV, partition: BufferPartition(counts: keyReceiveCounts.map { $0 * (d + dv) })),
        ]
        report.bytesSent += 4 * (sendQ.count + sendKV.count)
        report.bytesReceived += 4 * (receivedQ.count + receivedKV.count)
        report.exchangeSeconds += MPIEnvironment.wallTime - t

        // 4. Samples: the owner of each sampled sorted key position contributes (index, k, v);
        //    every rank knows who owns which position, hence every rank's count.
        t = MPIEnvironment.wallTime
        var sampleCounts = [Int](repeating: 0, count: ranks)
        var contributed = [Float]()
        for (i, p32) in samples.positions.enumerated() {
            let p = Int(p32)
            // The bucket holding position p (the last bucket starting at or before it), then its rank.
            var lo = 0, hi = buckets - 1
            while lo < hi {
                let mid = (lo + hi + 1) / 2
                if keyLayout[0][mid] <= p { lo = mid } else { hi = mid - 1 }
            }
            var owner = ranks - 1
            while owner > 0 && keyLayout[owner][lo] > p { owner -= 1 }
            sampleCounts[owner] += 1 + d + dv
            if owner == rank {
                var a = 0, z = mineK.positions.count - 1
                while a < z {
                    let mid = (a + z) / 2
                    if mineK.positions[mid] < p { a = mid + 1 } else { z = mid }
                }
                precondition(mineK.positions[a] == p, "sample position \(p) not held by its owner rank \(rank)")
                let r = myK.lowerBound + mineK.order[a]
                contributed.append(Float(bitPattern: UInt32(i)))
                contributed += UnsafeBufferPointer(start: ex.keyRow(h, r), count: d)
                contributed += UnsafeBufferPointer(start: ex.valueRow(h, r), count: dv)
            }
        }
        sampleRequest = try comms.samples.immediateAllGatherv(contributed, counts: sampleCounts)
        report.bytesSent += 4 * contributed.count
        report.bytesReceived += 4 * sampleCounts.reduce(0, +)
        if controlVariate {
            // Σ v over the node's keys: the ranks' partial sums, added in rank order.
            nodeValueSum = [Double](repeating: 0, count: dv)
            for r in 0..<ranks {
                for c in 0..<dv { nodeValueSum[c] += Double(bitPattern: UInt64(bitPattern: all[r * stride + 2 * buckets + 1 + c])) }
            }
        }
        report.sampleGatherSeconds += MPIEnvironment.wallTime - t
    }

    // MARK: 5. Block kernel

    /// - Parameter pollOthers: called between chunks of blocks, to progress other rectangles'
    ///   transfers.
    func compute(_ report: inout DistributedReport, pollOthers: () throws -> Void) throws {
        let d = self.d, dv = self.dv
        var t = MPIEnvironment.wallTime
        let gathered = try sampleRequest!.waitForValues()
        sampleRequest = nil
        report.waitSeconds += MPIEnvironment.wallTime - t
        let samples = self.samples!
        let sampleRows = SampleRows(count: samples.positions.count, headDim: d, valueDim: dv)
        gathered.withUnsafeBufferPointer { r in
            for j in 0..<(r.count / (d + dv + 1)) {
                let row = r.baseAddress! + j * (d + dv + 1)
                sampleRows.set(Int(row[0].bitPattern), key: row + 1, value: row + 1 + d)
            }
        }
        self.sampleRows = sampleRows
        report.sampleGatherSeconds += MPIEnvironment.wallTime - t
        // With the sample parts at the owners, this rank's own rows' sample parts need no row
        // from another rank: they run while the rows of this rank's blocks are still arriving
        // (this rectangle's exchange tested between chunks), the rest after the blocks.
        if samplesAtOwners {
            let exchange = exchangeRequests
            try computeSampleParts(&report, pollOthers: pollOthers) { try exchange.allSatisfy { try $0.test() != nil } }
        }
        t = MPIEnvironment.wallTime
        try Request.waitAll(exchangeRequests)
        exchangeRequests = []
        report.exchangeSeconds += MPIEnvironment.wallTime - t
        report.waitSeconds += MPIEnvironment.wallTime - t

        // Where the row of each slot (this rank's blocks' rows in sorted order) is: where it
        // arrived, or in this rank's shard. The kernel reads rows there, so they are not copied
        // again into sorted order, and writes each query's (o[, lse]) where the results go back
        // from (the arrival order), or, for this rank's own rows, merges it into the output as
        // `finish` would (a level's pieces have disjoint query rows, and levels run one after
        // another, so each row's merges keep the single-process order).
        t = MPIEnvironment.wallTime
        let h = piece.head, ex = executor
        let width = self.width, withLse = width == dv + 1
        let back = scratch.buffer(.back, set: bufferSet, count: arrivingQ.count * width)
        let rows = BlockRows(
            querySlots: arrivingQ.count + homeQuerySlots.count, keySlots: arrivingK.count + homeKeySlots.count)
        for (i, slot) in arrivingQ.enumerated() {
            rows.query[slot] = UnsafePointer(receivedQ.baseAddress! + i * d)
            rows.result[slot] = back.baseAddress! + i * width
            rows.logSumExp[slot] = nil
        }
        // With the sample parts at the owners, this rank's own rows' block parts wait for their
        // sample parts in `homePartials` (in `queryOrder`), like the rows that go back.
        homePartials = samplesAtOwners ? scratch.buffer(.homePartials, set: bufferSet, count: homeQuerySlots.count * width) : .init(start: nil, count: 0)
        for (k, slot) in homeQuerySlots.enumerated() {
            let token = myQ.lowerBound + queryOrder[homeQueries.lowerBound + k]
            rows.query[slot] = ex.queryRow(h, token)
            if samplesAtOwners {
                rows.result[slot] = homePartials.baseAddress! + k * width
                rows.logSumExp[slot] = nil
            } else {
                rows.result[slot] = ex.outputRow(h, token)
                rows.logSumExp[slot] = ex.lseEntry(h, token)
            }
        }
        for (i, slot) in arrivingK.enumerated() {
            rows.key[slot] = UnsafePointer(receivedKV.baseAddress! + i * (d + dv))
            rows.value[slot] = UnsafePointer(receivedKV.baseAddress! + i * (d + dv) + d)
        }
        for (k, slot) in homeKeySlots.enumerated() {
            rows.key[slot] = ex.keyRow(h, homeKeyRows[k])
            rows.value[slot] = ex.valueRow(h, homeKeyRows[k])
        }
        let querySlotCount = arrivingQ.count + homeQuerySlots.count, keySlotCount = arrivingK.count + homeKeySlots.count
        homeQuerySlots = []
        homeKeySlots = []
        homeKeyRows = []

        // The block kernel on this rank's blocks (in parallel over blocks). A piece that does
        // not merge sends o alone unless the caller asked for the lse.
        let nq = self.nq, nk = self.nk
        let querySlotBase = self.querySlotBase, keySlotBase = self.keySlotBase, partition = self.partition
        let controlVariate = self.controlVariate, nodeValueSum = self.nodeValueSum, merge = piece.merge
        let blockList = myBlocks
        let pairCounter = PairCounter(count: blockList.count)
        let scaleLog2 = ex.scaleLog2
        /// One query's (o, lse) to where it goes: merged into this rank's output row, or into the
        /// row that goes back to its owner.
        @Sendable func emit(_ slot: Int, _ o: UnsafePointer<Float>, _ l: Float) {
            let dst = rows.result[slot]
            if let lse = rows.logSumExp[slot] {
                finishRow(dst, lse, partial: o, partialLogSumExp: l, valueDim: dv, withLse: withLse, merge: merge)
            } else {
                dst.update(from: o, count: dv)
                if withLse { dst[dv] = l }
            }
        }
        var kernelSeconds = 0.0, pollSeconds = 0.0
        if let accelerator {
            // The whole batch on the device at once (other transfers progress inside the MPI
            // calls of the control-variate exchange, and after).
            let k0 = MPIEnvironment.wallTime
            var blocks: [BlockBatch.Block] = []
            blocks.reserveCapacity(blockList.count)
            for (b, j) in blockList.enumerated() {
                let qr = partition.range(j, length: nq), kr = partition.range(j, length: nk)
                blocks.append(.init(index: j, querySlots: querySlotBase[b]..<(querySlotBase[b] + qr.count),
                                    keySlots: keySlotBase[b]..<(keySlotBase[b] + kr.count), keys: kr))
                pairCounter.set(b, qr.count * (kr.count + samples.positions.reduce(0) { $0 + (kr.contains(Int($1)) ? 0 : 1) }))
            }
            let batch = BlockBatch(
                headDim: d, valueDim: dv, querySlotCount: querySlotCount, keySlotCount: keySlotCount, blocks: blocks,
                blockCount: partition.blocks, keyCount: nk, samples: samples,
                queryRow: { rows.query[$0] }, keyRow: { rows.key[$0] }, valueRow: { rows.value[$0] },
                sampleKey: { UnsafePointer(sampleRows.keys + $0 * d) }, sampleValue: { UnsafePointer(sampleRows.values + $0 * sampleRows.paddedValueDim) },
                emit: emit)
            let owner = blockOwner, ranks = comm.size
            try accelerator.runBlocks(batch, options: options) { sums in
                // Every rank's blocks' Σ v, back in block order (rank r's blocks ascending).
                let gathered = try comms.controlSums!.allGatherv(sums).values
                let offsets = BlockDealing.gatheredLayout(owner: owner, ranks: ranks, width: dv).offsets
                var all = [Double](repeating: 0, count: owner.count * dv)
                for j in owner.indices {
                    for c in 0..<dv { all[j * dv + c] = gathered[offsets[j] + c] }
                }
                return all
            }
            blockOwner = []
            kernelSeconds = MPIEnvironment.wallTime - k0
        } else {
            // Chunks of blocks, with the other rectangles' transfers polled between them.
            let blockPartsOnly = samplesAtOwners
            let sumBuffer = blockPartsOnly && controlVariate ? scratch.buffer(.blockSums, set: bufferSet, count: blockList.count * dv) : nil
            let sums = sumBuffer.map { SharedRows(base: $0.baseAddress!, width: dv) }
            let chunk = max(4, 2 * ex.threads)
            for first in Swift.stride(from: 0, to: blockList.count, by: chunk) {
                let k0 = MPIEnvironment.wallTime
                let count = min(chunk, blockList.count - first)
                parallelFor(count, threads: ex.threads) { c, worker in
                    let b = first + c
                    let j = blockList[b]
                    let ws = ex.workspaces[worker]
                    let qr = partition.range(j, length: nq), kr = partition.range(j, length: nk)
                    let qSlot = querySlotBase[b], kSlot = keySlotBase[b]
                    ws.reserveGather(rows: max(kr.count, samples.positions.count))
                    for t in 0..<kr.count {
                        ws.gather(slot: t, key: rows.key[kSlot + t], value: rows.value[kSlot + t])
                    }
                    if blockPartsOnly {
                        // The block part; its Σ v goes to the ranks computing the sample parts.
                        if let sums { copyRow(from: ws.blockValueSum(blockKeys: kr.count), to: sums.row(b), count: dv) }
                        ws.runBlockPart(
                            queryCount: qr.count, queryTile: AttentionPlan.blockQueryTile, blockKeys: kr.count, scaleLog2: scaleLog2,
                            queryRow: { rows.query[qSlot + $0] },
                            emit: { i, o, l in emit(qSlot + i, o, l) })
                        pairCounter.set(b, qr.count * kr.count)
                        return
                    }
                    let unmasked = ws.setSampleBias(samples, blockKeys: kr)
                    if controlVariate {
                        ws.setValueCorrection(nodeValueSum: nodeValueSum, blockValueSum: ws.blockValueSum(blockKeys: kr.count), samples: samples, rows: sampleRows)
                    }
                    ws.runBlock(
                        queryCount: qr.count, queryTile: AttentionPlan.blockQueryTile, blockKeys: kr.count, samples: sampleRows,
                        scaleLog2: scaleLog2, outsideCount: controlVariate ? nk - kr.count : nil,
                        queryRow: { rows.query[qSlot + $0] },
                        emit: { i, o, l in emit(qSlot + i, o, l) })
                    pairCounter.set(b, qr.count * (kr.count + unmasked))
                }
                let k1 = MPIEnvironment.wallTime
                kernelSeconds += k1 - k0
                try pollOthers()
                pollSeconds += MPIEnvironment.wallTime - k1
            }
            if let sums = sumBuffer {
                // Every block's Σ v, from the rank that computed it, to every rank (in rank order,
                // each rank's blocks ascending).
                let counts = BlockDealing.gatheredLayout(owner: blockOwner, ranks: comm.size, width: dv).counts
                blockSumRequest = try comms.controlSums!.immediateAllGatherv(Array(sums), counts: counts)
                report.bytesSent += 4 * sums.count
                report.bytesReceived += 4 * counts.reduce(0, +)
            }
        }
        report.evaluatedPairs += pairCounter.total
        report.computeSeconds += MPIEnvironment.wallTime - t - pollSeconds
        report.exchangeSeconds += pollSeconds
        scratch.recordBlockKernel(pairs: pairCounter.total, seconds: kernelSeconds)

        // 6. Results back to the owners, in the order the rows arrived.
        t = MPIEnvironment.wallTime
        returned = scratch.buffer(.returned, set: bufferSet, count: (myQ.count - homeQueries.count) * width)
        returnRequest = try comms.results.immediateAllToAllv(
            borrowing: UnsafeBufferPointer(back), partition: BufferPartition(counts: queryReceiveCounts.map { $0 * width }),
            into: returned, partition: BufferPartition(counts: querySendCounts.map { $0 * width }))
        report.bytesSent += 4 * back.count
        report.bytesReceived += 4 * returned.count
        arrivingQ = []
        arrivingK = []
        myBlocks = []
        report.returnSeconds += MPIEnvironment.wallTime - t
        // While the block parts travel, the rest of the sample parts of this rank's own rows.
        if samplesAtOwners { try computeSampleParts(&report, pollOthers: pollOthers) }
    }

    // MARK: 6. Merge the returned results

    func finish(_ report: inout DistributedReport) throws {
        let t = MPIEnvironment.wallTime
        try returnRequest!.wait()
        returnRequest = nil
        var blockSums: [Float] = []
        if let blockSumRequest {
            blockSums = try blockSumRequest.waitForValues()
            self.blockSumRequest = nil
        }
        report.waitSeconds += MPIEnvironment.wallTime - t
        if samplesAtOwners {
            report.returnSeconds += MPIEnvironment.wallTime - t
            finishSampleParts(blockSums: blockSums, &report)
            return
        }
        let h = piece.head, ex = executor, dv = self.dv, width = self.width, merge = piece.merge
        let withLse = width == dv + 1
        // The rows sent to other ranks: `queryOrder` without this rank's own (merged already).
        let home = homeQueries
        for (k, i) in queryOrder.enumerated() where !home.contains(k) {
            let row = returned.baseAddress! + packedIndex(k, without: home) * width
            let token = myQ.lowerBound + i
            finishRow(ex.outputRow(h, token), ex.lseEntry(h, token), partial: row, partialLogSumExp: withLse ? row[dv] : 0,
                      valueDim: dv, withLse: withLse, merge: merge)
        }
        queryOrder = []
        report.returnSeconds += MPIEnvironment.wallTime - t
    }
}

extension DistributedRectangle {
    /// Runs of this rank's sorted query rows that fall in one block: (block, first, count).
    private func blockRuns() -> [(block: Int, start: Int, count: Int)] {
        var runs: [(block: Int, start: Int, count: Int)] = []
        for (i, q) in sortedQueries.enumerated() {
            let j = partition.block(containing: q.position, length: nq)
            if let last = runs.last, last.block == j {
                runs[runs.count - 1].count += 1
            } else {
                runs.append((j, i, 1))
            }
        }
        return runs
    }

    /// The saved sample-part states of this rank's sorted query rows (`runSamplePartState`), one
    /// row each, in this rectangle's buffer set: written by `computeSampleParts`, read by
    /// `finishSampleParts`.
    private func sampleStates() -> SharedRows {
        let width = TileWorkspace.sampleStateWidth(valueDim: dv)
        return SharedRows(base: scratch.buffer(.sampleStates, set: bufferSet, count: max(sortedQueries.count, 1) * width).baseAddress!,
                          width: width)
    }

    /// The sample part of each of this rank's query rows (`samplesAtOwners`) up to its control
    /// variate and normalisation (`TileWorkspace.runSamplePartState`), one run of rows in a block
    /// at a time, in parallel, with the other rectangles' transfers polled between chunks of runs.
    /// Goes on from where the last call stopped, until every run is done or, checked before each
    /// chunk, `stop` says so.
    private func computeSampleParts(_ report: inout DistributedReport, pollOthers: () throws -> Void,
                                    until stop: () throws -> Bool = { false }) throws {
        let h = piece.head, ex = executor, nk = self.nk, partition = self.partition
        let samples = self.samples!, sampleRows = self.sampleRows!
        let sorted = sortedQueries, first = myQ.lowerBound
        let runs = sampleRuns
        let states = sampleStates()
        let pairCounter = PairCounter(count: runs.count)
        let scaleLog2 = ex.scaleLog2
        var kernelSeconds = 0.0, pollSeconds = 0.0
        let chunk = max(4, 2 * ex.threads)
        while nextSampleRun < runs.count, try !stop() {
            let firstRun = nextSampleRun
            let k0 = MPIEnvironment.wallTime
            let count = min(chunk, runs.count - firstRun)
            nextSampleRun += count
            parallelFor(count, threads: ex.threads) { c, worker in
                let run = runs[firstRun + c]
                let ws = ex.workspaces[worker]
                ws.reserveGather(rows: samples.positions.count)
                let unmasked = ws.setSampleBias(samples, blockKeys: partition.range(run.block, length: nk))
                ws.runSamplePartState(
                    queryCount: run.count, queryTile: AttentionPlan.blockQueryTile, samples: sampleRows, scaleLog2: scaleLog2,
                    queryRow: { ex.queryRow(h, first + sorted[run.start + $0].row) },
                    save: { states.row(run.start + $0) })
                pairCounter.set(firstRun + c, run.count * unmasked)
            }
            let k1 = MPIEnvironment.wallTime
            kernelSeconds += k1 - k0
            try pollOthers()
            pollSeconds += MPIEnvironment.wallTime - k1
        }
        report.evaluatedPairs += pairCounter.total
        report.computeSeconds += kernelSeconds
        report.exchangeSeconds += pollSeconds
        scratch.recordBlockKernel(pairs: pairCounter.total, seconds: kernelSeconds)
    }

    /// Completes the sample parts (`computeSampleParts`) once every block's Σ v is in (control
    /// variate), merges each into its row's block part (returned, or computed here) and that into
    /// the output row.
    private func finishSampleParts(blockSums: [Float], _ report: inout DistributedReport) {
        let t = MPIEnvironment.wallTime
        let h = piece.head, ex = executor, dv = self.dv, width = self.width, merge = piece.merge
        let withLse = merge || returnsLogSumExp
        let partition = self.partition, nk = self.nk, controlVariate = self.controlVariate
        let samples = self.samples!, sampleRows = self.sampleRows!, nodeValueSum = self.nodeValueSum
        let sorted = sortedQueries, first = myQ.lowerBound
        // Where each block's Σ v is among the gathered sums.
        let sumOffset = controlVariate ? BlockDealing.gatheredLayout(owner: blockOwner, ranks: comm.size, width: dv).offsets : []
        let runs = sampleRuns
        sampleRuns = []
        let states = sampleStates()
        let partials = BlockPartials(returned: returned, home: homePartials, homeRange: homeQueries, width: width)
        parallelFor(runs.count, threads: ex.threads) { r, worker in
            let run = runs[r]
            let ws = ex.workspaces[worker]
            let kr = partition.range(run.block, length: nk)
            if controlVariate {
                ws.reserveGather(rows: samples.positions.count)
                _ = ws.setSampleBias(samples, blockKeys: kr)
                blockSums.withUnsafeBufferPointer {
                    ws.setValueCorrection(nodeValueSum: nodeValueSum, blockValueSum: $0.baseAddress! + sumOffset[run.block],
                                          samples: samples, rows: sampleRows)
                }
            }
            ws.finishSamplePart(
                queryCount: run.count, outsideCount: controlVariate ? nk - kr.count : nil,
                state: { UnsafePointer(states.row(run.start + $0)) },
                emit: { i, o, l in
                    let q = sorted[run.start + i]
                    let p = partials.row(q.sent)
                    mergeSamplePart(into: p, logSumExp: p + dv, samplePart: o, logSumExp: l, valueDim: dv)
                    let token = first + q.row
                    finishRow(ex.outputRow(h, token), ex.lseEntry(h, token), partial: p, partialLogSumExp: p[dv],
                              valueDim: dv, withLse: withLse, merge: merge)
                })
        }
        report.computeSeconds += MPIEnvironment.wallTime - t
        sortedQueries = []
        queryOrder = []
    }
}

/// Rows of `width` floats in a buffer that parallel workers write disjoint rows of.
private struct SharedRows: @unchecked Sendable {
    let base: UnsafeMutablePointer<Float>
    let width: Int
    func row(_ i: Int) -> UnsafeMutablePointer<Float> { base + i * width }
}

/// Where each of a rank's query rows' block part (o, lse) is, by its index in the rank's send
/// order: among the returned rows, or, for the rows of the rank's own blocks, in `home`.
private struct BlockPartials: Sendable {
    let returned: SharedRows?
    let home: SharedRows?
    let homeRange: Range<Int>
    init(returned: UnsafeMutableBufferPointer<Float>, home: UnsafeMutableBufferPointer<Float>, homeRange: Range<Int>, width: Int) {
        self.returned = returned.baseAddress.map { SharedRows(base: $0, width: width) }
        self.home = home.baseAddress.map { SharedRows(base: $0, width: width) }
        self.homeRange = homeRange
    }
    func row(_ k: Int) -> UnsafeMutablePointer<Float> {
        homeRange.contains(k) ? home!.row(k - homeRange.lowerBound) : returned!.row(packedIndex(k, without: homeRange))
    }
}

/// Where entry `k` of a list is once the entries `skipped` (a run inside it) are left out; `k`
/// itself is not in `skipped`.
@inline(__always) private func packedIndex(_ k: Int, without skipped: Range<Int>) -> Int {
    k < skipped.lowerBound ? k : k - skipped.count
}

/// One query row's result into the output: lse-merged into the row's partial (or written, for
/// its first piece) when the lse is wanted, else o alone.
@inline(__always) private func finishRow(
    _ output: UnsafeMutablePointer<Float>, _ lse: UnsafeMutablePointer<Float>, partial: UnsafePointer<Float>,
    partialLogSumExp: Float, valueDim: Int, withLse: Bool, merge: Bool
) {
    if withLse {
        mergePartial(into: output, logSumExp: lse, partial: partial, partialLogSumExp: partialLogSumExp, count: valueDim, merge: merge)
    } else {
        output.update(from: partial, count: valueDim)
    }
}

/// The communicators of one piece spanning ranks, one per kind of collective of its rectangles.
/// A rank in two pieces of a level interleaves their rectangles, and the pipeline runs stages of
/// different heads at once; each communicator still sees its kind's operations in head order on
/// every one of its ranks, as MPI requires.
struct PieceCommunicators {
    /// Histograms (the piece's sub-communicator itself); also exact pieces' gathers.
    let histograms: Communicator
    let exchange: Communicator
    let samples: Communicator
    let results: Communicator
    /// The blocks' Σ v for the control variate, when the blocks run on an accelerator.
    let controlSums: Communicator?

    init(_ sub: Communicator, controlSums: Bool) throws {
        histograms = sub
        exchange = try sub.duplicate()
        samples = try sub.duplicate()
        results = try sub.duplicate()
        self.controlSums = controlSums ? try sub.duplicate() : nil
    }
}

/// Where the rows of each slot of a rank's blocks are (received, or in its own shard) and where
/// each query's (o[, lse]) goes (a row to send back, or its output row); shared by the block
/// workers, which write disjoint result rows.
final class BlockRows: @unchecked Sendable {
    let query: UnsafeMutableBufferPointer<UnsafePointer<Float>>
    let result: UnsafeMutableBufferPointer<UnsafeMutablePointer<Float>>
    /// The row's lse entry when `result` is its output row (this rank's own rows), else nil.
    let logSumExp: UnsafeMutableBufferPointer<UnsafeMutablePointer<Float>?>
    let key: UnsafeMutableBufferPointer<UnsafePointer<Float>>
    let value: UnsafeMutableBufferPointer<UnsafePointer<Float>>
    init(querySlots: Int, keySlots: Int) {
        query = .allocate(capacity: querySlots)
        result = .allocate(capacity: querySlots)
        logSumExp = .allocate(capacity: querySlots)
        key = .allocate(capacity: keySlots)
        value = .allocate(capacity: keySlots)
    }
    deinit {
        query.deallocate()
        result.deallocate()
        logSumExp.deallocate()
        key.deallocate()
        value.deallocate()
    }
}

/// Per-block pair counts written by workers, summed after.
final class PairCounter: @unchecked Sendable {
    private let counts: UnsafeMutableBufferPointer<Int>
    init(count: Int) {
        counts = .allocate(capacity: max(count, 1))
        counts.initialize(repeating: 0)
    }
    deinit { counts.deallocate() }
    func set(_ i: Int, _ value: Int) { counts[i] = value }
    var total: Int { counts.reduce(0, +) }
}

/// How a rectangle's blocks are dealt to its ranks: contiguous runs in sorted order, rank c
/// getting blocks firstBlocks[c] ..< firstBlocks[c + 1].
enum BlockDealing {
    /// Equal weights (or any weight ≤ 1: a rank without a measurement) give ⌊c·nb/P⌋; otherwise the blocks are split in proportion to the weights,
    /// each clamped to [1/2, 2] × their mean (so one bad measurement cannot starve or swamp a
    /// rank). Every rank computes this from the same allgathered integers, so all agree.
    static func firstBlocks(blocks: Int, weights: [Int64]) -> [Int] {
        let ranks = weights.count
        // Equal, or some rank not measured yet (weight 1): equal work.
        guard let w = clampedWeights(weights) else { return (0...ranks).map { $0 * blocks / ranks } }
        return cumulativeSplit(blocks: blocks, in: w)
    }

    /// `firstBlocks` when each rank also has work that stays with it (`fixedWork`, in the unit of
    /// `blockWork`, a block's work): rank r's share of all the work (its weight's, as above) less
    /// its fixed work, at least 0, in blocks; the blocks are split in proportion to those
    /// remainders. With the sample parts at the query rows' owners, a rank holding only query rows
    /// of a causal rectangle has its share in its sample parts alone and gets no block.
    static func firstBlocks(blocks: Int, weights: [Int64], fixedWork: [Double], blockWork: Double) -> [Int] {
        let share = shares(weights)
        let total = Double(blocks) * blockWork + fixedWork.reduce(0, +)
        let rest = share.indices.map { max(0, total * share[$0] - fixedWork[$0]) }
        guard rest.reduce(0, +) > 0 else { return firstBlocks(blocks: blocks, weights: weights) }
        return cumulativeSplit(blocks: blocks, in: rest)
    }

    /// Each rank's fraction of a rectangle's work by its weight, as the dealing takes it: equal
    /// (all weights equal, or some rank not measured yet), else the clamped weights normalised.
    static func shares(_ weights: [Int64]) -> [Double] {
        guard let w = clampedWeights(weights) else { return [Double](repeating: 1 / Double(weights.count), count: weights.count) }
        let sum = w.reduce(0, +)
        return w.map { $0 / sum }
    }

    /// The weights clamped to [1/2, 2] × their mean, or nil for equal work (all equal, or a rank
    /// not measured yet).
    private static func clampedWeights(_ weights: [Int64]) -> [Double]? {
        if weights.allSatisfy({ $0 == weights[0] }) || weights.contains(where: { $0 <= 1 }) { return nil }
        let mean = Double(weights.reduce(0, +)) / Double(weights.count)
        return weights.map { min(max(Double($0), mean / 2), mean * 2) }
    }

    /// First block of each rank when `blocks` are split in proportion to `parts` (rounded at the
    /// cumulative sums, so the counts add up).
    private static func cumulativeSplit(blocks: Int, in parts: [Double]) -> [Int] {
        let total = parts.reduce(0, +)
        var first = [0]
        var cumulative = 0.0
        for r in 0..<(parts.count - 1) {
            cumulative += parts[r]
            first.append(max(first[r], min(blocks, Int((Double(blocks) * cumulative / total).rounded()))))
        }
        first.append(blocks)
        return first
    }

    /// One rank's rows of one bucket on one side of a rectangle: sorted positions
    /// `start ..< start + count`.
    struct RowRun: Equatable {
        var rank: Int
        var start: Int
        var count: Int
    }

    /// Which rank computes each block (`.rowLocality`): every rank gets exactly the number of
    /// blocks `quota` (`firstBlocks`) gives it, and blocks go preferably to a rank that holds
    /// rows of them, most bytes saved first. Candidates (block, rank, bytes that rank holds of
    /// the block) are taken in descending bytes — on a tie query rows first (a computed query's
    /// result stays home too), then lower block, then lower rank — each while its block is
    /// unplaced and its rank has quota left; blocks left over fill the remaining quotas in block
    /// order, lowest rank first. A pure function of integers every rank has, so all agree.
    static func assign(quota first: [Int], affinity: BlockAffinity) -> [Int] {
        let ranks = first.count - 1
        var left = (0..<ranks).map { first[$0 + 1] - first[$0] }
        let candidates = affinity.candidates.sorted {
            ($0.bytes, $0.queries ? 1 : 0, -$0.block, -$0.rank) > ($1.bytes, $1.queries ? 1 : 0, -$1.block, -$1.rank)
        }
        var owner = [Int](repeating: -1, count: affinity.blocks)
        for c in candidates where owner[c.block] < 0 && left[c.rank] > 0 {
            owner[c.block] = c.rank
            left[c.rank] -= 1
        }
        var r = 0
        for j in 0..<affinity.blocks where owner[j] < 0 {
            while left[r] == 0 { r += 1 }
            owner[j] = r
            left[r] -= 1
        }
        return owner
    }

    /// Where each block's row of `width` values lands when every rank contributes its own blocks'
    /// rows, ascending, and an allgatherv puts them in rank order: the count each rank sends, and
    /// each block's offset in the gathered values.
    static func gatheredLayout(owner: [Int], ranks: Int, width: Int) -> (counts: [Int], offsets: [Int]) {
        var counts = [Int](repeating: 0, count: ranks)
        for r in owner { counts[r] += width }
        var next = [Int](repeating: 0, count: ranks)
        for r in 1..<max(ranks, 1) { next[r] = next[r - 1] + counts[r - 1] }
        var offsets = [Int](repeating: 0, count: owner.count)
        for (j, r) in owner.enumerated() {
            offsets[j] = next[r]
            next[r] += width
        }
        return (counts, offsets)
    }

    /// The rank whose run contains block `j`.
    static func owner(ofBlock j: Int, firstBlocks first: [Int]) -> Int {
        // The last rank whose first block is ≤ j (ranks with empty runs before it are skipped).
        var lo = 0, hi = first.count - 2
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if first[mid] <= j { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }
}


/// How many bytes of each block each rank already holds (rows it would not have to send, and for
/// query rows, results it would not get back), per side.
struct BlockAffinity {
    struct Candidate: Equatable {
        var block: Int
        var rank: Int
        var bytes: Int
        /// Query rows (else key rows); a block can have one candidate of each side per rank.
        var queries: Bool
    }
    let blocks: Int
    private(set) var candidates: [Candidate] = []

    init(blocks: Int) { self.blocks = blocks }

    /// Adds one side's runs (in ascending position) to the blocks of `partition` over a side of
    /// `length` rows.
    mutating func add(_ runs: [BlockDealing.RowRun], partition: BlockPartition, length: Int, bytesPerRow: Int, queries: Bool) {
        guard length > 0 else { return }
        let first = candidates.count
        for run in runs where run.count > 0 {
            var p = run.start
            let end = run.start + run.count
            var j = partition.block(containing: p, length: length)
            while p < end {
                let hi = min(end, partition.range(j, length: length).upperBound)
                if hi > p {
                    // A rank's runs of one block (several buckets in one block) are merged. Runs
                    // come in position order, so this side's candidates of block j are the last ones.
                    var k = candidates.count - 1
                    while k >= first, candidates[k].block == j, candidates[k].rank != run.rank { k -= 1 }
                    if k >= first, candidates[k].block == j {
                        candidates[k].bytes += (hi - p) * bytesPerRow
                    } else {
                        candidates.append(Candidate(block: j, rank: run.rank, bytes: (hi - p) * bytesPerRow, queries: queries))
                    }
                    p = hi
                }
                j += 1
            }
        }
    }
}
