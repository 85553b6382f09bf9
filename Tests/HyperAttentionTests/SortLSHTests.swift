@testable import HyperAttention
import HyperAttentionTestSupport
import Testing

@Suite("sortLSH, blocks, samples, randomness")
struct SortLSHTests {
    @Test("Gray order: g(r) = g(r−1) ++ reverse(g(r−1)) + 2^(r−1), adjacent buckets differ in one bit", arguments: 1...10)
    func grayOrder(bits: Int) {
        var g = [0, 1]
        for r in 1..<bits { g = g + g.reversed().map { $0 + (1 << r) } }
        if bits == 1 { g = [0, 1] }
        // The bucket of code g[i] is i.
        for (i, code) in g.enumerated() { #expect(SortLSH.grayRank(code) == i) }
        for i in 1..<g.count { #expect((g[i] ^ g[i - 1]).nonzeroBitCount == 1) }
    }

    @Test("counting sort is stable and sorts by bucket")
    func stableSort() {
        let buckets: [UInt16] = [3, 1, 3, 0, 1, 2, 3, 0]
        var order = [Int32](repeating: -1, count: buckets.count)
        buckets.withUnsafeBufferPointer { b in
            order.withUnsafeMutableBufferPointer { o in SortLSH.sortedOrder(buckets: b.baseAddress!, count: 8, bucketCount: 4, order: o.baseAddress!) }
        }
        #expect(order == [3, 7, 1, 4, 5, 0, 2, 6])
    }

    @Test("hash: x and 2x share a bucket; −x gets the complement code")
    func hashGeometry() {
        let lsh = SortLSH(bits: 7, headDim: 20, seed: 5, head: 0)
        let x = TestData.gaussian([20], seed: 3).scalars
        let rows = x + x.map { 2 * $0 } + x.map { -$0 }
        var buckets = [UInt16](repeating: 0, count: 3)
        rows.withUnsafeBufferPointer { r in buckets.withUnsafeMutableBufferPointer { b in lsh.hash(rows: r.baseAddress!, count: 3, buckets: b.baseAddress!) { $0 } } }
        #expect(buckets[0] == buckets[1])
        // −x flips every bit: code c ^ (2^r − 1). The inverse Gray code is linear over XOR, so
        // its bucket is rank(c) ^ rank(2^r − 1).
        #expect(Int(buckets[2]) == Int(buckets[0]) ^ SortLSH.grayRank(127))
    }

    @Test("hash = per-hyperplane 16-lane FMA chunks, halving-tree sum, tail in order (the GPU repeats this bit for bit)",
          arguments: [(64, 7), (40, 11), (16, 1), (24, 4), (128, 16), (8, 5)])
    func hashArithmetic(d: Int, bits: Int) {
        let lsh = SortLSH(bits: bits, headDim: d, seed: 9, head: 2)
        let n = 300
        let rows = TestData.gaussian([n, d], seed: 5).scalars
        var buckets = [UInt16](repeating: 0, count: n)
        rows.withUnsafeBufferPointer { x in
            buckets.withUnsafeMutableBufferPointer { b in lsh.hash(rows: x.baseAddress!, count: n, buckets: b.baseAddress!) { $0 } }
        }
        for r in 0..<n {
            let expected = Self.scalarBucket(rows[(r * d)..<((r + 1) * d)], directions: lsh.directions, d: d, bits: bits)
            #expect(buckets[r] == expected, "row \(r)")
        }
    }

    /// The order of operations, written out lane by lane: per hyperplane, 16 lanes of fused
    /// multiply-adds over the 16-float chunks, the halving tree 16 → 8 → 4 → 2 → 1, then the tail
    /// with a separate multiply and add.
    static func scalarBucket(_ x: ArraySlice<Float>, directions w: [Float], d: Int, bits: Int) -> UInt16 {
        var code = 0
        for j in 0..<bits {
            var lanes = [Float](repeating: 0, count: 16)
            var c = 0
            while c + 16 <= d {
                for l in 0..<16 { lanes[l] = lanes[l].addingProduct(x[x.startIndex + c + l], w[j * d + c + l]) }
                c += 16
            }
            var width = 16
            while width > 1 {
                width /= 2
                for l in 0..<width { lanes[l] = lanes[l] + lanes[l + width] }
            }
            var dot = lanes[0]
            while c < d {
                let product = x[x.startIndex + c] * w[j * d + c]
                dot = dot + product
                c += 1
            }
            if dot > 0 { code |= 1 << j }
        }
        var rank = code, shift = 1
        while (rank >> shift) != 0 { rank ^= rank >> shift; shift <<= 1 }
        return UInt16(rank)
    }

    @Test("hash = the scalar order of operations, every bucket, incl. dot products at rounding level",
          arguments: [64, 128, 40, 16, 8, 24, 80, 100, 1, 15, 17])
    func hashMatchesScalar(d: Int) {
        for bits in 1...16 {
            let lsh = SortLSH(bits: bits, headDim: d, seed: 3 + UInt64(bits), head: d)
            let n = bits <= 10 ? 240 : 64
            var rows = TestData.gaussian([n, d], seed: UInt64(17 * d + bits)).scalars
            // Rows whose dot product with one hyperplane is zero up to rounding: x − (x·w / w·w) w.
            for r in stride(from: 0, to: n / 2, by: 1) {
                let j = r % bits
                var xw = 0.0, ww = 0.0
                for e in 0..<d { xw += Double(rows[r * d + e]) * Double(lsh.directions[j * d + e]); ww += Double(lsh.directions[j * d + e] * lsh.directions[j * d + e]) }
                for e in 0..<d { rows[r * d + e] -= Float(xw / ww) * lsh.directions[j * d + e] }
            }
            // Scaled rows (tiny, huge, subnormal), zero rows of both signs, non-finite entries.
            for e in 0..<d {
                rows[(n / 2) * d + e] *= 1e-30
                rows[(n / 2 + 1) * d + e] *= 1e20
                rows[(n / 2 + 2) * d + e] *= 1e-41
                rows[(n / 2 + 3) * d + e] = 0
                rows[(n / 2 + 4) * d + e] = -0.0
            }
            rows[(n / 2 + 5) * d] = .nan
            rows[(n / 2 + 6) * d + d / 2] = .infinity
            rows[(n / 2 + 7) * d + d - 1] = -.infinity
            var contiguous = [UInt16](repeating: 0xFFFF, count: n), permuted = contiguous
            let order = (0..<n).map { ($0 * 37 + 11) % n }  // gcd(37, n) = 1 for these n
            rows.withUnsafeBufferPointer { x in
                contiguous.withUnsafeMutableBufferPointer { b in lsh.hash(rows: x.baseAddress!, count: n, buckets: b.baseAddress!) }
                permuted.withUnsafeMutableBufferPointer { b in lsh.hash(rows: x.baseAddress!, count: n, buckets: b.baseAddress!) { order[$0] } }
            }
            var mismatches = 0
            for r in 0..<n {
                let expected = Self.scalarBucket(rows[(r * d)..<((r + 1) * d)], directions: lsh.directions, d: d, bits: bits)
                if contiguous[r] != expected || permuted[order.firstIndex(of: r)!] != expected { mismatches += 1 }
            }
            #expect(mismatches == 0, "d \(d), bits \(bits): \(mismatches) of \(n) rows differ")
        }
    }

    @Test("addRows sums each column in row order, in float64")
    func addRowsOrder() {
        let width = 37, count = 101
        let rows = TestData.gaussian([count, width], seed: 8).scalars
        var sum = [Double](repeating: 0.5, count: width)
        rows.withUnsafeBufferPointer { addRows($0.baseAddress!, count: count, width: width, into: &sum) }
        for c in 0..<width {
            var expected = 0.5
            for r in 0..<count { expected += Double(rows[r * width + c]) }
            #expect(sum[c] == expected)
        }
    }

    @Test("proportional blocks cover 0..<n without gaps, sizes differ by at most one", arguments: [1, 7, 255, 256, 257, 1000, 4097])
    func blocks(n: Int) {
        let p = BlockPartition(keyCount: n, blockSize: 64)
        #expect(p.blocks == (n + 63) / 64)
        var next = 0, sizes: [Int] = []
        for j in 0..<p.blocks {
            let r = p.range(j, length: n)
            #expect(r.lowerBound == next)
            next = r.upperBound
            sizes.append(r.count)
        }
        #expect(next == n)
        #expect(sizes.max()! - sizes.min()! <= 1)
    }

    @Test("stratified samples: one per stratum, weights are the stratum sizes and sum to n_k")
    func stratifiedSamples() {
        let rng = CounterRandom(seed: 1, head: 0, node: 2, purpose: .samplePositions)
        for (n, m) in [(1000, 256), (100, 256), (8192, 256), (7, 3)] {
            let s = SampleSet(estimator: .stratified, keyCount: n, count: m, random: rng)
            #expect(s.positions.count == min(n, m))
            #expect(s.weights.reduce(0, +) == Double(n))
            for (i, p) in s.positions.enumerated() {
                let strata = min(n, m)
                #expect((i * n / strata)..<((i + 1) * n / strata) ~= Int(p))
            }
        }
        let u = SampleSet(estimator: .uniform, keyCount: 1000, count: 50, random: rng)
        #expect(u.positions.count == 50 && u.positions.allSatisfy { (0..<1000).contains($0) })
        #expect(u.weights.allSatisfy { $0 == 20 })
    }

    @Test("counter-based randomness is a pure function of its key fields")
    func counterRandom() {
        let a = CounterRandom(seed: 1, head: 2, node: 3, purpose: .samplePositions)
        let b = CounterRandom(seed: 1, head: 2, node: 3, purpose: .samplePositions)
        #expect((0..<100).map(a.bits) == (0..<100).map(b.bits))
        let others = [CounterRandom(seed: 2, head: 2, node: 3, purpose: .samplePositions),
                      CounterRandom(seed: 1, head: 3, node: 3, purpose: .samplePositions),
                      CounterRandom(seed: 1, head: 2, node: 4, purpose: .samplePositions),
                      CounterRandom(seed: 1, head: 2, node: 3, purpose: .hashDirections)]
        for o in others { #expect(o.bits(0) != a.bits(0)) }
        // Gaussian: mean ≈ 0, variance ≈ 1 over 20000 draws.
        let g = (0..<20000).map(a.gaussian)
        let mean = g.reduce(0, +) / 20000, variance = g.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 20000
        #expect(abs(mean) < 0.03 && abs(variance - 1) < 0.05)
        // Uniform integers stay in range and hit every value.
        let hits = Set((0..<2000).map { a.integer($0, below: 10) })
        #expect(hits == Set(0..<10))
    }
}
