/// The sortLSH bucket of every stored query and key row under its query head's hyperplanes,
/// each computed at most once per call.
///
/// The hyperplanes depend only on the query head (`SortLSH(bits:headDim:seed:head:)`), so a row's
/// bucket is the same in every piece and at every level of the causal recursion, where a row is
/// on the query or key side of a rectangle at up to log2(n / minSeqLen) levels. Rows are hashed in
/// fixed chunks of `chunkRows` stored rows, the first time a piece needs any row of the chunk.
/// Key rows are hashed per query head (grouped-query heads share K rows, not hyperplanes).
///
/// `prepare` is called from one thread at a time (it hashes on the executor's workers); the
/// buckets it has filled are read by any thread afterwards.
package final class RowBuckets: @unchecked Sendable {
    /// Rows per hashing chunk (one worker's unit of work).
    package static let chunkRows = 2048

    /// One side's rows of some head that a piece needs: stored (global) rows `rows`.
    package struct Need {
        package var head: Int
        package var keys: Bool
        package var rows: Range<Int>
        package init(head: Int, keys: Bool, rows: Range<Int>) {
            self.head = head
            self.keys = keys
            self.rows = rows
        }
    }

    private let bits: Int, headDim: Int, seed: UInt64
    private let queryRows: Range<Int>, keyRows: Range<Int>
    private var hashes: [SortLSH?]
    /// [head][stored row − first stored row], per side.
    private let queryBuckets: UnsafeMutableBufferPointer<UInt16>
    private let keyBuckets: UnsafeMutableBufferPointer<UInt16>
    /// Whether each chunk is filled, [head][chunk], per side.
    private var queryDone: [Bool], keyDone: [Bool]

    package init(bits: Int, headDim: Int, seed: UInt64, heads: Int, queryRows: Range<Int>, keyRows: Range<Int>) {
        self.bits = bits
        self.headDim = headDim
        self.seed = seed
        self.queryRows = queryRows
        self.keyRows = keyRows
        hashes = Array(repeating: nil, count: heads)
        queryBuckets = .allocate(capacity: max(1, heads * queryRows.count))
        keyBuckets = .allocate(capacity: max(1, heads * keyRows.count))
        queryDone = Array(repeating: false, count: heads * RowBuckets.chunks(queryRows.count))
        keyDone = Array(repeating: false, count: heads * RowBuckets.chunks(keyRows.count))
    }

    deinit {
        queryBuckets.deallocate()
        keyBuckets.deallocate()
    }

    private static func chunks(_ rows: Int) -> Int { (rows + chunkRows - 1) / chunkRows }

    /// The hyperplanes of query head `head`.
    package func lsh(head: Int) -> SortLSH {
        if let h = hashes[head] { return h }
        let h = SortLSH(bits: bits, headDim: headDim, seed: seed, head: head)
        hashes[head] = h
        return h
    }

    /// Hashes, on `threads` workers, every chunk of the needed rows not hashed yet. `row(head,
    /// keys, stored row)` is the row's first float (rows of one head and side are consecutive).
    package func prepare(_ needs: [Need], threads: Int, row: (Int, Bool, Int) -> UnsafePointer<Float>) {
        var work: [HashJob] = []
        for need in needs where !need.rows.isEmpty {
            let side = need.keys ? keyRows : queryRows
            precondition(need.rows.lowerBound >= side.lowerBound && need.rows.upperBound <= side.upperBound,
                         "RowBuckets: rows \(need.rows) outside the stored rows \(side)")
            let perHead = RowBuckets.chunks(side.count)
            let lo = (need.rows.lowerBound - side.lowerBound) / RowBuckets.chunkRows
            let hi = (need.rows.upperBound - side.lowerBound - 1) / RowBuckets.chunkRows
            for c in lo...hi {
                let flag = need.head * perHead + c
                if need.keys ? keyDone[flag] : queryDone[flag] { continue }
                if need.keys { keyDone[flag] = true } else { queryDone[flag] = true }
                let local = (c * RowBuckets.chunkRows)..<min(side.count, (c + 1) * RowBuckets.chunkRows)
                let out = (need.keys ? keyBuckets : queryBuckets).baseAddress! + need.head * side.count + local.lowerBound
                work.append(HashJob(lsh: lsh(head: need.head), first: row(need.head, need.keys, side.lowerBound + local.lowerBound),
                                    count: local.count, out: out))
            }
        }
        let jobs = work
        parallelFor(jobs.count, threads: threads) { i, _ in jobs[i].run() }
    }

    /// The buckets of stored rows starting at `row` (filled by an earlier `prepare`).
    package func buckets(head: Int, keys: Bool, from row: Int) -> UnsafePointer<UInt16> {
        let side = keys ? keyRows : queryRows
        return UnsafePointer((keys ? keyBuckets : queryBuckets).baseAddress! + head * side.count + row - side.lowerBound)
    }
}

/// One chunk of consecutive rows to hash.
private struct HashJob: @unchecked Sendable {
    let lsh: SortLSH
    let first: UnsafePointer<Float>
    let count: Int
    let out: UnsafeMutablePointer<UInt16>
    func run() { lsh.hash(rows: first, count: count, buckets: out) }
}
