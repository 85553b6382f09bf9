import Synchronization

/// Runs levels of pieces on a pool of workers, each with its own `TileWorkspace`.
package final class PieceExecutor: @unchecked Sendable {
    let plan: AttentionPlan
    package let io: AttentionIO
    package let threads: Int
    let meter: ProgressMeter
    package let workspaces: PerWorker<TileWorkspace>
    private let pairs = Atomic<Int>(0)
    /// Query–key pairs of the HyperAttention blocks run so far, and the worker time they took
    /// (nanoseconds summed over workers): the block kernel's speed on this process's cores.
    private let blockPairs = Atomic<Int>(0), blockNanoseconds = Atomic<Int>(0)
    /// Every stored row's bucket, hashed the first time a piece needs it (then shared by the
    /// pieces and levels of the call).
    package private(set) lazy var rowBuckets = RowBuckets(
        bits: plan.options.lshBits, headDim: plan.shape.headDim, seed: plan.options.seed,
        heads: plan.shape.batch * plan.shape.queryHeads, queryRows: io.queryRows, keyRows: io.keyRows)

    package var evaluatedPairs: Int { pairs.load(ordering: .relaxed) }

    /// The HyperAttention blocks this executor has run: their query–key pairs and the seconds
    /// they took per worker (worker time over `threads`; wall time when every worker is busy).
    /// Exact tiles are not counted, so the figure is the block kernel's speed, comparable with
    /// blocks timed elsewhere whatever the mix of pieces.
    package var blockKernel: (pairs: Int, seconds: Double) {
        (blockPairs.load(ordering: .relaxed), Double(blockNanoseconds.load(ordering: .relaxed)) / 1e9 / Double(max(1, threads)))
    }

    package init(plan: AttentionPlan, io: AttentionIO, threads: Int, meter: ProgressMeter) {
        self.plan = plan
        self.io = io
        self.threads = threads
        self.meter = meter
        let s = plan.shape
        workspaces = PerWorker(count: max(1, threads)) {
            TileWorkspace(queryTile: AttentionPlan.queryTile, keyChunk: AttentionPlan.keyChunk, headDim: s.headDim, valueDim: s.valueDim)
        }
    }

    private enum WorkItem {
        case exactTile(piece: Int, queries: Range<Int>)
        case hyperBlock(piece: Int, block: Int)
    }

    /// Runs one level: pieces with disjoint query rows.
    package func run(_ pieces: [Piece]) {
        // 1. sortLSH order and samples of every HyperAttention piece: the rows' buckets (hashed
        //    in parallel chunks, once per call), then each piece sorted.
        let hyperIndices = pieces.indices.filter { pieces[$0].hyper }
        rowBuckets.prepare(hyperIndices.flatMap { [
            RowBuckets.Need(head: pieces[$0].head, keys: false, rows: pieces[$0].queries),
            RowBuckets.Need(head: pieces[$0].head, keys: true, rows: pieces[$0].keys),
        ] }, threads: threads) { [self] h, keys, row in keys ? keyRow(h, row) : queryRow(h, row) }
        let hashing = hyperIndices.map { HashingJob(plan: plan, piece: pieces[$0], buckets: rowBuckets) }
        let preparations = PreparationTable(count: pieces.count)
        parallelFor(hyperIndices.count, threads: threads) { [self] i, _ in
            preparations[hyperIndices[i]] = prepare(hashing[i])
        }
        // 2. Blocks and tiles, heaviest first (the order does not change any result).
        var items: [(cost: Int, item: WorkItem)] = []
        let tile = AttentionPlan.queryTile
        for (p, piece) in pieces.enumerated() {
            if let prep = preparations[p] {
                for j in 0..<prep.partition.blocks {
                    let nq = prep.partition.range(j, length: piece.queries.count).count
                    let nk = prep.partition.range(j, length: piece.keys.count).count
                    items.append((nq * (nk + prep.samples.positions.count), .hyperBlock(piece: p, block: j)))
                }
            } else {
                var q0 = piece.queries.lowerBound
                while q0 < piece.queries.upperBound {
                    let q1 = min(q0 + tile, piece.queries.upperBound)
                    let keys = piece.causal ? q1 - piece.keys.lowerBound : piece.keys.count
                    items.append(((q1 - q0) * keys, .exactTile(piece: p, queries: q0..<q1)))
                    q0 = q1
                }
            }
        }
        items.sort { $0.cost > $1.cost }
        let work = items
        parallelFor(items.count, threads: threads) { [self] i, worker in
            let ws = workspaces[worker]
            let counted: Int
            switch work[i].item {
            case let .exactTile(p, queries):
                counted = exactTile(pieces[p], queries: queries, ws: ws)
            case let .hyperBlock(p, j):
                let start = monotonicNanoseconds()
                counted = hyperBlock(pieces[p], preparations[p]!, block: j, ws: ws)
                blockNanoseconds.wrappingAdd(monotonicNanoseconds() - start, ordering: .relaxed)
                blockPairs.wrappingAdd(counted, ordering: .relaxed)
            }
            pairs.wrappingAdd(counted, ordering: .relaxed)
            meter.add(work[i].cost)
        }
    }

    // MARK: - Addressing (global token rows → the stored rows of `io`)

    private func kvHead(_ head: Int) -> Int {
        let s = plan.shape
        return (head / s.queryHeads) * s.keyHeads + (head % s.queryHeads) / s.groupSize
    }
    package func queryRow(_ head: Int, _ row: Int) -> UnsafePointer<Float> {
        io.query + (head * io.queryRows.count + row - io.queryRows.lowerBound) * plan.shape.headDim
    }
    package func keyRow(_ head: Int, _ row: Int) -> UnsafePointer<Float> {
        io.key + (kvHead(head) * io.keyRows.count + row - io.keyRows.lowerBound) * plan.shape.headDim
    }
    package func valueRow(_ head: Int, _ row: Int) -> UnsafePointer<Float> {
        io.value + (kvHead(head) * io.keyRows.count + row - io.keyRows.lowerBound) * plan.shape.valueDim
    }
    package func outputRow(_ head: Int, _ row: Int) -> UnsafeMutablePointer<Float> {
        io.output + (head * io.queryRows.count + row - io.queryRows.lowerBound) * plan.shape.valueDim
    }
    package func lseEntry(_ head: Int, _ row: Int) -> UnsafeMutablePointer<Float> {
        io.lse + (head * io.queryRows.count + row - io.queryRows.lowerBound)
    }

    package var scaleLog2: Float { plan.options.effectiveScale(headDim: plan.shape.headDim) * log2e }

    // MARK: - Exact tiles

    /// Exact attention of one query tile against the piece's keys (causal: keys up to the
    /// tile's last query). Returns the number of query–key pairs evaluated.
    private func exactTile(_ piece: Piece, queries: Range<Int>, ws: TileWorkspace) -> Int {
        let s = plan.shape, h = piece.head
        let count = queries.count, width = (count + microCols - 1) / microCols * microCols
        ws.beginTile(count: count, width: width, scaleLog2: scaleLog2) { self.queryRow(h, queries.lowerBound + $0) }
        let first = piece.keys.lowerBound
        let keyCount = piece.causal ? queries.upperBound - first : piece.keys.count
        let rows = KeyValueRows(
            keys: keyRow(h, first), values: valueRow(h, first),
            valueStride: s.valueDim, valuesPadded: s.valueDim % microCols == 0, bias: nil)
        ws.attend(rows: rows, keyCount: keyCount, queryCount: count, width: width,
                  causalOffset: piece.causal ? queries.lowerBound - first : nil, countsAsSamples: false)
        ws.finishTile(count: count) { r, o, l in
            let row = queries.lowerBound + r
            mergePartial(into: outputRow(h, row), logSumExp: lseEntry(h, row), partial: o, partialLogSumExp: l, count: s.valueDim, merge: piece.merge)
        }
        if piece.causal {
            // Query i sees keys first...i.
            let a = queries.lowerBound - first + 1, b = queries.upperBound - first
            return (a + b) * count / 2
        }
        return count * keyCount
    }

    // MARK: - HyperAttention

    private func prepare(_ job: HashingJob) -> HyperPreparation {
        let s = plan.shape, o = plan.options, piece = job.piece
        let queryOrder = job.sortedOrder(keys: false), keyOrder = job.sortedOrder(keys: true)
        let random = CounterRandom(seed: o.seed, head: piece.head, node: job.node, purpose: .samplePositions)
        let samples = SampleSet(estimator: o.estimator, keyCount: piece.keys.count, count: o.samples, random: random)
        var valueSum: [Double] = []
        if o.estimator == .stratifiedControlVariate {
            valueSum = [Double](repeating: 0, count: s.valueDim)
            addRows(valueRow(piece.head, piece.keys.lowerBound), count: piece.keys.count, width: s.valueDim, into: &valueSum)
        }
        let sampleRows = SampleRows(count: samples.positions.count, headDim: s.headDim, valueDim: s.valueDim)
        let keyBase = keyRow(piece.head, piece.keys.lowerBound), valueBase = valueRow(piece.head, piece.keys.lowerBound)
        for (i, p) in samples.positions.enumerated() {
            let row = Int(keyOrder[Int(p)])
            sampleRows.set(i, key: keyBase + row * s.headDim, value: valueBase + row * s.valueDim)
        }
        return HyperPreparation(
            queryOrder: queryOrder, keyOrder: keyOrder,
            partition: BlockPartition(keyCount: piece.keys.count, blockSize: o.blockSize),
            samples: samples, sampleRows: sampleRows, valueSum: valueSum)
    }

    /// One LSH block: its queries against its keys, and against the unmasked samples, merged
    /// (`TileWorkspace.runBlock`). Returns the number of query–key pairs evaluated.
    private func hyperBlock(_ piece: Piece, _ prep: HyperPreparation, block j: Int, ws: TileWorkspace) -> Int {
        let s = plan.shape, h = piece.head
        let d = s.headDim, dv = s.valueDim
        let queryRange = prep.partition.range(j, length: piece.queries.count)
        let keyRange = prep.partition.range(j, length: piece.keys.count)
        let samples = prep.samples
        let blockKeys = keyRange.count
        ws.reserveGather(rows: max(blockKeys, samples.positions.count))
        let keyBase = keyRow(h, piece.keys.lowerBound)
        let valueBase = valueRow(h, piece.keys.lowerBound)
        for (t, p) in keyRange.enumerated() {
            let row = Int(prep.keyOrder[p])
            ws.gather(slot: t, key: keyBase + row * d, value: valueBase + row * dv)
        }
        // The node's samples are shared; those inside this block are masked by their bias.
        let unmasked = ws.setSampleBias(samples, blockKeys: keyRange)
        let controlVariate = plan.options.estimator == .stratifiedControlVariate
        if controlVariate { ws.setValueCorrection(nodeValueSum: prep.valueSum, blockValueSum: ws.blockValueSum(blockKeys: blockKeys), samples: samples, rows: prep.sampleRows) }
        let queryBase = queryRow(h, piece.queries.lowerBound)
        let out = outputRow(h, piece.queries.lowerBound), lse = lseEntry(h, piece.queries.lowerBound)
        let order = prep.queryOrder
        ws.runBlock(
            queryCount: queryRange.count, queryTile: AttentionPlan.blockQueryTile, blockKeys: blockKeys, samples: prep.sampleRows, scaleLog2: scaleLog2,
            outsideCount: controlVariate ? piece.keys.count - blockKeys : nil,
            queryRow: { queryBase + Int(order[queryRange.lowerBound + $0]) * d },
            emit: { i, o, l in
                let row = Int(order[queryRange.lowerBound + i])
                mergePartial(into: out + row * dv, logSumExp: lse + row, partial: o, partialLogSumExp: l, count: dv, merge: piece.merge)
            })
        return queryRange.count * (blockKeys + unmasked)
    }
}

/// Per-piece preparations, written by one worker each (distinct slots).
final class PreparationTable: @unchecked Sendable {
    private var slots: [HyperPreparation?]
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    subscript(i: Int) -> HyperPreparation? {
        get { slots[i] }
        set { slots[i] = newValue }
    }
}

/// Copies `count` floats (short rows: a plain SIMD loop beats a memmove call).
@inline(__always) package func copyRow(from src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, count: Int) {
    var c = 0
    while c + 16 <= count { dst.storeVec16(src.loadVec16(c), c); c += 16 }
    while c < count { dst[c] = src[c]; c += 1 }
}

/// Adds `count` consecutive rows of `width` floats into `sum` in float64, row after row (each
/// column summed in row order, so the same bits however the columns are vectorised).
package func addRows(_ rows: UnsafePointer<Float>, count: Int, width: Int, into sum: inout [Double]) {
    precondition(sum.count == width, "addRows: sum has \(sum.count) columns, rows have \(width)")
    sum.withUnsafeMutableBufferPointer { acc in
        let a = acc.baseAddress!
        for r in 0..<count {
            let row = rows + r * width
            for c in 0..<width { a[c] += Double(row[c]) }
        }
    }
}

/// The sortLSH order of one HyperAttention piece's query and key rows, from their buckets.
final class HashingJob: @unchecked Sendable {
    let piece: Piece
    let node: UInt64
    let bucketCount: Int
    let queryBuckets: UnsafePointer<UInt16>
    let keyBuckets: UnsafePointer<UInt16>

    init(plan: AttentionPlan, piece: Piece, buckets: RowBuckets) {
        self.piece = piece
        node = CounterRandom.nodeID(queries: piece.queries, keys: piece.keys)
        bucketCount = 1 << plan.options.lshBits
        queryBuckets = buckets.buckets(head: piece.head, keys: false, from: piece.queries.lowerBound)
        keyBuckets = buckets.buckets(head: piece.head, keys: true, from: piece.keys.lowerBound)
    }

    func sortedOrder(keys: Bool) -> [Int32] {
        let count = keys ? piece.keys.count : piece.queries.count
        var order = [Int32](repeating: 0, count: count)
        order.withUnsafeMutableBufferPointer { o in
            SortLSH.sortedOrder(buckets: keys ? keyBuckets : queryBuckets, count: count, bucketCount: bucketCount, order: o.baseAddress!)
        }
        return order
    }
}

/// This process's HyperAttention block-kernel speed, measured on a small synthetic problem with
/// the call's options: one head of n = 8 blocks (at least 2m and 1024 rows, at most 32768), run
/// as one non-causal HyperAttention piece at least once and until its blocks have taken
/// `minimumSeconds` of worker time (at most 64 runs). Returns the blocks' query–key pairs and
/// worker seconds, in the units of `PieceExecutor.blockKernel`, so that a distributed call can
/// deal its first rectangles by speed before any of its own blocks has run. The values are fixed
/// (a counter hash), so the same options do the same work on every rank.
package func measureBlockKernel(options: AttentionOptions, headDim: Int, valueDim: Int, minimumSeconds: Double) -> (pairs: Int, seconds: Double) {
    var o = options
    o.mode = .hyper
    o.causal = false
    o.backend = .cpu
    let n = min(32768, max(8 * o.blockSize, 2 * o.samples, 1024))
    let shape = AttentionShape(batch: 1, queryHeads: 1, keyHeads: 1, queryCount: n, keyCount: n, headDim: headDim, valueDim: valueDim)
    func synthetic(_ columns: Int, _ salt: UInt64) -> Tensor {
        Tensor(shape: [1, 1, n, columns]) { x in
            for i in x.indices {
                let z = CounterRandom.mix(UInt64(i) &+ salt &* 0x1_0000_0000)
                x[i] = Float(Int64(bitPattern: z) >> 40) / Float(1 << 23)  // in [-1, 1)
            }
        }
    }
    let q = synthetic(headDim, 1), k = synthetic(headDim, 2), v = synthetic(valueDim, 3)
    var output = Tensor(shape: [n * valueDim])
    var lse = Tensor(shape: [n], repeating: -.infinity)
    var measured = (pairs: 0, seconds: 0.0)
    withAttentionIO(query: q, key: k, value: v, output: &output, lse: &lse, queryRows: 0..<n, keyRows: 0..<n) { io in
        let executor = PieceExecutor(plan: AttentionPlan(shape: shape, options: o), io: io, threads: o.effectiveThreads,
                                     meter: ProgressMeter(total: 1, callback: nil))
        let piece = Piece(head: 0, queries: 0..<n, keys: 0..<n, causal: false, hyper: true, merge: false)
        var runs = 0
        repeat {
            executor.run([piece])
            runs += 1
        } while executor.blockKernel.seconds < minimumSeconds && runs < 64
        measured = executor.blockKernel
    }
    return measured
}
