import Foundation
import HyperAttention
import HyperAttentionTestSupport
import Testing

/// HyperAttention: where it must equal exact, unbiasedness, determinism, and the causal recursion.
@Suite("HyperAttention")
struct HyperAttentionTests {
    func inputs(b: Int = 1, hq: Int = 1, hkv: Int = 1, n: Int, nk: Int? = nil, d: Int, dv: Int? = nil, seed: UInt64 = 1) -> (Tensor, Tensor, Tensor) {
        (TestData.gaussian([b, hq, n, d], seed: seed),
         TestData.gaussian([b, hkv, nk ?? n, d], seed: seed + 1),
         TestData.gaussian([b, hkv, nk ?? n, dv ?? d], seed: seed + 2))
    }

    @Test("below minSeqLen hyper is the exact kernel, bit for bit", arguments: [false, true])
    func shortIsExact(causal: Bool) throws {
        let (q, k, v) = inputs(hq: 2, n: 1500, d: 64)
        let hyper = try attention(query: q, key: k, value: v, options: AttentionOptions(mode: .hyper, causal: causal, blockSize: 64, samples: 32, minSeqLen: 2048))
        let exact = try attention(query: q, key: k, value: v, options: AttentionOptions(mode: .exact, causal: causal))
        #expect(hyper.output.scalars == exact.output.scalars)
        #expect(hyper.logSumExp.scalars == exact.logSumExp.scalars)
    }

    @Test("one block holding every key is exact (non-causal and the whole causal recursion)", arguments: [false, true])
    func oneBlockIsExact(causal: Bool) throws {
        let (q, k, v) = inputs(b: 2, hq: 2, hkv: 1, n: 1001, d: 32, dv: 24)
        for estimator in ResidualEstimator.allCases {
            let o = AttentionOptions(mode: .hyper, causal: causal, blockSize: 4096, samples: 16, minSeqLen: 100, estimator: estimator)
            let r = try attention(query: q, key: k, value: v, options: o)
            let ref = try referenceAttention(query: q, key: k, value: v, causal: causal)
            #expect(ErrorMeasure.maxRelative(r.output.scalars, ref.output) <= 1e-5, "\(estimator)")
            #expect(ErrorMeasure.maxAbsoluteOrRelative(r.logSumExp.scalars, ref.logSumExp) <= 1e-5, "\(estimator)")
        }
    }

    /// Over many seeds, the mean of the unnormalised estimates o·e^lse (Σ_k w_k v_k) and e^lse
    /// (Σ_k w_k) converges to the exact sums: the block part is exact and the sampled residual is
    /// unbiased, whatever the hash directions.
    @Test("the residual estimator is unbiased", arguments: [ResidualEstimator.uniform, .stratified, .stratifiedControlVariate])
    func unbiased(estimator: ResidualEstimator) throws {
        let n = 512, d = 16, dv = 4, seeds = 400
        let (q, k, v) = inputs(n: n, d: d, dv: dv, seed: 21)
        let rows = [0, 17, 255, 511]
        let ref = try referenceAttention(query: q, key: k, value: v, rows: rows)
        var sum = [Double](repeating: 0, count: rows.count * (dv + 1))
        var sumSq = sum
        for seed in 0..<seeds {
            let o = AttentionOptions(mode: .hyper, blockSize: 64, samples: 24, minSeqLen: 64, seed: UInt64(seed), estimator: estimator)
            let r = try attention(query: q, key: k, value: v, options: o)
            let out = r.output.scalars, lse = r.logSumExp.scalars
            for (ri, i) in rows.enumerated() {
                let z = Foundation.exp(Double(lse[i]) - ref.logSumExp[ri])  // estimate of Z / Z*
                for c in 0...dv {
                    let x = c < dv ? Double(out[i * dv + c]) * z : z
                    sum[ri * (dv + 1) + c] += x
                    sumSq[ri * (dv + 1) + c] += x * x
                }
            }
        }
        for (ri, _) in rows.enumerated() {
            for c in 0...dv {
                let idx = ri * (dv + 1) + c
                let mean = sum[idx] / Double(seeds)
                let variance = max(0, sumSq[idx] / Double(seeds) - mean * mean)
                let standardError = (variance / Double(seeds)).squareRoot()
                let exact = c < dv ? ref.output[ri * dv + c] : 1
                #expect(abs(mean - exact) <= 5 * standardError + 1e-6, "row \(rows[ri]) component \(c): mean \(mean) exact \(exact) se \(standardError)")
            }
        }
    }

    /// Keys in 32 clusters with values that depend on the cluster: the LSH order groups each
    /// cluster's keys, so one sample per stratum covers every cluster, where uniform draws miss some.
    @Test("stratified sampling has lower error than the paper's uniform sampling on clustered keys")
    func stratifiedBeatsUniform() throws {
        let n = 4096, d = 32, dv = 16, clusters = 32
        let centers = TestData.gaussian([clusters, d], seed: 32, scale: 1.5).scalars
        let centerValues = TestData.gaussian([clusters, dv], seed: 33).scalars
        let keyNoise = TestData.gaussian([n, d], seed: 34, scale: 0.4).scalars
        let valueNoise = TestData.gaussian([n, dv], seed: 35, scale: 0.2).scalars
        let cluster = (0..<n).map { Int(CounterRandomForTests.integer($0, below: clusters)) }
        let k = try Tensor(shape: [1, 1, n, d], scalars: (0..<(n * d)).map { centers[cluster[$0 / d] * d + $0 % d] + keyNoise[$0] })
        let v = try Tensor(shape: [1, 1, n, dv], scalars: (0..<(n * dv)).map { centerValues[cluster[$0 / dv] * dv + $0 % dv] + valueNoise[$0] })
        let q = TestData.gaussian([1, 1, n, d], seed: 36)
        let rows = Array(stride(from: 0, to: n, by: 8))
        let ref = try referenceAttention(query: q, key: k, value: v, rows: rows)
        func squaredError(_ e: ResidualEstimator) throws -> Double {
            var total = 0.0
            for seed in 0..<8 {
                let o = AttentionOptions(mode: .hyper, blockSize: 128, samples: 64, minSeqLen: 512, seed: UInt64(seed), estimator: e)
                let r = try attention(query: q, key: k, value: v, options: o)
                let out = ErrorMeasure.selectRows(r.output.scalars, heads: 1, n: n, dim: dv, rows: rows)
                for i in out.indices { total += pow(Double(out[i]) - ref.output[i], 2) }
            }
            return total
        }
        let uniform = try squaredError(.uniform), stratified = try squaredError(.stratified)
        #expect(stratified < 0.8 * uniform, "stratified \(stratified) vs uniform \(uniform)")
    }

    @Test("bit-identical for every thread count", arguments: [false, true])
    func threadCounts(causal: Bool) throws {
        let (q, k, v) = inputs(b: 1, hq: 4, hkv: 2, n: 5001, d: 64, dv: 48, seed: 41)
        for estimator in ResidualEstimator.allCases {
            let base = AttentionOptions(mode: .hyper, causal: causal, blockSize: 128, samples: 64, minSeqLen: 512, seed: 9, estimator: estimator)
            var one = base; one.threads = 1
            let reference = try attention(query: q, key: k, value: v, options: one)
            for t in [2, 3, 5] {
                var o = base; o.threads = t
                let r = try attention(query: q, key: k, value: v, options: o)
                #expect(r.output.scalars == reference.output.scalars, "\(estimator) threads \(t)")
                #expect(r.logSumExp.scalars == reference.logSumExp.scalars, "\(estimator) threads \(t)")
            }
        }
    }

    @Test("seeds matter: another seed gives another answer; the same seed the same one")
    func seeds() throws {
        let (q, k, v) = inputs(n: 3000, d: 32, seed: 51)
        let a = try attention(query: q, key: k, value: v, options: AttentionOptions(blockSize: 64, samples: 32, minSeqLen: 256, seed: 1))
        let b = try attention(query: q, key: k, value: v, options: AttentionOptions(blockSize: 64, samples: 32, minSeqLen: 256, seed: 1))
        let c = try attention(query: q, key: k, value: v, options: AttentionOptions(blockSize: 64, samples: 32, minSeqLen: 256, seed: 2))
        #expect(a.output.scalars == b.output.scalars)
        #expect(a.output.scalars != c.output.scalars)
    }

    @Test("GQA equals the same heads with K/V repeated")
    func groupedQueries() throws {
        let (q, k, v) = inputs(b: 2, hq: 4, hkv: 2, n: 3001, d: 32, dv: 16, seed: 61)
        func repeatHeads(_ t: Tensor) throws -> Tensor {
            let s = t.shape, per = s[2] * s[3], x = t.scalars
            var out: [Float] = []
            for b in 0..<s[0] { for h in 0..<4 { let src = (b * 2 + h / 2) * per; out += x[src ..< src + per] } }
            return try Tensor(shape: [s[0], 4, s[2], s[3]], scalars: out)
        }
        for causal in [false, true] {
            let o = AttentionOptions(causal: causal, blockSize: 100, samples: 50, minSeqLen: 700)
            let grouped = try attention(query: q, key: k, value: v, options: o)
            let full = try attention(query: q, key: try repeatHeads(k), value: try repeatHeads(v), options: o)
            #expect(grouped.output.scalars == full.output.scalars)
        }
    }

    /// The causal recursion rebuilt independently: exact causal leaves in float64, the same
    /// rectangles (`attentionPiece`), merged in float64 bottom-up.
    @Test("causal recursion equals a straightforward recursive implementation", arguments: [
        (4097, 1000), (3001, 700), (2048, 512), (1537, 100),
    ])
    func causalRecursion(n: Int, minSeqLen: Int) throws {
        let d = 32, dv = 16
        let (q, k, v) = inputs(n: n, d: d, dv: dv, seed: 71)
        let options = AttentionOptions(mode: .hyper, causal: true, blockSize: 96, samples: 48, minSeqLen: minSeqLen, seed: 3)
        let fast = try attention(query: q, key: k, value: v, options: options)
        func rows(_ t: Tensor, _ r: Range<Int>, _ dim: Int) throws -> Tensor {
            try Tensor(shape: [r.count, dim], scalars: Array(t.scalars[r.lowerBound * dim ..< r.upperBound * dim]))
        }
        func recurse(_ lo: Int, _ hi: Int) throws -> (o: [Double], lse: [Double]) {
            if hi - lo <= minSeqLen {
                let r = try referenceAttention(query: rows(q, lo..<hi, d), key: rows(k, lo..<hi, d), value: rows(v, lo..<hi, dv), causal: true)
                return (r.output, r.logSumExp)
            }
            let s = lo + (hi - lo + 1) / 2
            let top = try recurse(lo, s)
            var bottom = try recurse(s, hi)
            let rect = try attentionPiece(query: q, key: k, value: v, options: options, head: 0, queries: s..<hi, keys: lo..<s)
            for i in 0..<(hi - s) {
                let l1 = bottom.lse[i], l2 = Double(rect.logSumExp[i])
                let l = max(l1, l2) + Foundation.log(Foundation.exp(l1 - max(l1, l2)) + Foundation.exp(l2 - max(l1, l2)))
                for c in 0..<dv {
                    bottom.o[i * dv + c] = bottom.o[i * dv + c] * Foundation.exp(l1 - l) + Double(rect.output[i * dv + c]) * Foundation.exp(l2 - l)
                }
                bottom.lse[i] = l
            }
            return (top.o + bottom.o, top.lse + bottom.lse)
        }
        let slow = try recurse(0, n)
        #expect(ErrorMeasure.maxRelative(fast.output.scalars, slow.o) <= 1e-5)
        #expect(ErrorMeasure.maxAbsoluteOrRelative(fast.logSumExp.scalars, slow.lse) <= 1e-5)
    }

    @Test("work counters: hyper evaluates b + m keys per query, not n")
    func stats() throws {
        let (q, k, v) = inputs(n: 8192, d: 16, seed: 81)
        let r = try attention(query: q, key: k, value: v, options: AttentionOptions(blockSize: 256, samples: 256, minSeqLen: 2048))
        // Each query: its block (256 keys) plus the 256 samples less those inside its block.
        #expect(r.stats.evaluatedPairs <= 8192 * 512)
        #expect(r.stats.evaluatedPairs >= 8192 * (256 + 256 - 16))
        #expect(r.stats.flops == Double(r.stats.evaluatedPairs) * 2 * 32)
    }
}

/// Cluster labels for the tests, from the same counter-based generator idea (SplitMix64).
enum CounterRandomForTests {
    static func integer(_ i: Int, below bound: Int) -> Int {
        var z = UInt64(i) &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Int(z % UInt64(bound))
    }
}
