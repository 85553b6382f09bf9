import HyperAttention
import MPI

/// One non-causal HyperAttention piece (a whole non-causal problem, or a rectangle of the causal
/// recursion) over the ranks that own its rows (DESIGN.md §3, the rectangle primitive):
///
/// 1. each rank hashes its own query and key rows of the piece (the node's hyperplanes);
/// 2. global stable counting sort: local bucket histograms → exclusive scan (rows of lower
///    ranks) and allreduce (totals) give every row its global sorted position, with no data
///    moved — the same order as the single-process stable sort, since lower ranks hold lower
///    tokens;
/// 3. blocks are dealt whole and contiguous, query block j with key block j, ⌊c·nb/P⌋ of them
///    to rank c (equal work: blocks differ in size by at most one row); one alltoallv moves Q rows
///    (each with its sorted position), one moves K|V rows;
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

        // 2. Global sorted positions from histograms.
        t = MPIEnvironment.wallTime
        let buckets = lsh.bucketCount
        var histogram = [Int64](repeating: 0, count: 2 * buckets)
        for b in queryBuckets { histogram[Int(b)] += 1 }
        for b in keyBuckets { histogram[buckets + Int(b)] += 1 }
        let below = try comm.exclusiveScan(histogram, operation: .sum)
        let totals = try comm.allReduce(histogram, operation: .sum)
        run.report.bytesSent += 2 * 8 * histogram.count
        run.report.bytesReceived += 2 * 8 * histogram.count
        func positions(_ rowBuckets: [UInt16], offset: Int) -> [Int] {
            var next = [Int](repeating: 0, count: buckets)
            var start = 0
            for b in 0..<buckets {
                next[b] = start + Int(below[offset + b])
                start += Int(totals[offset + b])
            }
            return rowBuckets.map { b in
                defer { next[Int(b)] += 1 }
                return next[Int(b)]
            }
        }
        let queryPositions = positions(queryBuckets, offset: 0)
        let keyPositions = positions(keyBuckets, offset: buckets)

        // 3. Deal blocks to ranks and move the rows.
        let partition = BlockPartition(keyCount: nk, blockSize: options.blockSize)
        let ranks = comm.size
        let myBlocks = (comm.rank * partition.blocks / ranks)..<((comm.rank + 1) * partition.blocks / ranks)
        func destination(ofBlock j: Int) -> Int { proportionalPart(containing: j, parts: ranks, length: partition.blocks) }
        let qStart = partition.range(myBlocks.lowerBound, length: nq).lowerBound
        let qEnd = myBlocks.isEmpty ? qStart : partition.range(myBlocks.upperBound - 1, length: nq).upperBound
        let kStart = partition.range(myBlocks.lowerBound, length: nk).lowerBound
        let kEnd = myBlocks.isEmpty ? kStart : partition.range(myBlocks.upperBound - 1, length: nk).upperBound

        // Q rows: d floats and the sorted position (as the bits of a Float), grouped by rank.
        let queryDestinations = queryPositions.map { destination(ofBlock: partition.block(containing: $0, length: nq)) }
        let querySendOrder = groupedOrder(queryDestinations, ranks: ranks)
        var sendQ = [Float]()
        sendQ.reserveCapacity(myQ.count * (d + 1))
        for i in querySendOrder.order {
            sendQ += UnsafeBufferPointer(start: ex.queryRow(h, myQ.lowerBound + i), count: d)
            sendQ.append(Float(bitPattern: UInt32(queryPositions[i])))
        }
        let receivedQ = try comm.allToAllv(sendQ, sendCounts: querySendOrder.counts.map { $0 * (d + 1) })
        // K|V rows: d + d_v floats and the sorted position.
        let keyDestinations = keyPositions.map { destination(ofBlock: partition.block(containing: $0, length: nk)) }
        let keySendOrder = groupedOrder(keyDestinations, ranks: ranks)
        var sendKV = [Float]()
        sendKV.reserveCapacity(myK.count * (d + dv + 1))
        for i in keySendOrder.order {
            sendKV += UnsafeBufferPointer(start: ex.keyRow(h, myK.lowerBound + i), count: d)
            sendKV += UnsafeBufferPointer(start: ex.valueRow(h, myK.lowerBound + i), count: dv)
            sendKV.append(Float(bitPattern: UInt32(keyPositions[i])))
        }
        let receivedKV = try comm.allToAllv(sendKV, sendCounts: keySendOrder.counts.map { $0 * (d + dv + 1) })
        run.report.bytesSent += 4 * (sendQ.count + sendKV.count) + 2 * 8 * ranks
        run.report.bytesReceived += 4 * (receivedQ.values.count + receivedKV.values.count) + 2 * 8 * ranks

        // Lay the received rows out in sorted order (positions qStart..<qEnd, kStart..<kEnd).
        var sortedQ = [Float](repeating: 0, count: (qEnd - qStart) * d)
        var querySlotOfReceived = [Int]()
        receivedQ.values.withUnsafeBufferPointer { r in
            let rows = r.count / (d + 1)
            querySlotOfReceived.reserveCapacity(rows)
            for i in 0..<rows {
                let row = r.baseAddress! + i * (d + 1)
                let slot = Int(row[d].bitPattern) - qStart
                querySlotOfReceived.append(slot)
                for c in 0..<d { sortedQ[slot * d + c] = row[c] }
            }
        }
        var sortedK = [Float](repeating: 0, count: (kEnd - kStart) * d)
        var sortedV = [Float](repeating: 0, count: (kEnd - kStart) * dv)
        receivedKV.values.withUnsafeBufferPointer { r in
            for i in 0..<(r.count / (d + dv + 1)) {
                let row = r.baseAddress! + i * (d + dv + 1)
                let slot = Int(row[d + dv].bitPattern) - kStart
                for c in 0..<d { sortedK[slot * d + c] = row[c] }
                for c in 0..<dv { sortedV[slot * dv + c] = row[d + c] }
            }
        }
        run.report.exchangeSeconds += MPIEnvironment.wallTime - t

        // 4. Samples: the holder of each sampled sorted position contributes (index, k, v).
        t = MPIEnvironment.wallTime
        let random = CounterRandom(seed: options.seed, head: h, node: node, purpose: .samplePositions)
        let samples = SampleSet(estimator: options.estimator, keyCount: nk, count: options.samples, random: random)
        var contributed = [Float]()
        for (i, p) in samples.positions.enumerated() where (kStart..<kEnd).contains(Int(p)) {
            let slot = Int(p) - kStart
            contributed.append(Float(bitPattern: UInt32(i)))
            contributed += sortedK[slot * d ..< (slot + 1) * d]
            contributed += sortedV[slot * dv ..< (slot + 1) * dv]
        }
        let allSamples = try comm.allGatherv(contributed)
        run.report.bytesSent += 4 * contributed.count + 8
        run.report.bytesReceived += 4 * allSamples.values.count + 8 * ranks
        var sampleK = [Float](repeating: 0, count: samples.positions.count * d)
        var sampleV = [Float](repeating: 0, count: samples.positions.count * dv)
        allSamples.values.withUnsafeBufferPointer { r in
            for j in 0..<(r.count / (d + dv + 1)) {
                let row = r.baseAddress! + j * (d + dv + 1)
                let i = Int(row[0].bitPattern)
                for c in 0..<d { sampleK[i * d + c] = row[1 + c] }
                for c in 0..<dv { sampleV[i * dv + c] = row[1 + d + c] }
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

        // 5. The block kernel on this rank's blocks (in parallel over blocks).
        t = MPIEnvironment.wallTime
        var results = [Float](repeating: 0, count: (qEnd - qStart) * (dv + 1))
        let blockList = Array(myBlocks)
        let pairCounter = PairCounter(count: blockList.count)
        let scaleLog2 = ex.scaleLog2
        sortedQ.withUnsafeBufferPointer { sq in
            sortedK.withUnsafeBufferPointer { sk in
                sortedV.withUnsafeBufferPointer { sv in
                    sampleK.withUnsafeBufferPointer { smk in
                        sampleV.withUnsafeBufferPointer { smv in
                            results.withUnsafeMutableBufferPointer { res in
                                let ptrs = BlockPointers(q: sq.baseAddress!, k: sk.baseAddress!, v: sv.baseAddress!,
                                                         sampleK: smk.baseAddress!, sampleV: smv.baseAddress!, results: res.baseAddress!)
                                parallelFor(blockList.count, threads: ex.threads) { b, worker in
                                    let j = blockList[b]
                                    let ws = ex.workspaces[worker]
                                    let qr = partition.range(j, length: nq), kr = partition.range(j, length: nk)
                                    ws.reserveGather(rows: kr.count + samples.positions.count)
                                    for (t, p) in kr.enumerated() {
                                        ws.gather(slot: t, key: ptrs.k + (p - kStart) * d, value: ptrs.v + (p - kStart) * dv)
                                    }
                                    var count = 0
                                    var weights: [Double] = []
                                    for i in samples.positions.indices where !kr.contains(Int(samples.positions[i])) {
                                        ws.gather(slot: kr.count + count, key: ptrs.sampleK + i * d, value: ptrs.sampleV + i * dv)
                                        ws.setSampleWeight(slot: kr.count + count, logWeight: samples.logWeights[i])
                                        if controlVariate { weights.append(samples.weights[i]) }
                                        count += 1
                                    }
                                    if controlVariate { ws.setValueCorrection(nodeValueSum: nodeValueSum, blockKeys: kr.count, sampleWeights: weights) }
                                    ws.runBlock(
                                        queryCount: qr.count, queryTile: AttentionPlan.blockQueryTile, blockKeys: kr.count, sampleCount: count, scaleLog2: scaleLog2,
                                        outsideCount: controlVariate ? nk - kr.count : nil,
                                        queryRow: { ptrs.q + (qr.lowerBound - qStart + $0) * d },
                                        emit: { i, o, l in
                                            let dst = ptrs.results + (qr.lowerBound - qStart + i) * (dv + 1)
                                            dst.update(from: o, count: dv)
                                            dst[dv] = l
                                        })
                                    pairCounter.set(b, qr.count * (kr.count + count))
                                }
                            }
                        }
                    }
                }
            }
        }
        run.report.evaluatedPairs += pairCounter.total
        run.report.computeSeconds += MPIEnvironment.wallTime - t

        // 6. Results back to the owners, in the order the rows arrived; owners merge.
        t = MPIEnvironment.wallTime
        var back = [Float]()
        back.reserveCapacity(querySlotOfReceived.count * (dv + 1))
        for slot in querySlotOfReceived { back += results[slot * (dv + 1) ..< (slot + 1) * (dv + 1)] }
        let returned = try comm.allToAllv(back, sendCounts: receivedQ.counts.map { $0 / (d + 1) * (dv + 1) })
        run.report.bytesSent += 4 * back.count + 8 * ranks
        run.report.bytesReceived += 4 * returned.values.count + 8 * ranks
        returned.values.withUnsafeBufferPointer { r in
            for (k, i) in querySendOrder.order.enumerated() {
                let row = r.baseAddress! + k * (dv + 1)
                let token = myQ.lowerBound + i
                mergePartial(into: ex.outputRow(h, token), logSumExp: ex.lseEntry(h, token), partial: row,
                             partialLogSumExp: row[dv], count: dv, merge: piece.merge)
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

/// Row indices 0..<n grouped by destination rank (stable), and the count for each rank.
func groupedOrder(_ destinations: [Int], ranks: Int) -> (order: [Int], counts: [Int]) {
    var counts = [Int](repeating: 0, count: ranks)
    for r in destinations { counts[r] += 1 }
    var next = [Int](repeating: 0, count: ranks)
    for r in 1..<max(ranks, 1) { next[r] = next[r - 1] + counts[r - 1] }
    var order = [Int](repeating: 0, count: destinations.count)
    for (i, r) in destinations.enumerated() {
        order[next[r]] = i
        next[r] += 1
    }
    return (order, counts)
}

/// Pointers shared by the block workers (each writes disjoint result rows).
struct BlockPointers: @unchecked Sendable {
    let q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>
    let sampleK: UnsafePointer<Float>, sampleV: UnsafePointer<Float>
    let results: UnsafeMutablePointer<Float>
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
