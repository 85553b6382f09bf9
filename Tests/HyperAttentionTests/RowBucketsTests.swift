@testable import HyperAttention
import HyperAttentionTestSupport
import Testing

@Suite("RowBuckets: each stored row hashed once per call")
struct RowBucketsTests {
    /// Rows of `heads` heads × `rows` stored rows × d, and each row's bucket from `SortLSH.hash`
    /// of its query head (key rows of a grouped head: the query head's hyperplanes).
    @Test("buckets equal SortLSH.hash of the row under its query head, for any needs, chunk edges and GQA")
    func matchesDirectHash() {
        let d = 40, stored = 600..<(600 + 2 * RowBuckets.chunkRows + 77), queryHeads = 4, keyHeads = 2
        let q = UnsafeMutableBufferPointer<Float>.allocate(capacity: queryHeads * stored.count * d)
        let k = UnsafeMutableBufferPointer<Float>.allocate(capacity: keyHeads * stored.count * d)
        defer { q.deallocate(); k.deallocate() }
        _ = q.initialize(from: TestData.gaussian([queryHeads, stored.count, d], seed: 11).scalars)
        _ = k.initialize(from: TestData.gaussian([keyHeads, stored.count, d], seed: 12).scalars)
        let table = RowBuckets(bits: 6, headDim: d, seed: 9, heads: queryHeads, queryRows: stored, keyRows: stored)
        func row(_ head: Int, _ keys: Bool, _ r: Int) -> UnsafePointer<Float> {
            let base = keys ? k : q, h = keys ? head / (queryHeads / keyHeads) : head
            return UnsafePointer(base.baseAddress! + (h * stored.count + r - stored.lowerBound) * d)
        }
        // Overlapping needs across several calls, starting and ending inside chunks.
        let calls: [[RowBuckets.Need]] = [
            [.init(head: 1, keys: false, rows: 700..<2700), .init(head: 3, keys: true, rows: 600..<650)],
            [.init(head: 1, keys: false, rows: 2000..<stored.upperBound), .init(head: 3, keys: true, rows: stored)],
            [.init(head: 0, keys: true, rows: (stored.upperBound - 1)..<stored.upperBound), .init(head: 2, keys: false, rows: stored)],
        ]
        for needs in calls {
            table.prepare(needs, threads: 2, row: row)
            for need in needs {
                let lsh = SortLSH(bits: 6, headDim: d, seed: 9, head: need.head)
                var expected = [UInt16](repeating: 0, count: need.rows.count)
                expected.withUnsafeMutableBufferPointer { e in
                    lsh.hash(rows: row(need.head, need.keys, need.rows.lowerBound), count: need.rows.count, buckets: e.baseAddress!) { $0 }
                }
                let got = Array(UnsafeBufferPointer(start: table.buckets(head: need.head, keys: need.keys, from: need.rows.lowerBound), count: need.rows.count))
                #expect(got == expected, "head \(need.head) keys \(need.keys) rows \(need.rows)")
            }
        }
    }

}
