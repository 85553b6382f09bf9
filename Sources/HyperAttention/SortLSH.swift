/// sortLSH (HyperAttention §3): r random hyperplanes, a Gray-code bucket per row, and a stable
/// counting sort of rows by bucket.
///
///     b_j = [x · w_j > 0],   c = Σ_j b_j 2^j,   bucket = gray⁻¹(c)
///
/// where gray(i) = i ⊕ (i >> 1) is the reflected Gray code, the ordering in which adjacent
/// buckets differ in one bit (g(1) = [0, 1]; g(r) = g(r−1) ++ reverse(g(r−1)) + 2^(r−1)).
package struct SortLSH: Sendable {
    /// Hyperplane normals, `bits × headDim`, row-major.
    package let directions: [Float]
    package let bits: Int
    package let headDim: Int

    /// The hyperplanes of one query head, shared by its Q and K rows and by every node of the
    /// causal recursion (as in the reference implementation, which builds one `AngularLSH` per
    /// layer): a row's bucket is the same at every level, so it can be hashed once per call.
    /// The key's node field is fixed at `SortLSH.node`.
    package init(bits: Int, headDim: Int, seed: UInt64, head: Int) {
        let rng = CounterRandom(seed: seed, head: head, node: SortLSH.node, purpose: .hashDirections)
        directions = (0..<(bits * headDim)).map { Float(rng.gaussian($0)) }
        self.bits = bits
        self.headDim = headDim
    }

    /// The node field of the hyperplanes' randomness key: one set for the whole recursion.
    package static let node: UInt64 = 0

    /// Number of buckets, 2^bits.
    package var bucketCount: Int { 1 << bits }

    /// Position of `code` in the Gray-code ordering: the inverse Gray code (prefix XOR).
    @inline(__always) package static func grayRank(_ code: Int) -> Int {
        var x = code, shift = 1
        while (x >> shift) != 0 { x ^= x >> shift; shift <<= 1 }
        return x
    }

    /// Bucket of each of `count` rows at `rows + index(r) · headDim`, written to `buckets`.
    package func hash(rows: UnsafePointer<Float>, count: Int, buckets: UnsafeMutablePointer<UInt16>, index: (Int) -> Int) {
        let d = headDim
        directions.withUnsafeBufferPointer { w in
            for r in 0..<count {
                let x = rows + index(r) * d
                var code = 0
                // Up to four hyperplanes at a time: independent accumulation chains instead of
                // one latency-bound chain per bit. Each dot product is still the same FMAs over
                // the same 16-float chunks, in the same order (the GPU's hash repeats it bit for bit).
                var j = 0
                while j < bits {
                    code |= SortLSH.signBits(x, w.baseAddress! + j * d, d: d, count: min(4, bits - j)) << j
                    j += 4
                }
                buckets[r] = UInt16(SortLSH.grayRank(code))
            }
        }
    }

    /// Bits [x · w_k > 0] for k = 0 ..< count (≤ 4) of the hyperplanes at w, w + d, …: per hyperplane,
    /// a 16-lane fused multiply-add over the 16-float chunks in order, the lanes' halving-tree sum,
    /// then the tail in order.
    @inline(__always) static func signBits(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, d: Int, count: Int) -> Int {
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

    /// Stable counting sort: `order[p]` = the row (0..<count) at sorted position p.
    package static func sortedOrder(buckets: UnsafePointer<UInt16>, count: Int, bucketCount: Int, order: UnsafeMutablePointer<Int32>) {
        var start = [Int](repeating: 0, count: bucketCount + 1)
        for r in 0..<count { start[Int(buckets[r]) + 1] += 1 }
        for b in 0..<bucketCount { start[b + 1] += start[b] }
        for r in 0..<count {
            let b = Int(buckets[r])
            order[start[b]] = Int32(r)
            start[b] += 1
        }
    }
}

/// The proportional block partition of HyperAttention: `blocks = ceil(n_k / b)`, and block j
/// holds sorted positions [⌊j·n/blocks⌋, ⌊(j+1)·n/blocks⌋) of a length-n side (n_k for keys,
/// n_q for queries). Any n works; no padding.
package struct BlockPartition: Sendable, Equatable {
    package let blocks: Int
    package init(keyCount: Int, blockSize: Int) { blocks = max(1, (keyCount + blockSize - 1) / blockSize) }
    @inline(__always) package func range(_ j: Int, length n: Int) -> Range<Int> {
        (j * n / blocks)..<((j + 1) * n / blocks)
    }
    /// The block whose range (for a side of length n ≥ 1) holds position x.
    @inline(__always) package func block(containing x: Int, length n: Int) -> Int {
        proportionalPart(containing: x, parts: blocks, length: n)
    }
}

/// The part j of the proportional partition of 0..<length into `parts` ranges
/// [⌊j·length/parts⌋, ⌊(j+1)·length/parts⌋) that holds x (the last non-empty one when several
/// ranges start at x): j = ⌈(x+1)·parts/length⌉ − 1.
@inline(__always) package func proportionalPart(containing x: Int, parts: Int, length: Int) -> Int {
    ((x + 1) * parts - 1) / length
}
