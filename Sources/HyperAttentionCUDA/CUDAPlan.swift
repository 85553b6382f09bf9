import HyperAttention

/// The host half of one level of the GPU plan: every piece of the level (all heads) as flat
/// integer tables for the kernels. Built from `AttentionPlan.levels(head:)`, so the GPU runs the
/// CPU path's pieces, in the CPU path's level order, with the CPU path's hash directions
/// (`SortLSH`) and samples (`SampleSet`) from the same `CounterRandom` keys.
///
/// Buckets: the hyperplanes depend only on the query head (`SortLSH(bits:headDim:seed:head:)`),
/// so a row's bucket is the same at every level. Each row is hashed once per call into a per-row
/// bucket array (`HostPlan`'s hash segments) laid out by query head, independent of the level:
/// Q rows of query head h at `h·n_q + row`, then K rows seen by query head h (its kv head's rows,
/// hashed with h's directions) at `b·h_q·n_q + h·n_k + row`. A sort segment reads its rows'
/// buckets from there (`bucketOffset(…)`).
struct HostLevel {
    static let segmentFields = 9
    static let hashSegmentFields = 9
    static let tileFields = 16
    static let tileRows = 128
    /// Rows per warp of the hash kernel.
    static let hashRowsPerChunk = 1024
    static let flagMerge: Int32 = 1
    static let flagControlVariate: Int32 = 2
    /// Threads per CTA of `cv_block_sums` (the kernel's `CV_WARPS` warps) and of `cv_finish`:
    /// their row groups fix the order of the sums, so the single-GPU and the distributed launches
    /// must agree.
    static let controlBlockThreads = 256
    static let controlFinishThreads = 1024
    /// Whether the sort counts and scatters through shared memory: ≤ 256 buckets (the kernels'
    /// `SORT_SMEM_BUCKETS`), so chunks of ≤ 2048 rows (`init` sizes them at max(1024, 8·2^bits)).
    /// Then `count_buckets` stores every count (no zeroing needed) and `scatter_order_local`
    /// scatters; otherwise the counts are zeroed, added with global atomics and scattered by
    /// `scatter_order`.
    static func sortsInSharedMemory(lshBits: Int) -> Bool { lshBits <= 8 }

    /// Sort segments (the Q rows and the K rows of each HyperAttention piece): tensor, stored
    /// head, first row, length, offset of the first row's bucket in the bucket array, offset in
    /// the order array, offset of the counts, chunks, rows per chunk.
    var segments: [Int32] = []
    /// (segment, chunk) of each warp of the count and scatter kernels.
    var chunks: [Int32] = []
    /// The entries of `chunks` whose histogram `count_buckets` computes: those of segments that
    /// the hash kernel does not count itself (see `hashSegments`). Filled by `HostPlan`.
    var countChunks: [Int32] = []
    var orderLength = 0
    var countLength = 0
    /// Rows to hash, per (tensor, query head): the union of the level's sort segments' rows.
    var hashRanges: [(tensor: Int, queryHead: Int, storedHead: Int, rows: Range<Int>)] = []
    /// Hash segments (filled by `HostPlan` only, for the whole call): tensor, stored head, first
    /// row, length, offset of the query head's directions, offset of the first row's bucket, rows
    /// per chunk, and the offset of the counts and the chunk count of the sort segment with
    /// exactly these rows and chunks, whose histogram the hash kernel then writes (with ≤ 256
    /// buckets; else −1 and 0). Every row of every sort segment lies in exactly one hash segment.
    var hashSegments: [Int32] = []
    /// (hash segment, chunk) of each warp of the hash kernel.
    var hashChunks: [Int32] = []
    /// The hyperplanes of each query head that hashes, `bits × headDim` each.
    var directions: [Float] = []
    /// Length of the per-row bucket array (u16): b·h_q·(n_q + n_k) when anything hashes.
    var bucketLength = 0
    /// Tile descriptors of the attention kernel, heaviest first.
    var tiles: [Int32] = []
    var samplePositions: [Int32] = []
    var sampleLog2Weights: [Float] = []
    var sampleWeights: [Float] = []
    /// Control variate: one row per LSH block, one per piece.
    var controlBlocks: [Int32] = []
    var controlPieces: [Int32] = []
    /// Query–key pairs evaluated (as the CPU path counts them).
    var evaluatedPairs = 0

    var segmentCount: Int { segments.count / HostLevel.segmentFields }
    var chunkCount: Int { chunks.count / 2 }
    var countChunkCount: Int { countChunks.count / 2 }
    var hashSegmentCount: Int { hashSegments.count / HostLevel.hashSegmentFields }
    var hashChunkCount: Int { hashChunks.count / 2 }

    /// Offset in the per-row bucket array of row `row` of tensor `tensor` (0 = Q, 1 = K) as hashed
    /// with the directions of query head `queryHead` (global index b·h_q + h).
    static func bucketOffset(tensor: Int, queryHead: Int, row: Int, shape: AttentionShape) -> Int {
        tensor == 0 ? queryHead * shape.queryCount + row
            : shape.batch * shape.queryHeads * shape.queryCount + queryHead * shape.keyCount + row
    }
    var tileCount: Int { tiles.count / HostLevel.tileFields }
    var controlBlockCount: Int { controlBlocks.count / 7 }
    var controlPieceCount: Int { controlPieces.count / 7 }

    /// The levels of a call, in execution order.
    static func levels(shape: AttentionShape, options: AttentionOptions) -> [HostLevel] {
        let plan = AttentionPlan(shape: shape, options: options)
        var pieces: [[Piece]] = []
        for h in 0..<(shape.batch * shape.queryHeads) {
            for (i, level) in plan.levels(head: h).enumerated() {
                if pieces.count <= i { pieces.append([]) }
                pieces[i] += level
            }
        }
        return pieces.map { HostLevel(pieces: $0, shape: shape, options: options) }
    }

    init() {}

    /// - Parameters:
    ///   - pieces: in the coordinates of `shape`'s rows.
    ///   - origin: the global token index of row 0 of the queries and of the keys (a rank's shard
    ///     under MPI; 0 for a whole problem). Pieces draw their samples from the random stream of
    ///     their global node (`CounterRandom.nodeID`), so a shard's pieces get the whole
    ///     problem's samples.
    init(pieces: [Piece], shape: AttentionShape, options: AttentionOptions, origin: (queries: Int, keys: Int) = (0, 0)) {
        let buckets = 1 << options.lshBits
        // Rows per count/scatter chunk: the counts table is buckets × chunks per segment.
        let rowsPerChunk = max(1024, buckets * 8)
        var tileList: [(cost: Int, fields: [Int32])] = []
        func kvHead(_ h: Int) -> Int { (h / shape.queryHeads) * shape.keyHeads + (h % shape.queryHeads) / shape.groupSize }
        for piece in pieces {
            let kv = kvHead(piece.head)
            let mergeFlag = piece.merge ? HostLevel.flagMerge : 0
            let nq = piece.queries.count, nk = piece.keys.count
            guard piece.hyper else {
                var q0 = piece.queries.lowerBound
                while q0 < piece.queries.upperBound {
                    let q1 = min(q0 + HostLevel.tileRows, piece.queries.upperBound)
                    let keys = piece.causal ? q1 - piece.keys.lowerBound : nk
                    tileList.append(((q1 - q0) * keys, [
                        Int32(piece.head), Int32(kv), Int32(q0), Int32(q1 - q0), Int32(piece.keys.lowerBound), Int32(keys),
                        piece.causal ? 1 : 0, 0, 0, -1, -1, 0, 0, mergeFlag, 0, 0,
                    ]))
                    if piece.causal {
                        let a = q0 - piece.keys.lowerBound + 1, b = q1 - piece.keys.lowerBound
                        evaluatedPairs += (a + b) * (q1 - q0) / 2
                    } else {
                        evaluatedPairs += (q1 - q0) * nk
                    }
                    q0 = q1
                }
                continue
            }
            let node = CounterRandom.nodeID(queries: (piece.queries.lowerBound + origin.queries)..<(piece.queries.upperBound + origin.queries),
                                            keys: (piece.keys.lowerBound + origin.keys)..<(piece.keys.upperBound + origin.keys))
            var orderOffsets: [Int] = []
            // K rows are hashed with the query head's directions (GQA: per query head).
            for (tensor, head, rows) in [(0, piece.head, piece.queries), (1, kv, piece.keys)] {
                let chunkCount = (rows.count + rowsPerChunk - 1) / rowsPerChunk
                for c in 0..<chunkCount { chunks += [Int32(segmentCount), Int32(c)] }
                let bucketOffset = HostLevel.bucketOffset(tensor: tensor, queryHead: piece.head, row: rows.lowerBound, shape: shape)
                segments += [
                    Int32(tensor), Int32(head), Int32(rows.lowerBound), Int32(rows.count), Int32(bucketOffset),
                    Int32(orderLength), Int32(countLength), Int32(chunkCount), Int32(rowsPerChunk),
                ]
                if !rows.isEmpty { hashRanges.append((tensor: tensor, queryHead: piece.head, storedHead: head, rows: rows)) }
                orderOffsets.append(orderLength)
                orderLength += rows.count
                countLength += buckets * chunkCount
            }
            let random = CounterRandom(seed: options.seed, head: piece.head, node: node, purpose: .samplePositions)
            let samples = SampleSet(estimator: options.estimator, keyCount: nk, count: options.samples, random: random)
            let sampleOffset = samplePositions.count, sampleCount = samples.positions.count
            samplePositions += samples.positions
            sampleLog2Weights += samples.logWeights
            sampleWeights += samples.weights.map { Float($0) }
            let controlVariate = options.estimator == .stratifiedControlVariate
            let partition = BlockPartition(keyCount: nk, blockSize: options.blockSize)
            let firstBlock = controlBlockCount
            for j in 0..<partition.blocks {
                let qr = partition.range(j, length: nq), kr = partition.range(j, length: nk)
                let blockRow = controlBlockCount
                controlBlocks += [Int32(kv), Int32(piece.keys.lowerBound), Int32(orderOffsets[1]), Int32(kr.lowerBound), Int32(kr.count), Int32(sampleOffset), Int32(sampleCount)]
                let unmasked = samples.positions.filter { !kr.contains(Int($0)) }.count
                evaluatedPairs += qr.count * (kr.count + unmasked)
                var t0 = qr.lowerBound
                while t0 < qr.upperBound {
                    let t1 = min(t0 + HostLevel.tileRows, qr.upperBound)
                    tileList.append(((t1 - t0) * (kr.count + sampleCount), [
                        Int32(piece.head), Int32(kv), Int32(t0), Int32(t1 - t0), Int32(kr.lowerBound), Int32(kr.count), 0,
                        Int32(piece.queries.lowerBound), Int32(piece.keys.lowerBound), Int32(orderOffsets[0]), Int32(orderOffsets[1]),
                        Int32(sampleOffset), Int32(sampleCount), mergeFlag | (controlVariate ? HostLevel.flagControlVariate : 0),
                        Int32(blockRow), Int32(nk - kr.count),
                    ]))
                    t0 = t1
                }
            }
            controlPieces += [Int32(firstBlock), Int32(partition.blocks), Int32(kv), Int32(piece.keys.lowerBound), Int32(orderOffsets[1]), Int32(sampleOffset), Int32(sampleCount)]
        }
        // Heaviest tiles first (the order changes no result: tiles of a level own disjoint rows).
        let order = tileList.indices.sorted { tileList[$0].cost != tileList[$1].cost ? tileList[$0].cost > tileList[$1].cost : $0 < $1 }
        for i in order { tiles += tileList[i].fields }
    }
}

/// Every level of a call in one set of tables, so that hashing, the sort and the control variate
/// of all levels run as one launch each (the pieces of every level are known up front). The tiles
/// stay grouped by level: levels run one after another, as on the CPU, because a later level
/// lse-merges into the rows an earlier one wrote.
struct HostPlan {
    /// The levels' tables concatenated, each level's offsets (sorted orders, counts, samples,
    /// control-variate rows) shifted past the levels before it; bucket offsets need no shift (the
    /// bucket array's layout does not depend on the level). Plus the call's hash segments: each
    /// (tensor, query head) row that some level sorts is hashed once.
    var tables = HostLevel()
    /// Each level's tiles in `tables.tiles` (first tile, count) and whether it has
    /// HyperAttention pieces; in execution order.
    var levels: [(firstTile: Int, tileCount: Int, hyper: Bool)] = []

    init(shape: AttentionShape, options: AttentionOptions) {
        self.init(levels: HostLevel.levels(shape: shape, options: options), shape: shape, options: options)
    }

    /// Appends a level's table of records (`fields` Int32s each) to the call's, adding to each
    /// listed field the offset of the levels before it.
    private static func appendShifted(_ records: [Int32], fields: Int, shifts: [(field: Int, by: Int32)], to table: inout [Int32]) {
        let first = table.count
        table += records
        for r in stride(from: first, to: table.count, by: fields) {
            for (field, by) in shifts { table[r + field] += by }
        }
    }

    init(levels parts: [HostLevel], shape: AttentionShape, options: AttentionOptions) {
        var t = HostLevel()
        for p in parts {
            let seg0 = Int32(t.segmentCount), ord0 = Int32(t.orderLength)
            let cnt0 = Int32(t.countLength), smp0 = Int32(t.samplePositions.count), blk0 = Int32(t.controlBlockCount)
            Self.appendShifted(p.segments, fields: HostLevel.segmentFields, shifts: [(5, ord0), (6, cnt0)], to: &t.segments)
            for i in 0..<p.chunkCount { t.chunks += [p.chunks[2 * i] + seg0, p.chunks[2 * i + 1]] }
            t.hashRanges += p.hashRanges
            levels.append((firstTile: t.tileCount, tileCount: p.tileCount, hyper: p.segmentCount > 0))
            for i in 0..<p.tileCount {
                var f = Array(p.tiles[i * HostLevel.tileFields..<(i + 1) * HostLevel.tileFields])
                if f[9] >= 0 {  // HyperAttention tile: sorted orders, samples, control-variate row
                    f[9] += ord0
                    f[10] += ord0
                    f[11] += smp0
                    f[14] += blk0
                }
                t.tiles += f
            }
            t.samplePositions += p.samplePositions
            t.sampleLog2Weights += p.sampleLog2Weights
            t.sampleWeights += p.sampleWeights
            Self.appendShifted(p.controlBlocks, fields: 7, shifts: [(2, ord0), (5, smp0)], to: &t.controlBlocks)
            Self.appendShifted(p.controlPieces, fields: 7, shifts: [(0, blk0), (4, ord0), (5, smp0)], to: &t.controlPieces)
            t.orderLength += p.orderLength
            t.countLength += p.countLength
            t.evaluatedPairs += p.evaluatedPairs
        }
        // Hash segments: per (query head, tensor), the union of the rows that some level sorts,
        // as disjoint ranges (overlapping or adjacent ranges merged), each hashed with the query
        // head's directions into the bucket array at `HostLevel.bucketOffset`.
        var ranges: [Int: [(storedHead: Int, rows: Range<Int>)]] = [:]
        for r in t.hashRanges { ranges[2 * r.queryHead + r.tensor, default: []].append((r.storedHead, r.rows)) }
        if !ranges.isEmpty { t.bucketLength = shape.batch * shape.queryHeads * (shape.queryCount + shape.keyCount) }
        var directionOffset: [Int: Int] = [:]
        // With ≤ 256 buckets, a hash segment whose rows are exactly one sort segment's writes
        // that segment's histogram (in the sort's chunks), and count_buckets skips it (non-causal
        // calls: every segment).
        let fusedCount = HostLevel.sortsInSharedMemory(lshBits: options.lshBits)
        /// A sort segment's rows as (bucket offset of its first row, length), in one integer.
        func rowsKey(bucketOffset: Int, count: Int) -> Int { bucketOffset << 32 | count }
        var segmentWithRows: [Int: Int] = [:]
        for sg in 0..<t.segmentCount {
            let f = sg * HostLevel.segmentFields
            let key = rowsKey(bucketOffset: Int(t.segments[f + 4]), count: Int(t.segments[f + 3]))
            if segmentWithRows[key] == nil { segmentWithRows[key] = sg }
        }
        var countedByHash = [Bool](repeating: false, count: t.segmentCount)
        for key in ranges.keys.sorted() {
            let queryHead = key / 2, tensor = key % 2
            if directionOffset[queryHead] == nil {
                directionOffset[queryHead] = t.directions.count
                t.directions += SortLSH(bits: options.lshBits, headDim: shape.headDim, seed: options.seed, head: queryHead).directions
            }
            let list = ranges[key]!.sorted { $0.rows.lowerBound < $1.rows.lowerBound }
            var merged: [Range<Int>] = []
            for (storedHead, rows) in list {
                precondition(storedHead == list[0].storedHead, "one stored head per (query head, tensor)")
                if let last = merged.last, rows.lowerBound <= last.upperBound {
                    merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, rows.upperBound)
                } else {
                    merged.append(rows)
                }
            }
            for rows in merged {
                let bucketOffset = HostLevel.bucketOffset(tensor: tensor, queryHead: queryHead, row: rows.lowerBound, shape: shape)
                // The sort segment with exactly these rows, if any: the hash kernel counts it.
                let counted = fusedCount ? segmentWithRows[rowsKey(bucketOffset: bucketOffset, count: rows.count)] : nil
                let rowsPerChunk = counted.map { Int(t.segments[$0 * HostLevel.segmentFields + 8]) } ?? HostLevel.hashRowsPerChunk
                let chunkCount = (rows.count + rowsPerChunk - 1) / rowsPerChunk
                for c in 0..<chunkCount { t.hashChunks += [Int32(t.hashSegmentCount), Int32(c)] }
                t.hashSegments += [
                    Int32(tensor), Int32(list[0].storedHead), Int32(rows.lowerBound), Int32(rows.count), Int32(directionOffset[queryHead]!),
                    Int32(bucketOffset), Int32(rowsPerChunk),
                    counted.map { t.segments[$0 * HostLevel.segmentFields + 6] } ?? -1,
                    counted.map { t.segments[$0 * HostLevel.segmentFields + 7] } ?? 0,
                ]
                if let counted { countedByHash[counted] = true }
            }
        }
        for c in 0..<t.chunkCount where !countedByHash[Int(t.chunks[2 * c])] { t.countChunks += [t.chunks[2 * c], t.chunks[2 * c + 1]] }
        tables = t
    }
}
