import HyperAttention
import HyperAttentionTestSupport
import Testing

/// The exact kernel against the float64 reference.
@Suite("Exact attention vs float64")
struct ExactAttentionTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var batch: Int, queryHeads: Int, keyHeads: Int, nq: Int, nk: Int, d: Int, dv: Int, causal: Bool
        init(batch: Int = 1, queryHeads: Int = 1, keyHeads: Int = 1, nq: Int, nk: Int, d: Int, dv: Int, causal: Bool) {
            self.batch = batch; self.queryHeads = queryHeads; self.keyHeads = keyHeads
            self.nq = nq; self.nk = nk; self.d = d; self.dv = dv; self.causal = causal
        }
        var testDescription: String {
            "b\(batch) h\(queryHeads)/\(keyHeads) n\(nq)x\(nk) d\(d) dv\(dv)\(causal ? " causal" : "")"
        }
    }

    static let sweep: [Case] = [1, 7, 255, 256, 1000, 4097].flatMap { n in
        [16, 64, 128].flatMap { d in [false, true].map { Case(nq: n, nk: n, d: d, dv: d, causal: $0) } }
    }
    static let shapes: [Case] = [
        Case(batch: 2, queryHeads: 4, keyHeads: 2, nq: 300, nk: 300, d: 32, dv: 32, causal: false),  // GQA
        Case(batch: 1, queryHeads: 6, keyHeads: 1, nq: 129, nk: 129, d: 64, dv: 64, causal: true),  // MQA
        Case(nq: 500, nk: 500, d: 64, dv: 24, causal: true),  // d_v ≠ d, not a multiple of 16
        Case(nq: 333, nk: 333, d: 48, dv: 80, causal: false),
        Case(nq: 100, nk: 777, d: 64, dv: 40, causal: false),  // n_q ≠ n_k
        Case(nq: 1000, nk: 3, d: 16, dv: 16, causal: false),
        Case(batch: 3, queryHeads: 2, keyHeads: 2, nq: 97, nk: 97, d: 8, dv: 5, causal: true),
    ]

    @Test("max relative error ≤ 1e-5", arguments: sweep + shapes)
    func matchesReference(_ c: Case) throws {
        let q = TestData.gaussian([c.batch, c.queryHeads, c.nq, c.d], seed: 1)
        let k = TestData.gaussian([c.batch, c.keyHeads, c.nk, c.d], seed: 2)
        let v = TestData.gaussian([c.batch, c.keyHeads, c.nk, c.dv], seed: 3)
        let r = try attention(query: q, key: k, value: v, options: AttentionOptions(mode: .exact, causal: c.causal))
        #expect(r.output.shape == [c.batch, c.queryHeads, c.nq, c.dv])
        #expect(r.logSumExp.shape == [c.batch, c.queryHeads, c.nq])
        // Every row for small n; for n > 2000 every 5th row plus the last 64 (float64 cost).
        let rows = c.nq <= 2000 ? Array(0..<c.nq) : Array(Set(stride(from: 0, to: c.nq, by: 5)).union((c.nq - 64)..<c.nq)).sorted()
        let ref = try referenceAttention(query: q, key: k, value: v, causal: c.causal, rows: rows)
        let heads = c.batch * c.queryHeads
        let out = ErrorMeasure.selectRows(r.output.scalars, heads: heads, n: c.nq, dim: c.dv, rows: rows)
        let lse = ErrorMeasure.selectRows(r.logSumExp.scalars, heads: heads, n: c.nq, dim: 1, rows: rows)
        #expect(ErrorMeasure.maxRelative(out, ref.output) <= 1e-5)
        #expect(ErrorMeasure.maxAbsoluteOrRelative(lse, ref.logSumExp) <= 1e-5)
    }

    @Test("rank-2 and rank-3 inputs give the same rows as rank 4")
    func lowerRanks() throws {
        let q = TestData.gaussian([3, 50, 16], seed: 4), k = TestData.gaussian([3, 50, 16], seed: 5)
        let v = TestData.gaussian([3, 50, 16], seed: 6)
        let o = AttentionOptions(mode: .exact, causal: true)
        let r3 = try attention(query: q, key: k, value: v, options: o)
        let r4 = try attention(query: try q.reshaped([1, 3, 50, 16]), key: try k.reshaped([1, 3, 50, 16]), value: try v.reshaped([1, 3, 50, 16]), options: o)
        #expect(r3.output.shape == [3, 50, 16])
        #expect(r3.logSumExp.shape == [3, 50])
        #expect(r3.output.scalars == r4.output.scalars)
        let r2 = try attention(query: try q.reshaped([150, 16]), key: try k.reshaped([150, 16]), value: try v.reshaped([150, 16]), options: AttentionOptions(mode: .exact))
        #expect(r2.output.shape == [150, 16])
    }

    /// Logits of magnitude ~10³ (far past exp overflow at 88) must stay finite. Their fp32
    /// rounding (ulp ≈ 6e-5 at 10³) bounds the agreement, so the tolerance scales with them.
    @Test("large logits stay finite (online softmax rescaling)")
    func largeLogits() throws {
        let q = TestData.gaussian([1, 1, 300, 32], seed: 7, scale: 30)
        let k = TestData.gaussian([1, 1, 300, 32], seed: 8, scale: 30)
        let v = TestData.gaussian([1, 1, 300, 32], seed: 9)
        for causal in [false, true] {
            let r = try attention(query: q, key: k, value: v, options: AttentionOptions(mode: .exact, causal: causal))
            let ref = try referenceAttention(query: q, key: k, value: v, causal: causal)
            #expect(r.output.scalars.allSatisfy { $0.isFinite })
            #expect(ErrorMeasure.maxRelative(r.output.scalars, ref.output) <= 1e-3)
            #expect(ErrorMeasure.maxAbsoluteOrRelative(r.logSumExp.scalars, ref.logSumExp) <= 1e-5)
        }
    }

    @Test("bit-identical for every thread count")
    func threadCounts() throws {
        let q = TestData.gaussian([1, 3, 777, 64], seed: 10), k = TestData.gaussian([1, 3, 777, 64], seed: 11)
        let v = TestData.gaussian([1, 3, 777, 40], seed: 12)
        for causal in [false, true] {
            let one = try attention(query: q, key: k, value: v, options: AttentionOptions(mode: .exact, causal: causal, threads: 1))
            for t in [2, 3, 7] {
                let r = try attention(query: q, key: k, value: v, options: AttentionOptions(mode: .exact, causal: causal, threads: t))
                #expect(r.output.scalars == one.output.scalars)
                #expect(r.logSumExp.scalars == one.logSumExp.scalars)
            }
        }
    }

    @Test("useful FLOPs: exact counts 2·n_q·n_k·(d+d_v), about half when causal")
    func flopCount() throws {
        let q = TestData.gaussian([1, 2, 200, 32], seed: 1), k = TestData.gaussian([1, 2, 200, 32], seed: 2)
        let v = TestData.gaussian([1, 2, 200, 16], seed: 3)
        let full = try attention(query: q, key: k, value: v, options: AttentionOptions(mode: .exact))
        #expect(full.stats.evaluatedPairs == 2 * 200 * 200)
        #expect(full.stats.flops == Double(2 * 200 * 200) * 2 * 48)
        let causal = try attention(query: q, key: k, value: v, options: AttentionOptions(mode: .exact, causal: true))
        #expect(causal.stats.evaluatedPairs == 2 * 200 * 201 / 2)
    }
}
