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
    /// The hyperplanes in groups of 8, transposed: `[group][e][k]` = w_{8·group+k}[e] (0 for
    /// hyperplanes past `bits`), so that one 8-lane vector holds element e of a group's 8 normals.
    private let transposedDirections: [Float]

    /// The hyperplanes of one query head, shared by its Q and K rows and by every node of the
    /// causal recursion (as in the reference implementation, which builds one `AngularLSH` per
    /// layer): a row's bucket is the same at every level, so it can be hashed once per call.
    /// The key's node field is fixed at `SortLSH.node`.
    package init(bits: Int, headDim: Int, seed: UInt64, head: Int) {
        precondition(bits <= 16, "buckets are UInt16: at most 16 bits")
        let rng = CounterRandom(seed: seed, head: head, node: SortLSH.node, purpose: .hashDirections)
        directions = (0..<(bits * headDim)).map { Float(rng.gaussian($0)) }
        self.bits = bits
        self.headDim = headDim
        let groups = (bits + 7) / 8
        var t = [Float](repeating: 0, count: max(8, groups * headDim * 8))
        for k in 0..<bits {
            for e in 0..<headDim { t[((k / 8) * headDim + e) * 8 + k % 8] = directions[k * headDim + e] }
        }
        transposedDirections = t
    }

    /// The node field of the hyperplanes' randomness key: one set for the whole recursion.
    package static let node: UInt64 = 0

    /// Number of buckets, 2^bits.
    package var bucketCount: Int { 1 << bits }

    /// Position of `code` (≥ 0) in the Gray-code ordering: the inverse Gray code (prefix XOR),
    /// without data-dependent branches.
    @inline(__always) package static func grayRank(_ code: Int) -> Int {
        var x = code
        x ^= x >> 1; x ^= x >> 2; x ^= x >> 4; x ^= x >> 8; x ^= x >> 16; x ^= x >> 32
        return x
    }

    /// Bucket of each of `count` rows at `rows + index(r) · headDim`, written to `buckets`.
    package func hash(rows: UnsafePointer<Float>, count: Int, buckets: UnsafeMutablePointer<UInt16>, index: (Int) -> Int) {
        let d = headDim
        hashRows(count: count, buckets: buckets) { rows + index($0) * d }
    }

    /// Bucket of each of `count` consecutive rows `rows + r · headDim`, written to `buckets`.
    package func hash(rows: UnsafePointer<Float>, count: Int, buckets: UnsafeMutablePointer<UInt16>) {
        let d = headDim
        hashRows(count: count, buckets: buckets) { rows + $0 * d }
    }

    /// The row loop, with the common head dimensions (64, 128) specialized to constants.
    @inline(__always) private func hashRows(count: Int, buckets: UnsafeMutablePointer<UInt16>, row: (Int) -> UnsafePointer<Float>) {
        transposedDirections.withUnsafeBufferPointer { wb in
            let w = wb.baseAddress!, bits = bits
            switch headDim {
            case 64: for r in 0..<count { buckets[r] = SortLSH.bucket(row(r), w, d: 64, bits: bits) }
            case 128: for r in 0..<count { buckets[r] = SortLSH.bucket(row(r), w, d: 128, bits: bits) }
            default:
                let d = headDim
                for r in 0..<count { buckets[r] = SortLSH.bucket(row(r), w, d: d, bits: bits) }
            }
        }
    }

    /// Bucket of the row at x, with the transposed hyperplanes at w (groups of 8).
    @inline(__always) static func bucket(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, d: Int, bits: Int) -> UInt16 {
        var code = signBits(x, w, d: d)
        if bits > 8 { code |= signBits(x, w + 8 * d, d: d) << 8 }
        return UInt16(truncatingIfNeeded: grayRank(code & ((1 << bits) - 1)))
    }

    /// Bits [x · w_k > 0] for the 8 hyperplanes k of one transposed group at w, in the order of
    /// operations the GPU's hash repeats bit for bit: per hyperplane, a 16-lane fused multiply-add
    /// over the 16-float chunks in order, the lanes' halving-tree sum (`horizontalSum`: lane i + lane
    /// i+8, then i + i+4, i + i+2, 0 + 1), then the tail elements in order with a separate multiply
    /// and add. Here a vector holds one lane l of all 8 hyperplanes' accumulators (`acc[l][k]`), so
    /// every step of the tree is a plain vertical add of whole vectors and no shuffles are needed.
    @inline(__always) static func signBits(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, d: Int) -> Int {
        let body = d / 16 * 16
        @inline(__always) func column(_ e: Int) -> SIMD8<Float> { UnsafeRawPointer(w + 8 * e).loadUnaligned(as: SIMD8<Float>.self) }
        /// Lanes l0 ..< l0+4 and l0+8 ..< l0+12 over the chunks, folded: acc[l] + acc[l+8].
        @inline(__always) func folded(_ l0: Int) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
            var p0 = SIMD8<Float>(), p1 = SIMD8<Float>(), p2 = SIMD8<Float>(), p3 = SIMD8<Float>()
            var q0 = SIMD8<Float>(), q1 = SIMD8<Float>(), q2 = SIMD8<Float>(), q3 = SIMD8<Float>()
            var c = 0
            while c < body {
                let e = c + l0
                p0.addProduct(SIMD8(repeating: x[e]), column(e))
                p1.addProduct(SIMD8(repeating: x[e + 1]), column(e + 1))
                p2.addProduct(SIMD8(repeating: x[e + 2]), column(e + 2))
                p3.addProduct(SIMD8(repeating: x[e + 3]), column(e + 3))
                q0.addProduct(SIMD8(repeating: x[e + 8]), column(e + 8))
                q1.addProduct(SIMD8(repeating: x[e + 9]), column(e + 9))
                q2.addProduct(SIMD8(repeating: x[e + 10]), column(e + 10))
                q3.addProduct(SIMD8(repeating: x[e + 11]), column(e + 11))
                c += 16
            }
            return (p0 + q0, p1 + q1, p2 + q2, p3 + q3)
        }
        let (a0, a1, a2, a3) = folded(0)
        let (a4, a5, a6, a7) = folded(4)
        let b0 = a0 + a4, b1 = a1 + a5, b2 = a2 + a6, b3 = a3 + a7
        let c0 = b0 + b2, c1 = b1 + b3
        var s = c0 + c1
        var t = body
        while t < d {
            let product = SIMD8<Float>(repeating: x[t]) * column(t)
            s = s + product
            t += 1
        }
        let weights = SIMD8<Int32>(1, 2, 4, 8, 16, 32, 64, 128)
        return Int(SIMD8<Int32>(repeating: 0).replacing(with: weights, where: s .> 0).wrappedSum())
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
