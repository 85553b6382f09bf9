import Foundation
@testable import HyperAttention
import HyperAttentionTestSupport
import Testing

/// Manual microbenchmark of `SortLSH.hash` (rows/s, one thread), against a copy of the previous
/// row-at-a-time implementation. Runs only when the environment sets HYPERATTN_BENCH=1; build in
/// release with `-target-cpu haswell`.
@Suite("sortLSH hash throughput (manual: HYPERATTN_BENCH=1)", .serialized,
       .enabled(if: ProcessInfo.processInfo.environment["HYPERATTN_BENCH"] != nil, "set HYPERATTN_BENCH=1 to run"))
struct SortLSHBenchmark {
    /// 2048 rows stay in L2 (the arithmetic's speed); 32768 rows (8 or 16 MB) stream from memory.
    @Test("rows/s", arguments: [(64, 7, 2048), (128, 7, 2048), (40, 7, 2048), (64, 10, 2048), (128, 16, 2048),
                                (64, 7, 32768), (128, 7, 32768)])
    func throughput(d: Int, bits: Int, n: Int) {
        let lsh = SortLSH(bits: bits, headDim: d, seed: 9, head: 2)
        let rows = TestData.gaussian([n, d], seed: 5).scalars
        var buckets = [UInt16](repeating: 0, count: n), old = buckets
        // The three variants interleaved, best of 60 (600 for the small case) each, so that load from other work on the
        // machine hits them alike.
        var times = [Double](repeating: .infinity, count: 3)
        rows.withUnsafeBufferPointer { x in
            buckets.withUnsafeMutableBufferPointer { b in
                old.withUnsafeMutableBufferPointer { o in
                    func run(_ v: Int) {
                        switch v {
                        case 0: previousHash(lsh, rows: x.baseAddress!, count: n, buckets: o.baseAddress!) { $0 }
                        case 1: lsh.hash(rows: x.baseAddress!, count: n, buckets: b.baseAddress!) { $0 }
                        default: lsh.hash(rows: x.baseAddress!, count: n, buckets: b.baseAddress!)
                        }
                    }
                    for _ in 0..<(n < 10000 ? 600 : 60) {
                        for v in 0..<3 {
                            let s = DispatchTime.now().uptimeNanoseconds
                            run(v)
                            times[v] = min(times[v], Double(DispatchTime.now().uptimeNanoseconds - s) * 1e-9)
                        }
                    }
                }
            }
        }
        let (previous, indexed, contiguous) = (Double(n) / times[0], Double(n) / times[1], Double(n) / times[2])
        #expect(buckets == old)
        print(String(format: "sortLSH hash d=%d bits=%d rows=%d: previous %.2f, index closure %.2f, contiguous %.2f M rows/s (%.1fx)",
                     d, bits, n, previous / 1e6, indexed / 1e6, contiguous / 1e6, contiguous / previous))
    }

    /// The implementation before the 8-hyperplane transposed reduction (commit 2b0bd09).
    @inline(never)
    func previousHash(_ lsh: SortLSH, rows: UnsafePointer<Float>, count: Int, buckets: UnsafeMutablePointer<UInt16>, index: (Int) -> Int) {
        let d = lsh.headDim, bits = lsh.bits
        func grayRank(_ code: Int) -> Int {
            var x = code, shift = 1
            while (x >> shift) != 0 { x ^= x >> shift; shift <<= 1 }
            return x
        }
        lsh.directions.withUnsafeBufferPointer { w in
            for r in 0..<count {
                let x = rows + index(r) * d
                var code = 0
                var j = 0
                while j < bits {
                    code |= signBits(x, w.baseAddress! + j * d, d: d, count: min(4, bits - j)) << j
                    j += 4
                }
                buckets[r] = UInt16(grayRank(code))
            }
        }
    }

    @inline(__always) func signBits(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, d: Int, count: Int) -> Int {
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
        var c = 0
        while c + 16 <= d {
            let xc = x.loadVec16(c)
            a0.addProduct(xc, w.loadVec16(c))
            if count > 1 { a1.addProduct(xc, (w + d).loadVec16(c)) }
            if count > 2 { a2.addProduct(xc, (w + 2 * d).loadVec16(c)) }
            if count > 3 { a3.addProduct(xc, (w + 3 * d).loadVec16(c)) }
            c += 16
        }
        @inline(__always) func sign(_ acc: SIMD16<Float>, _ k: Int) -> Int {
            let wk = w + k * d
            var dot = horizontalSum(acc)
            var t = c
            while t < d { dot += x[t] * wk[t]; t += 1 }
            return dot > 0 ? 1 << k : 0
        }
        var bits = sign(a0, 0)
        if count > 1 { bits |= sign(a1, 1) }
        if count > 2 { bits |= sign(a2, 2) }
        if count > 3 { bits |= sign(a3, 3) }
        return bits
    }
}
