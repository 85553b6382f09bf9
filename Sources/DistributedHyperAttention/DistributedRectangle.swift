import HyperAttention
import MPI

/// One non-causal HyperAttention piece (a whole non-causal problem, or a rectangle of the causal
/// recursion) over the ranks that own its rows (DESIGN.md §3, the rectangle primitive):
///
/// 1. each rank hashes its own query and key rows of the piece (the node's hyperplanes);
/// 2. global stable counting sort: local bucket histograms, allgathered (which gives what an
///    exclusive scan over lower ranks and an allreduce of totals would), give every row its global
///    sorted position, with no data moved — the same order as the single-process stable sort,
///    since lower ranks hold lower tokens;
/// 3. blocks are dealt whole and contiguous, query block j with key block j: ⌊c·nb/P⌋ of them to
///    rank c (`.equalWork`: blocks differ in size by at most one row), or in proportion to the
///    ranks' measured block-kernel speed (`.measuredSpeed`, the default: cores of one machine can
///    differ by 30% under load); one alltoallv moves Q rows,
///    one moves K|V rows, each sent in ascending sorted position, so the receiver knows every
///    row's position from the histograms and no ids travel;
/// 4. the node's samples (positions in sorted-key order) are contributed by the rank that now
///    holds them and allgathered, so every rank has all m (k, v) rows;
/// 5. each rank runs the core's fused block kernel on its blocks — the same gathered rows in the
///    same order as in one process, so the same bits;
/// 6. a reverse alltoallv returns (o, lse) to the rows' owners, who lse-merge them.
struct DistributedRectangle {
    var run: DistributedRun
    let piece: Piece
    let comm: Communicator
    /// World rank of `comm`'s rank 0 (the participants are consecutive world ranks).
    let firstWorldRank: Int

    init(run: DistributedRun, piece: Piece, comm: Communicator, firstWorldRank: Int) {
        self.run = run
        self.piece = piece
        self.comm = comm
        self.firstWorldRank = firstWorldRank
    }

    mutating func execute() throws {
        let ex = run.executor, shape = run.shape, options = run.plan.options
        let d = shape.headDim, dv = shape.valueDim, h = piece.head
        let nq = piece.queries.count, nk = piece.keys.count
        let myQ = clamp(piece.queries, to: ex.io.queryRows), myK = clamp(piece.keys, to: ex.io.keyRows)

        // 1. Hash this rank's rows.
        var t = MPIEnvironment.wallTime
        let node = CounterRandom.nodeID(queries: piece.queries, keys: piece.keys)
        let lsh = SortLSH(bits: options.lshBits, headDim: d, seed: options.seed, head: h, node: node)
        let queryBuckets = hash(lsh, count: myQ.count) { ex.queryRow(h, myQ.lowerBound + $0) }
        let keyBuckets = hash(lsh, count: myK.count) { ex.keyRow(h, myK.lowerBound + $0) }
        run.report.hashSeconds += MPIEnvironment.wallTime - t

        // 2. Global sorted positions from histograms. One allgather of every rank's bucket counts
        //    gives what MPI_Exscan (counts of lower ranks) and MPI_Allreduce (totals) would, and
        //    also tells each receiver which sorted positions every sender holds, so rows travel
        //    without ids.
        t = MPIEnvironment.wallTime
        let buckets = lsh.bucketCount
        // [query counts | key counts | this rank's speed weight]
        let stride = 2 * buckets + 1
        var histogram = [Int64](repeating: 0, count: stride)
        for b in queryBuckets { histogram[Int(b)] += 1 }
        for b in keyBuckets { histogram[buckets + Int(b)] += 1 }
        histogram[2 * buckets] = run.scratch.speedWeight(balancing: run.attention.balancing)
        let ranks = comm.size
        let all = try comm.allGather(histogram)  // [rank][stride]
        run.report.bytesSent += 8 * histogram.count
        run.report.bytesReceived += 8 * all.count
        /// First sorted position of bucket b (side offset 0: queries, `buckets`: keys), and the
        /// first position of rank r's rows inside it.
        func layout(offset: Int) -> (start: [Int], rankStart: [[Int]]) {
            var start = [Int](repeating: 0, count: buckets)
            var rankStart = [[Int]](repeating: [Int](repeating: 0, count: buckets), count: ranks)
            var position = 0
            for b in 0..<buckets {
                start[b] = position
                for r in 0..<ranks {
                    rankStart[r][b] = position
                    position += Int(all[r * stride + offset + b])
                }
            }
            return (start, rankStart)
        }
        let queryLayout = layout(offset: 0), keyLayout = layout(offset: buckets)
        /// This rank's rows in ascending sorted position (a stable counting sort by bucket), and
        /// each one's position.
        func sortedRows(_ rowBuckets: [UInt16], _ layout: (start: [Int], rankStart: [[Int]])) -> (order: [Int], positions: [Int]) {
            var order = [Int32](repeating: 0, count: rowBuckets.count)
            rowBuckets.withUnsafeBufferPointer { b in
                order.withUnsafeMutableBufferPointer { o in
                    SortLSH.sortedOrder(buckets: b.baseAddress!, count: b.count, bucketCount: buckets, order: o.baseAddress!)
                }
            }
            var next = layout.rankStart[comm.rank]
            let positions = order.map { i -> Int in
                let b = Int(rowBuckets[Int(i)])
                defer { next[b] += 1 }
                return next[b]
            }
            return (order.map(Int.init), positions)
        }
        let mineQ = sortedRows(queryBuckets, queryLayout), mineK = sortedRows(keyBuckets, keyLayout)

        // 3. Deal blocks to ranks and move the rows.
        let partition = BlockPartition(keyCount: nk, blockSize: options.blockSize)
        let firstBlock = BlockDealing.firstBlocks(blocks: partition.blocks, weights: (0..<ranks).map { all[$0 * stride + 2 * buckets] })
        let myBlocks = firstBlock[comm.rank]..<firstBlock[comm.rank + 1]
        func destination(ofBlock j: Int) -> Int { BlockDealing.owner(ofBlock: j, firstBlocks: firstBlock) }
        let qStart = partition.range(myBlocks.lowerBound, length: nq).lowerBound
        let qEnd = myBlocks.isEmpty ? qStart : partition.range(myBlocks.upperBound - 1, length: nq).upperBound
        let kStart = partition.range(myBlocks.lowerBound, length: nk).lowerBound
        let kEnd = myBlocks.isEmpty ? kStart : partition.range(myBlocks.upperBound - 1, length: nk).upperBound
        /// Rows to send per rank: positions ascend, and so do their destinations.
        func sendCounts(_ positions: [Int], length: Int) -> [Int] {
            var counts = [Int](repeating: 0, count: ranks)
            for p in positions { counts[destination(ofBlock: partition.block(containing: p, length: length))] += 1 }
            return counts
        }
        /// The sorted positions in `range` that each rank holds, rank by rank, ascending: the
        /// order in which their rows arrive; and how many come from each rank.
        func arrivals(_ layout: (start: [Int], rankStart: [[Int]]), offset: Int, range: Range<Int>) -> (positions: [Int], perRank: [Int]) {
            var positions: [Int] = []
            positions.reserveCapacity(range.count)
            var perRank = [Int](repeating: 0, count: ranks)
            for r in 0..<ranks {
                for b in 0..<buckets {
                    let first = layout.rankStart[r][b], count = Int(all[r * stride + offset + b])
                    let lo = max(first, range.lowerBound), hi = min(first + count, range.upperBound)
                    if lo < hi {
                        positions += lo..<hi
                        perRank[r] += hi - lo
                    }
                }
            }
            return (positions, perRank)
        }

        // Q rows (d floats each) and K|V rows (d + d_v floats each), in ascending sorted
        // position, through buffers reused by every rectangle of the call (fresh pages would be
        // zeroed by the kernel on first touch, every time).
        let scratch = run.scratch
        let sendQ = scratch.buffer(.sendQ, count: myQ.count * d)
        for (k, i) in mineQ.order.enumerated() {
            copyRow(from: ex.queryRow(h, myQ.lowerBound + i), to: sendQ.baseAddress! + k * d, count: d)
        }
        let sendKV = scratch.buffer(.sendKV, count: myK.count * (d + dv))
        for (k, i) in mineK.order.enumerated() {
            let row = sendKV.baseAddress! + k * (d + dv)
            copyRow(from: ex.keyRow(h, myK.lowerBound + i), to: row, count: d)
            copyRow(from: ex.valueRow(h, myK.lowerBound + i), to: row + d, count: dv)
        }
        // Where the received rows go: every rank knows every rank's positions from the counts.
        let (arrivingQ, queryReceiveCounts) = arrivals(queryLayout, offset: 0, range: qStart..<qEnd)
        let (arrivingK, keyReceiveCounts) = arrivals(keyLayout, offset: buckets, range: kStart..<kEnd)
        let querySendCounts = sendCounts(mineQ.positions, length: nq)
        let receivedQ = scratch.buffer(.receivedQ, count: arrivingQ.count * d)
        try comm.allToAllv(UnsafeBufferPointer(sendQ), partition: BufferPartition(counts: querySendCounts.map { $0 * d }),
                           into: receivedQ, partition: BufferPartition(counts: queryReceiveCounts.map { $0 * d }))
        let receivedKV = scratch.buffer(.receivedKV, count: arrivingK.count * (d + dv))
        try comm.allToAllv(UnsafeBufferPointer(sendKV), partition: BufferPartition(counts: sendCounts(mineK.positions, length: nk).map { $0 * (d + dv) }),
                           into: receivedKV, partition: BufferPartition(counts: keyReceiveCounts.map { $0 * (d + dv) }))
        run.report.bytesSent += 4 * (sendQ.count + sendKV.count)
        run.report.bytesReceived += 4 * (receivedQ.count + receivedKV.count)

        // Where the row of each sorted position (qStart..<qEnd, kStart..<kEnd) arrived: the
        // kernel reads rows there, so they are not copied again into sorted order.
        func arrivalIndex(_ arriving: [Int], first: Int, count: Int) -> [Int32] {
            var index = [Int32](repeating: 0, count: count)
            for (i, p) in arriving.enumerated() { index[p - first] = Int32(i) }
            return index
        }
        let queryArrival = arrivalIndex(arrivingQ, first: qStart, count: qEnd - qStart)
        let keyArrival = arrivalIndex(arrivingK, first: kStart, count: kEnd - kStart)
        run.report.exchangeSeconds += MPIEnvironment.wallTime - t

        // 4. Samples: the holder of each sampled sorted position contributes (index, k, v).
        t = MPIEnvironment.wallTime
        let random = CounterRandom(seed: options.seed, head: h, node: node, purpose: .samplePositions)
        let samples = SampleSet(estimator: options.estimator, keyCount: nk, count: options.samples, random: random)
        var contributed = [Float]()
        for (i, p) in samples.positions.enumerated() where (kStart..<kEnd).contains(Int(p)) {
            contributed.append(Float(bitPattern: UInt32(i)))
            // A received K|V row: k then v.
            contributed += UnsafeBufferPointer(start: receivedKV.baseAddress! + Int(keyArrival[Int(p) - kStart]) * (d + dv), count: d + dv)
        }
        let allSamples = try comm.allGatherv(contributed)
        run.report.bytesSent += 4 * contributed.count + 8
        run.report.bytesReceived += 4 * allSamples.values.count + 8 * ranks
        let sampleRows = SampleRows(count: samples.positions.count, headDim: d, valueDim: dv)
        allSamples.values.withUnsafeBufferPointer { r in
            for j in 0..<(r.count / (d + dv + 1)) {
                let row = r.baseAddress! + j * (d + dv + 1)
                sampleRows.set(Int(row[0].bitPattern), key: row + 1, value: row + 1 + d)
            }
        }
        let controlVariate = options.estimator == .stratifiedControlVariate
        var localValueSum = [Double](repeating: 0, count: controlVariate ? dv : 0)
        if controlVariate {
            for r in myK { let v = ex.valueRow(h, r); for c in 0..<dv { localValueSum[c] += Double(v[c]) } }
            run.report.bytesSent += 8 * dv
            run.report.bytesReceived += 8 * dv
        }
        let nodeValueSum = controlVariate ? try comm.allReduce(localValueSum, operation: .sum) : []
        run.report.sampleGatherSeconds += MPIEnvironment.wallTime - t

        // 5. The block kernel on this rank's blocks (in parallel over blocks), reading the rows
        //    where they arrived and writing each query's (o[, lse]) where its row arrived: the
        //    order in which results go back. A piece that does not merge sends o alone unless
        //    the caller asked for the lse.
        t = MPIEnvironment.wallTime
        let withLse = piece.merge || run.returnsLogSumExp
        let width = withLse ? dv + 1 : dv
        let back = scratch.buffer(.back, count: arrivingQ.count * width)
        let blockList = Array(myBlocks)
        let pairCounter = PairCounter(count: blockList.count)
        let scaleLog2 = ex.scaleLog2
        let ptrs = BlockPointers(q: receivedQ.baseAddress!, kv: receivedKV.baseAddress!, back: back.baseAddress!)
        parallelFor(blockList.count, threads: ex.threads) { b, worker in
            let j = blockList[b]
            let ws = ex.workspaces[worker]
            let qr = partition.range(j, length: nq), kr = partition.range(j, length: nk)
            ws.reserveGather(rows: max(kr.count, samples.positions.count))
            for (t, p) in kr.enumerated() {
                let row = ptrs.kv + Int(keyArrival[p - kStart]) * (d + dv)
                ws.gather(slot: t, key: row, value: row + d)
            }
            let unmasked = ws.setSampleBias(samples, blockKeys: kr)
            if controlVariate {
                ws.setValueCorrection(nodeValueSum: nodeValueSum, blockKeys: kr.count, samples: samples, rows: sampleRows)
            }
            ws.runBlock(
                queryCount: qr.count, queryTile: AttentionPlan.blockQueryTile, blockKeys: kr.count, samples: sampleRows,
                scaleLog2: scaleLog2, outsideCount: controlVariate ? nk - kr.count : nil,
                queryRow: { ptrs.q + Int(queryArrival[qr.lowerBound - qStart + $0]) * d },
                emit: { i, o, l in
                    let dst = ptrs.back + Int(queryArrival[qr.lowerBound - qStart + i]) * width
                    dst.update(from: o, count: dv)
                    if withLse { dst[dv] = l }
                })
            pairCounter.set(b, qr.count * (kr.count + unmasked))
        }
        run.report.evaluatedPairs += pairCounter.total
        run.report.computeSeconds += MPIEnvironment.wallTime - t
        run.scratch.recordBlockKernel(pairs: pairCounter.total, seconds: MPIEnvironment.wallTime - t)

        // 6. Results back to the owners, in the order the rows arrived; owners merge.
        t = MPIEnvironment.wallTime
        let returned = scratch.buffer(.returned, count: myQ.count * width)
        try comm.allToAllv(UnsafeBufferPointer(back), partition: BufferPartition(counts: queryReceiveCounts.map { $0 * width }),
                           into: returned, partition: BufferPartition(counts: querySendCounts.map { $0 * width }))
        run.report.bytesSent += 4 * back.count
        run.report.bytesReceived += 4 * returned.count
        do {
            let r = returned
            for (k, i) in mineQ.order.enumerated() {
                let row = r.baseAddress! + k * width
                let token = myQ.lowerBound + i
                if withLse {
                    mergePartial(into: ex.outputRow(h, token), logSumExp: ex.lseEntry(h, token), partial: row,
                                 partialLogSumExp: row[dv], count: dv, merge: piece.merge)
                } else {
                    ex.outputRow(h, token).update(from: row, count: dv)
                }
            }
        }
        run.report.returnSeconds += MPIEnvironment.wallTime - t
    }

    /// Buckets of `count` rows, hashed in parallel chunks.
    private func hash(_ lsh: SortLSH, count: Int, row: @escaping (Int) -> UnsafePointer<Float>) -> [UInt16] {
        var buckets = [UInt16](repeating: 0, count: count)
        let chunk = 2048
        buckets.withUnsafeMutableBufferPointer { b in
            let out = SendablePointer(b.baseAddress)
            parallelFor((count + chunk - 1) / chunk, threads: run.executor.threads) { c, _ in
                let rows = (c * chunk)..<min(count, (c + 1) * chunk)
                let first = row(rows.lowerBound)
                // Rows of one head are consecutive in the shard: hash them as a block.
                lsh.hash(rows: first, count: rows.count, buckets: out.pointer! + rows.lowerBound) { $0 }
            }
        }
        return buckets
    }
}

/// Pointers shared by the block workers (each writes disjoint result rows): received Q rows,
/// received K|V rows, and the (o[, lse]) rows going back.
struct BlockPointers: @unchecked Sendable {
    let q: UnsafePointer<Float>, kv: UnsafePointer<Float>
    let back: UnsafeMutablePointer<Float>
}

struct SendablePointer<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>?
    init(_ pointer: UnsafeMutablePointer<T>?) { self.pointer = pointer }
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
        if weights.allSatisfy({ $0 == weights[0] }) || weights.contains(where: { $0 <= 1 }) {
            return (0...ranks).map { $0 * blocks / ranks }
        }
        let mean = Double(weights.reduce(0, +)) / Double(ranks)
        let w = weights.map { min(max(Double($0), mean / 2), mean * 2) }
        let total = w.reduce(0, +)
        var first = [0]
        var cumulative = 0.0
        for r in 0..<(ranks - 1) {
            cumulative += w[r]
            first.append(max(first[r], min(blocks, Int((Double(blocks) * cumulative / total).rounded()))))
        }
        first.append(blocks)
        return first
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
