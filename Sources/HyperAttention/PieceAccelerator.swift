/// Computes pieces of an attention call on another device (a GPU) for the sequence-parallel
/// layer, which keeps the rows, the exchanges and the merges on the host. Two kinds of work:
///
/// - the pieces that lie inside one rank's shard (`ShardPieces`), run as the single-process
///   call would run them, every level in order;
/// - the LSH blocks of a HyperAttention rectangle spanning ranks that this rank was dealt, with
///   their rows gathered (`BlockBatch`): each query row's attention over its block's keys plus
///   the rectangle's sampled keys.
///
/// The core has no implementation; `HyperAttentionCUDA` has one (`CUDAPieceAccelerator`).
/// One call at a time per instance.
package protocol PieceAccelerator: AnyObject {
    /// A line naming the device, for reports.
    var deviceDescription: String { get }
    /// Runs `job.levels`, level after level (each level's pieces write or lse-merge into rows
    /// that earlier levels wrote, as in one process), into `job.output` and `job.logSumExp`.
    /// Rows that no piece touches keep their values. Returns the query–key pairs evaluated.
    func runPieces(_ job: ShardPieces, options: AttentionOptions) throws -> Int
    /// Computes the batch's blocks and hands each query slot's (o, lse) to `batch.emit`.
    /// - Parameter exchangeBlockSums: with the stratified control variate, called once with Σ v
    ///   over each of this batch's blocks (`dv` float64 per block, in `batch.blocks` order); it
    ///   returns the sums of all `batch.blockCount` blocks of the rectangle in block order (from
    ///   every rank that holds some), from which the correction of each block follows as in one
    ///   process.
    func runBlocks(_ batch: BlockBatch, options: AttentionOptions, exchangeBlockSums: ([Double]) throws -> [Double]) throws
}

/// Pieces inside the rows one process holds: Q, O and lse rows `queryOrigin ..< queryOrigin +
/// shape.queryCount` and K, V rows `keyOrigin ..< keyOrigin + shape.keyCount` of every head,
/// laid out `[b, h, rows, d]`. Pieces name rows by global token index.
package struct ShardPieces {
    package var shape: AttentionShape
    package var queryOrigin: Int
    package var keyOrigin: Int
    /// The pieces (all heads) of each level of the recursion that runs here, in execution order.
    package var levels: [[Piece]]
    package var query: UnsafeBufferPointer<Float>
    package var key: UnsafeBufferPointer<Float>
    package var value: UnsafeBufferPointer<Float>
    package var output: UnsafeMutableBufferPointer<Float>
    package var logSumExp: UnsafeMutableBufferPointer<Float>

    package init(shape: AttentionShape, queryOrigin: Int, keyOrigin: Int, levels: [[Piece]],
                 query: UnsafeBufferPointer<Float>, key: UnsafeBufferPointer<Float>, value: UnsafeBufferPointer<Float>,
                 output: UnsafeMutableBufferPointer<Float>, logSumExp: UnsafeMutableBufferPointer<Float>) {
        self.shape = shape
        self.queryOrigin = queryOrigin
        self.keyOrigin = keyOrigin
        self.levels = levels
        self.query = query
        self.key = key
        self.value = value
        self.output = output
        self.logSumExp = logSumExp
    }

    /// Pieces in the shard's own row coordinates.
    package var localLevels: [[Piece]] {
        levels.map { level in
            level.map {
                var p = $0
                p.queries = ($0.queries.lowerBound - queryOrigin)..<($0.queries.upperBound - queryOrigin)
                p.keys = ($0.keys.lowerBound - keyOrigin)..<($0.keys.upperBound - keyOrigin)
                return p
            }
        }
    }
}

/// Some LSH blocks of one HyperAttention rectangle (one query head), their rows gathered into
/// slots: query slots `querySlots` and key slots `keySlots` of block `blocks[i]` hold its rows in
/// the rectangle's sorted order. Block `j` of the rectangle pairs sorted query positions
/// `BlockPartition.range(j, length: n_q)` with sorted key positions `range(j, length: n_k)`;
/// every query of it attends to the block's keys and to the rectangle's samples (positions in
/// sorted key order, weighted), a sample inside the block's own keys left out.
package struct BlockBatch {
    package struct Block: Sendable, Equatable {
        /// The block's index in the rectangle.
        package var index: Int
        package var querySlots: Range<Int>
        package var keySlots: Range<Int>
        /// Its keys' sorted positions in the rectangle (what samples are compared with).
        package var keys: Range<Int>
        package init(index: Int, querySlots: Range<Int>, keySlots: Range<Int>, keys: Range<Int>) {
            self.index = index
            self.querySlots = querySlots
            self.keySlots = keySlots
            self.keys = keys
        }
    }
    package var headDim: Int
    package var valueDim: Int
    package var querySlotCount: Int
    package var keySlotCount: Int
    package var blocks: [Block]
    /// Blocks of the whole rectangle, and its key count n_k.
    package var blockCount: Int
    package var keyCount: Int
    package var samples: SampleSet
    /// Row pointers (d or d_v floats) of each slot and each sample.
    package var queryRow: (Int) -> UnsafePointer<Float>
    package var keyRow: (Int) -> UnsafePointer<Float>
    package var valueRow: (Int) -> UnsafePointer<Float>
    package var sampleKey: (Int) -> UnsafePointer<Float>
    package var sampleValue: (Int) -> UnsafePointer<Float>
    /// Receives each query slot's normalised o (d_v floats) and its lse (natural log).
    package var emit: (_ slot: Int, _ output: UnsafePointer<Float>, _ logSumExp: Float) -> Void

    package init(headDim: Int, valueDim: Int, querySlotCount: Int, keySlotCount: Int, blocks: [Block], blockCount: Int,
                 keyCount: Int, samples: SampleSet,
                 queryRow: @escaping (Int) -> UnsafePointer<Float>, keyRow: @escaping (Int) -> UnsafePointer<Float>,
                 valueRow: @escaping (Int) -> UnsafePointer<Float>, sampleKey: @escaping (Int) -> UnsafePointer<Float>,
                 sampleValue: @escaping (Int) -> UnsafePointer<Float>,
                 emit: @escaping (_ slot: Int, _ output: UnsafePointer<Float>, _ logSumExp: Float) -> Void) {
        self.headDim = headDim
        self.valueDim = valueDim
        self.querySlotCount = querySlotCount
        self.keySlotCount = keySlotCount
        self.blocks = blocks
        self.blockCount = blockCount
        self.keyCount = keyCount
        self.samples = samples
        self.queryRow = queryRow
        self.keyRow = keyRow
        self.valueRow = valueRow
        self.sampleKey = sampleKey
        self.sampleValue = sampleValue
        self.emit = emit
    }

    /// Where sample `i` is among key rows laid out as the key slots followed by the samples: the
    /// slot of its row when it lies in one of the batch's blocks (so that "inside the block"
    /// is a comparison of positions in that layout), else `keySlotCount + i`.
    package func localSamplePositions() -> [Int32] {
        let sorted = blocks.sorted { $0.keys.lowerBound < $1.keys.lowerBound }
        return samples.positions.enumerated().map { i, p32 in
            let p = Int(p32)
            var lo = 0, hi = sorted.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if sorted[mid].keys.upperBound <= p { lo = mid + 1 } else { hi = mid }
            }
            if lo < sorted.count, sorted[lo].keys.contains(p) {
                return Int32(sorted[lo].keySlots.lowerBound + p - sorted[lo].keys.lowerBound)
            }
            return Int32(keySlotCount + i)
        }
    }
}
