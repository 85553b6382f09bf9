/// The online-softmax attention kernel for one query tile, FlashAttention-style.
///
/// Scores are kept transposed, `S[j][i]` (key j, query i), so that every step is SIMD over the
/// queries of the tile with no horizontal reductions and no repacking of K or V:
///
///     Sᵀ = K_chunk · Q̃ᵀ            (micro-kernel: 6 keys × 16 queries, Q̃ = Q · scale · log2 e)
///     m'_i = max(m_i, max_j S[j][i]);   P[j][i] = 2^(S[j][i] − m'_i)
///     ℓ_i ← ℓ_i · 2^(m_i − m'_i) + Σ_j P[j][i]
///     O_i ← O_i · 2^(m_i − m'_i) + Σ_j P[j][i] · v_j   (micro-kernel: 6 queries × 16 value columns)
///
/// At the end o_i = O_i / ℓ_i and lse_i = (m_i + log2 ℓ_i) · ln 2.
/// Each query's arithmetic depends only on its own column and on the key chunks it sees, in
/// order; that is what makes results independent of tiling across threads or ranks.

/// Rows of the score micro-kernel (keys) and of the value micro-kernel (queries).
let microRows = 6
/// Columns of both micro-kernels: 16 fp32 lanes.
let microCols = 16

/// Per-worker buffers of the tile kernel. Everything a tile writes lives here, so workers never
/// share mutable memory except their disjoint output rows.
package final class TileWorkspace {
    /// Queries per tile (a multiple of 16) and keys per chunk (a multiple of 6).
    let queryTile: Int
    let keyChunk: Int
    let headDim: Int
    let valueDim: Int
    /// `valueDim` rounded up to 16: the row stride of `acc` and of staged value rows.
    package let paddedValueDim: Int

    /// Q̃ᵀ of the tile: `headDim × queryTile`.
    let queryT: UnsafeMutablePointer<Float>
    /// Scores, then probabilities, of one key chunk: `keyChunk × queryTile`.
    let scores: UnsafeMutablePointer<Float>
    /// Unnormalised output rows: `queryTile × paddedValueDim`.
    let acc: UnsafeMutablePointer<Float>
    /// Running max (base 2) and sum per query, the rescale factor of the last chunk, and the
    /// running sum of the sampled keys alone (for the control variate).
    let rowMax: UnsafeMutablePointer<Float>
    let rowSum: UnsafeMutablePointer<Float>
    let alpha: UnsafeMutablePointer<Float>
    let sampleSum: UnsafeMutablePointer<Float>
    /// Max score per query over the current chunk (written by the score micro-kernel).
    let chunkMax: UnsafeMutablePointer<Float>
    /// Value rows of one chunk staged with stride `paddedValueDim` (when d_v is not a multiple of 16).
    let valueChunk: UnsafeMutablePointer<Float>

    /// Gathered key rows (stride headDim), value rows (stride paddedValueDim) and per-key logit
    /// bias (base 2) of a HyperAttention block; capacity grows on demand.
    private(set) var gatherCapacity = 0
    private(set) var keys: UnsafeMutablePointer<Float>
    private(set) var values: UnsafeMutablePointer<Float>
    private(set) var keyBias: UnsafeMutablePointer<Float>
    /// Value-sum vector of the control variate, `paddedValueDim` doubles.
    let valueCorrection: UnsafeMutablePointer<Double>
    /// Σ v over the gathered block rows (`blockValueSum`), `paddedValueDim` floats.
    let blockSum: UnsafeMutablePointer<Float>
    /// The block part's normalised partial (o, lse) of each query of the tile, while `runBlock`
    /// runs the sample part: `queryTile × paddedValueDim` and `queryTile`.
    let blockPartial: UnsafeMutablePointer<Float>
    let blockPartialLse: UnsafeMutablePointer<Float>

    package init(queryTile: Int, keyChunk: Int, headDim: Int, valueDim: Int) {
        precondition(queryTile % microCols == 0 && keyChunk % microRows == 0)
        self.queryTile = queryTile
        self.keyChunk = keyChunk
        self.headDim = headDim
        self.valueDim = valueDim
        paddedValueDim = (valueDim + microCols - 1) / microCols * microCols
        queryT = allocateAligned(headDim * queryTile)
        scores = allocateAligned(keyChunk * queryTile)
        acc = allocateAligned(queryTile * paddedValueDim)
        rowMax = allocateAligned(queryTile)
        rowSum = allocateAligned(queryTile)
        alpha = allocateAligned(queryTile)
        sampleSum = allocateAligned(queryTile)
        chunkMax = allocateAligned(queryTile)
        valueChunk = allocateAligned(keyChunk * paddedValueDim)
        valueChunk.initialize(repeating: 0, count: keyChunk * paddedValueDim)
        keys = allocateAligned(1)
        values = allocateAligned(1)
        keyBias = allocateAligned(1)
        valueCorrection = allocateAligned(paddedValueDim)
        blockSum = allocateAligned(paddedValueDim)
        blockPartial = allocateAligned(queryTile * paddedValueDim)
        blockPartialLse = allocateAligned(queryTile)
    }

    /// Makes room for `rows` gathered key/value rows.
    package func reserveGather(rows: Int) {
        guard rows > gatherCapacity else { return }
        UnsafeMutableRawPointer(keys).deallocate(); UnsafeMutableRawPointer(values).deallocate()
        UnsafeMutableRawPointer(keyBias).deallocate()
        gatherCapacity = max(rows, gatherCapacity * 2)
        keys = allocateAligned(gatherCapacity * headDim)
        values = allocateAligned(gatherCapacity * paddedValueDim)
        values.initialize(repeating: 0, count: gatherCapacity * paddedValueDim)
        keyBias = allocateAligned(gatherCapacity)
    }

    deinit {
        for p in [queryT, scores, acc, rowMax, rowSum, alpha, sampleSum, chunkMax, valueChunk, keys, values, keyBias,
                  blockSum, blockPartial, blockPartialLse] { UnsafeMutableRawPointer(p).deallocate() }
        UnsafeMutableRawPointer(valueCorrection).deallocate()
    }
}

/// Where a tile's key rows come from: a base pointer and a row stride, plus whether value rows
/// can be read 16 columns at a time in place (stride and d_v padded) or must be staged.
struct KeyValueRows {
    var keys: UnsafePointer<Float>
    var values: UnsafePointer<Float>
    var valueStride: Int
    var valuesPadded: Bool
    /// Base-2 logit bias per key row (sample weights), or nil for none.
    var bias: UnsafePointer<Float>?
}

extension TileWorkspace {
    /// Packs Q̃ᵀ for `count` query rows (row r at `rowPointer(r)`), scaled by
    /// `scaleLog2` = scale · log2 e, and pads the tile to `width` columns by repeating the last
    /// row (columns never mix, and padded columns are never written out). Resets the
    /// online-softmax state.
    @inline(__always)
    func beginTile(count: Int, width: Int, scaleLog2: Float, rowPointer: (Int) -> UnsafePointer<Float>) {
        let d = headDim
        let scale = SIMD8<Float>(repeating: scaleLog2)
        var r0 = 0
        // Eight rows at a time: eight strided loads make one contiguous 8-lane store.
        while r0 < width {
            let last = count - 1
            let p0 = rowPointer(min(r0, last)), p1 = rowPointer(min(r0 + 1, last))
            let p2 = rowPointer(min(r0 + 2, last)), p3 = rowPointer(min(r0 + 3, last))
            let p4 = rowPointer(min(r0 + 4, last)), p5 = rowPointer(min(r0 + 5, last))
            let p6 = rowPointer(min(r0 + 6, last)), p7 = rowPointer(min(r0 + 7, last))
            var out = queryT + r0
            for c in 0..<d {
                let v = SIMD8<Float>(p0[c], p1[c], p2[c], p3[c], p4[c], p5[c], p6[c], p7[c]) * scale
                UnsafeMutableRawPointer(out).storeBytes(of: v, as: SIMD8<Float>.self)
                out += width
            }
            r0 += 8
        }
        resetSoftmax(width: width)
    }

    /// Resets the online-softmax state of a tile (keeps Q̃ᵀ), to run another set of keys over the
    /// same queries as a separate partial.
    @inline(__always)
    func resetSoftmax(width: Int) {
        rowMax.initialize(repeating: -.infinity, count: width)
        rowSum.initialize(repeating: 0, count: width)
        sampleSum.initialize(repeating: 0, count: width)
        acc.initialize(repeating: 0, count: width * paddedValueDim)
    }

    /// Runs keys `0..<keyCount` of `rows` through the tile in chunks of `keyChunk`.
    /// - Parameters:
    ///   - causalOffset: when non-nil, key j of this call is masked for query i of the tile if
    ///     `j > i + causalOffset` (global key index − global query index alignment).
    ///   - countsAsSamples: accumulate the probabilities into `sampleSum` too.
    @inline(__always)
    func attend(rows: KeyValueRows, keyCount: Int, queryCount: Int, width: Int, causalOffset: Int?, countsAsSamples: Bool) {
        var start = 0
        while start < keyCount {
            let n = min(keyChunk, keyCount - start)
            let keys = rows.keys + start * headDim
            scoreChunk(keys: keys, keyCount: n, width: width, bias: rows.bias.map { $0 + start })
            // A chunk that reaches past the diagonal is masked, and its max is taken again after.
            if let offset = causalOffset, start + n - 1 > offset {
                maskCausal(firstKey: start, keyCount: n, width: width, offset: offset)
                recomputeChunkMax(keyCount: n, width: width)
            }
            softmaxUpdate(keyCount: n, width: width, countsAsSamples: countsAsSamples)
            let values: UnsafePointer<Float>
            let stride: Int
            if rows.valuesPadded {
                values = rows.values + start * rows.valueStride
                stride = rows.valueStride
            } else {
                for j in 0..<n {
                    (valueChunk + j * paddedValueDim).update(from: rows.values + (start + j) * rows.valueStride, count: valueDim)
                }
                values = UnsafePointer(valueChunk)
                stride = paddedValueDim
            }
            accumulateValues(values: values, valueStride: stride, keyCount: n, queryCount: queryCount, width: width)
            start += n
        }
    }

    /// Sᵀ[j][i] = k_j · q̃_i + bias_j for a chunk of keys (register tile: 6 keys × 16 queries),
    /// and `chunkMax[i]` = max_j Sᵀ[j][i].
    @inline(__always)
    func scoreChunk(keys: UnsafePointer<Float>, keyCount: Int, width: Int, bias: UnsafePointer<Float>?) {
        let d = headDim
        let qt = UnsafePointer(queryT)
        chunkMax.initialize(repeating: -.infinity, count: width)
        var j0 = 0
        while j0 < keyCount {
            // Past the last key, repeat it: the extra rows are computed and not stored.
            let last = keyCount - 1
            let k0 = keys + min(j0, last) * d, k1 = keys + min(j0 + 1, last) * d
            let k2 = keys + min(j0 + 2, last) * d, k3 = keys + min(j0 + 3, last) * d
            let k4 = keys + min(j0 + 4, last) * d, k5 = keys + min(j0 + 5, last) * d
            var c0 = 0
            while c0 < width {
                var s0 = Vec16(), s1 = Vec16(), s2 = Vec16(), s3 = Vec16(), s4 = Vec16(), s5 = Vec16()
                var q = qt + c0
                var c = 0
                // Two steps of k per iteration (half the loop overhead), then the odd one.
                while c &+ 2 <= d {
                    let qa = q.loadVec16(0), qb = q.loadVec16(width)
                    s0.addProduct(Vec16(repeating: k0[c]), qa)
                    s1.addProduct(Vec16(repeating: k1[c]), qa)
                    s2.addProduct(Vec16(repeating: k2[c]), qa)
                    s3.addProduct(Vec16(repeating: k3[c]), qa)
                    s4.addProduct(Vec16(repeating: k4[c]), qa)
                    s5.addProduct(Vec16(repeating: k5[c]), qa)
                    s0.addProduct(Vec16(repeating: k0[c + 1]), qb)
                    s1.addProduct(Vec16(repeating: k1[c + 1]), qb)
                    s2.addProduct(Vec16(repeating: k2[c + 1]), qb)
                    s3.addProduct(Vec16(repeating: k3[c + 1]), qb)
                    s4.addProduct(Vec16(repeating: k4[c + 1]), qb)
                    s5.addProduct(Vec16(repeating: k5[c + 1]), qb)
                    q += 2 &* width
                    c &+= 2
                }
                if c < d {
                    let qa = q.loadVec16(0)
                    s0.addProduct(Vec16(repeating: k0[c]), qa)
                    s1.addProduct(Vec16(repeating: k1[c]), qa)
                    s2.addProduct(Vec16(repeating: k2[c]), qa)
                    s3.addProduct(Vec16(repeating: k3[c]), qa)
                    s4.addProduct(Vec16(repeating: k4[c]), qa)
                    s5.addProduct(Vec16(repeating: k5[c]), qa)
                }
                if let bias {
                    s0 += bias[min(j0, last)]; s1 += bias[min(j0 + 1, last)]; s2 += bias[min(j0 + 2, last)]
                    s3 += bias[min(j0 + 3, last)]; s4 += bias[min(j0 + 4, last)]; s5 += bias[min(j0 + 5, last)]
                }
                let m = maxVec16(maxVec16(maxVec16(s0, s1), maxVec16(s2, s3)), maxVec16(s4, s5))
                chunkMax.storeVec16(maxVec16(chunkMax.loadVec16(c0), m), c0)
                let out = scores + j0 * width + c0
                out.storeVec16(s0, 0)
                if j0 + 1 < keyCount { out.storeVec16(s1, width) }
                if j0 + 2 < keyCount { out.storeVec16(s2, 2 * width) }
                if j0 + 3 < keyCount { out.storeVec16(s3, 3 * width) }
                if j0 + 4 < keyCount { out.storeVec16(s4, 4 * width) }
                if j0 + 5 < keyCount { out.storeVec16(s5, 5 * width) }
                c0 += microCols
            }
            j0 += microRows
        }
    }

    /// `chunkMax[i]` = max_j Sᵀ[j][i], after masking.
    @inline(__always)
    func recomputeChunkMax(keyCount: Int, width: Int) {
        var c = 0
        while c < width {
            var m = Vec16(repeating: -.infinity)
            for j in 0..<keyCount { m = maxVec16(m, scores.loadVec16(j * width + c)) }
            chunkMax.storeVec16(m, c)
            c += microCols
        }
    }

    /// Masks key j for query i when firstKey + j > i + offset.
    @inline(__always)
    func maskCausal(firstKey: Int, keyCount: Int, width: Int, offset: Int) {
        for j in 0..<keyCount {
            // Queries i < firstKey + j − offset see a future key.
            let cut = min(max(firstKey + j - offset, 0), width)
            if cut > 0 { (scores + j * width).update(repeating: -.infinity, count: cut) }
        }
    }

    /// Turns a chunk of scores into probabilities against the updated running max, and updates
    /// the running sums and the rescale factors `alpha`.
    @inline(__always)
    func softmaxUpdate(keyCount: Int, width: Int, countsAsSamples: Bool) {
        var c = 0
        while c < width {
            let oldMax = rowMax.loadVec16(c)
            let newMax = maxVec16(oldMax, chunkMax.loadVec16(c))
            // A row that has seen only masked keys keeps max −inf; subtract 0 there instead.
            let safeMax = newMax.replacing(with: 0, where: newMax .== -Float.infinity)
            let a = exp2NonPositive(oldMax - safeMax)
            var sum = Vec16()
            for j in 0..<keyCount {
                let p = exp2NonPositive(scores.loadVec16(j * width + c) - safeMax)
                scores.storeVec16(p, j * width + c)
                sum += p
            }
            rowSum.storeVec16(rowSum.loadVec16(c) * a + sum, c)
            if countsAsSamples { sampleSum.storeVec16(sampleSum.loadVec16(c) * a + sum, c) }
            else { sampleSum.storeVec16(sampleSum.loadVec16(c) * a, c) }
            rowMax.storeVec16(newMax, c)
            alpha.storeVec16(a, c)
            c += microCols
        }
    }

    /// O_i ← O_i · alpha_i + Σ_j P[j][i] v_j (register tile: 6 queries × 16 value columns).
    @inline(__always)
    func accumulateValues(values: UnsafePointer<Float>, valueStride: Int, keyCount: Int, queryCount: Int, width: Int) {
        var i0 = 0
        while i0 < queryCount {
            if i0 + microRows <= queryCount {
                // Six consecutive queries: constant offsets from one base, no row registers.
                valueMicroKernel(values: values, valueStride: valueStride, keyCount: keyCount, width: width,
                                 first: i0, rows: (0, 1, 2, 3, 4, 5))
            } else {
                // The last group: past the last query, repeat it (same result, stored last-first).
                let last = queryCount - 1 - i0
                valueMicroKernel(values: values, valueStride: valueStride, keyCount: keyCount, width: width,
                                 first: i0, rows: (0, min(1, last), min(2, last), min(3, last), min(4, last), min(5, last)))
            }
            i0 += microRows
        }
    }

    /// The 6 × 16 value micro-kernel for queries `first + rows.k`, over every 16-column block.
    @inline(__always)
    private func valueMicroKernel(values: UnsafePointer<Float>, valueStride: Int, keyCount: Int, width: Int,
                                  first: Int, rows: (Int, Int, Int, Int, Int, Int)) {
        let dvp = paddedValueDim
        let (r0, r1, r2, r3, r4, r5) = rows
        let al = alpha + first
        let a0 = Vec16(repeating: al[r0]), a1 = Vec16(repeating: al[r1]), a2 = Vec16(repeating: al[r2])
        let a3 = Vec16(repeating: al[r3]), a4 = Vec16(repeating: al[r4]), a5 = Vec16(repeating: al[r5])
        let o = acc + first * dvp
        var c0 = 0
        while c0 < dvp {
            var o0 = o.loadVec16(r0 * dvp + c0) * a0
            var o1 = o.loadVec16(r1 * dvp + c0) * a1
            var o2 = o.loadVec16(r2 * dvp + c0) * a2
            var o3 = o.loadVec16(r3 * dvp + c0) * a3
            var o4 = o.loadVec16(r4 * dvp + c0) * a4
            var o5 = o.loadVec16(r5 * dvp + c0) * a5
            var v = values + c0
            var pj = UnsafePointer(scores) + first
            var j = 0
            while j &+ 2 <= keyCount {
                let va = v.loadVec16(0), vb = v.loadVec16(valueStride)
                let pk = pj + width
                o0.addProduct(Vec16(repeating: pj[r0]), va)
                o1.addProduct(Vec16(repeating: pj[r1]), va)
                o2.addProduct(Vec16(repeating: pj[r2]), va)
                o3.addProduct(Vec16(repeating: pj[r3]), va)
                o4.addProduct(Vec16(repeating: pj[r4]), va)
                o5.addProduct(Vec16(repeating: pj[r5]), va)
                o0.addProduct(Vec16(repeating: pk[r0]), vb)
                o1.addProduct(Vec16(repeating: pk[r1]), vb)
                o2.addProduct(Vec16(repeating: pk[r2]), vb)
                o3.addProduct(Vec16(repeating: pk[r3]), vb)
                o4.addProduct(Vec16(repeating: pk[r4]), vb)
                o5.addProduct(Vec16(repeating: pk[r5]), vb)
                v += 2 &* valueStride
                pj += 2 &* width
                j &+= 2
            }
            if j < keyCount {
                let va = v.loadVec16(0)
                o0.addProduct(Vec16(repeating: pj[r0]), va)
                o1.addProduct(Vec16(repeating: pj[r1]), va)
                o2.addProduct(Vec16(repeating: pj[r2]), va)
                o3.addProduct(Vec16(repeating: pj[r3]), va)
                o4.addProduct(Vec16(repeating: pj[r4]), va)
                o5.addProduct(Vec16(repeating: pj[r5]), va)
            }
            // Reverse order, so that a repeated last row ends with its own (equal) value.
            o.storeVec16(o5, r5 * dvp + c0)
            o.storeVec16(o4, r4 * dvp + c0)
            o.storeVec16(o3, r3 * dvp + c0)
            o.storeVec16(o2, r2 * dvp + c0)
            o.storeVec16(o1, r1 * dvp + c0)
            o.storeVec16(o0, r0 * dvp + c0)
            c0 += microCols
        }
    }

    /// Copies one key row and its value row into gathered slot `slot` (values zero-padded to
    /// `paddedValueDim`).
    @inline(__always)
    package func gather(slot: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        copyRow(from: key, to: keys + slot * headDim, count: headDim)
        copyRow(from: value, to: values + slot * paddedValueDim, count: valueDim)
    }

    /// The per-block logit bias of the node's samples: log2(w_s), or −inf for a sample inside the
    /// block (those keys are already counted exactly). Returns the number of unmasked samples.
    package func setSampleBias(_ samples: SampleSet, blockKeys keyRange: Range<Int>) -> Int {
        var unmasked = 0
        for (s, p) in samples.positions.enumerated() {
            if keyRange.contains(Int(p)) {
                keyBias[s] = -.infinity
            } else {
                keyBias[s] = samples.logWeights[s]
                unmasked += 1
            }
        }
        return unmasked
    }

    /// Σ_{k∈B} v_k over the gathered block rows (slots 0..<blockKeys) in fp32 SIMD, in slot order,
    /// into `blockSum` (`paddedValueDim` floats; what a rank computing a block's keys sends to the
    /// ranks computing its samples' part).
    package func blockValueSum(blockKeys: Int) -> UnsafePointer<Float> {
        let dvp = paddedValueDim
        var c0 = 0
        while c0 < dvp {
            var block = Vec16()
            for t in 0..<blockKeys { block += values.loadVec16(t * dvp + c0) }
            blockSum.storeVec16(block, c0)
            c0 += microCols
        }
        return UnsafePointer(blockSum)
    }

    /// Control variate: D = Σ_{k∉B} v_k − Σ_s w_s v_s, from Σ_k v_k over the node's keys, the
    /// block's Σ v (`blockValueSum`, a few hundred terms) and the node's samples, those inside
    /// the block (bias −inf, `setSampleBias`) left out.
    package func setValueCorrection(nodeValueSum: [Double], blockValueSum block: UnsafePointer<Float>, samples: SampleSet, rows: SampleRows) {
        let dv = valueDim, dvp = paddedValueDim
        // Σ_s w_s v_s in fp32 SIMD, then combined with the node's and the block's Σ v in float64,
        // where the large terms cancel.
        var c0 = 0
        while c0 < dvp {
            var weighted = Vec16()
            for s in 0..<rows.count where keyBias[s] > -.infinity {
                weighted.addProduct(Vec16(repeating: Float(samples.weights[s])), rows.values.loadVec16(s * dvp + c0))
            }
            for c in c0..<min(c0 + microCols, dv) {
                valueCorrection[c] = nodeValueSum[c] - Double(block[c]) - Double(weighted[c - c0])
            }
            c0 += microCols
        }
    }

    /// The HyperAttention block kernel: for each query tile of the block, one online softmax over
    /// the block's gathered keys (slots 0..<blockKeys) and another over the node's shared sample
    /// rows (weighted by the bias `setSampleBias` wrote: −inf inside the block; plus the control
    /// variate), each normalised to a partial (o, lse), and the sample part lse-merged into the
    /// block part. The two parts are the same arithmetic as `runBlockPart` and
    /// `runSamplePartState` + `finishSamplePart`, so a distributed run may compute them on
    /// different ranks and merge them there (same bits). No n × m matrix. Query tiles are the
    /// block's queries in order, `queryTile` (≤ the workspace's) at a time; a query's arithmetic
    /// depends only on the block's keys and samples.
    /// - Parameters:
    ///   - queryRow: the i-th query of the block (sorted order).
    ///   - outsideCount: with the control variate, N = number of node keys outside the block
    ///     (`setValueCorrection` must have been called); nil otherwise.
    ///   - emit: receives (i, o_i, lse_i) for every query of the block.
    @inline(__always)
    package func runBlock(
        queryCount: Int, queryTile: Int, blockKeys: Int, samples: SampleRows, scaleLog2: Float, outsideCount: Int?,
        queryRow: (Int) -> UnsafePointer<Float>, emit: (Int, UnsafePointer<Float>, Float) -> Void
    ) {
        let dv = valueDim, dvp = paddedValueDim
        forEachQueryTile(queryCount: queryCount, queryTile: queryTile) { first, count, width in
            beginTile(count: count, width: width, scaleLog2: scaleLog2) { queryRow(first + $0) }
            attendBlock(blockKeys: blockKeys, count: count, width: width)
            finishTile(count: count) { r, o, l in
                copyRow(from: o, to: blockPartial + r * dvp, count: dv)
                blockPartialLse[r] = l
            }
            resetSoftmax(width: width)
            attendSamples(samples, count: count, width: width, outsideCount: outsideCount)
            finishTile(count: count) { r, o, l in
                let partial = blockPartial + r * dvp
                mergeSamplePart(into: partial, logSumExp: blockPartialLse + r, samplePart: o, logSumExp: l, valueDim: dv)
                emit(first + r, partial, blockPartialLse[r])
            }
        }
    }

    /// The block part alone: the block's gathered keys (slots 0..<blockKeys), a normalised partial
    /// (o, lse) per query.
    @inline(__always)
    package func runBlockPart(
        queryCount: Int, queryTile: Int, blockKeys: Int, scaleLog2: Float,
        queryRow: (Int) -> UnsafePointer<Float>, emit: (Int, UnsafePointer<Float>, Float) -> Void
    ) {
        forEachQueryTile(queryCount: queryCount, queryTile: queryTile) { first, count, width in
            beginTile(count: count, width: width, scaleLog2: scaleLog2) { queryRow(first + $0) }
            attendBlock(blockKeys: blockKeys, count: count, width: width)
            finishTile(count: count) { emit(first + $0, $1, $2) }
        }
    }

    /// Floats a query's sample part keeps between `runSamplePartState` and `finishSamplePart`:
    /// its unnormalised output row (d_v), running max, running sum and sample sum.
    package static func sampleStateWidth(valueDim: Int) -> Int { valueDim + 3 }

    /// The sample part up to its control variate and normalisation: the online softmax over the
    /// node's samples (bias of `setSampleBias`), each query's state copied to `save(i)`
    /// (`sampleStateWidth` floats). `finishSamplePart` completes it later (once the block's Σ v
    /// is known) with the same operations as `runBlock`'s sample part, so the same bits.
    @inline(__always)
    package func runSamplePartState(
        queryCount: Int, queryTile: Int, samples: SampleRows, scaleLog2: Float,
        queryRow: (Int) -> UnsafePointer<Float>, save: (Int) -> UnsafeMutablePointer<Float>
    ) {
        let dv = valueDim, dvp = paddedValueDim
        forEachQueryTile(queryCount: queryCount, queryTile: queryTile) { first, count, width in
            beginTile(count: count, width: width, scaleLog2: scaleLog2) { queryRow(first + $0) }
            attendSamples(samples, count: count, width: width, outsideCount: nil)
            for r in 0..<count {
                let state = save(first + r)
                copyRow(from: acc + r * dvp, to: state, count: dv)
                state[dv] = rowMax[r]
                state[dv + 1] = rowSum[r]
                state[dv + 2] = sampleSum[r]
            }
        }
    }

    /// Completes sample parts saved by `runSamplePartState`: the control variate (when
    /// `outsideCount` is given; `setSampleBias` and `setValueCorrection` for the block first) and
    /// the normalisation, a partial (o, lse) per query to `emit`.
    @inline(__always)
    package func finishSamplePart(
        queryCount: Int, outsideCount: Int?, state: (Int) -> UnsafePointer<Float>,
        emit: (Int, UnsafePointer<Float>, Float) -> Void
    ) {
        let dv = valueDim, dvp = paddedValueDim
        forEachQueryTile(queryCount: queryCount, queryTile: queryTile) { first, count, _ in
            for r in 0..<count {
                let saved = state(first + r)
                copyRow(from: saved, to: acc + r * dvp, count: dv)
                rowMax[r] = saved[dv]
                rowSum[r] = saved[dv + 1]
                sampleSum[r] = saved[dv + 2]
            }
            if let outsideCount { applyControlVariate(queryCount: count, outsideCount: outsideCount) }
            finishTile(count: count) { emit(first + $0, $1, $2) }
        }
    }

    /// Calls `body(first, count, width)` for consecutive tiles of `queryTile` queries (the last
    /// one shorter), `width` being `count` rounded up to the micro-kernel's 16 columns.
    @inline(__always)
    private func forEachQueryTile(queryCount: Int, queryTile: Int, _ body: (_ first: Int, _ count: Int, _ width: Int) -> Void) {
        var first = 0
        while first < queryCount {
            let count = min(queryTile, queryCount - first)
            body(first, count, (count + microCols - 1) / microCols * microCols)
            first += count
        }
    }

    @inline(__always)
    private func attendBlock(blockKeys: Int, count: Int, width: Int) {
        let blockRows = KeyValueRows(keys: keys, values: values, valueStride: paddedValueDim, valuesPadded: true, bias: nil)
        attend(rows: blockRows, keyCount: blockKeys, queryCount: count, width: width, causalOffset: nil, countsAsSamples: false)
    }

    @inline(__always)
    private func attendSamples(_ samples: SampleRows, count: Int, width: Int, outsideCount: Int?) {
        let sampleRows = KeyValueRows(
            keys: samples.keys, values: samples.values, valueStride: paddedValueDim,
            valuesPadded: true, bias: UnsafePointer(keyBias))
        attend(rows: sampleRows, keyCount: samples.count, queryCount: count, width: width, causalOffset: nil, countsAsSamples: true)
        if let outsideCount { applyControlVariate(queryCount: count, outsideCount: outsideCount) }
    }

    /// Adds the control-variate term (sampleSum_i / N) · D to each unnormalised output row, with
    /// D = `valueCorrection` (Σ_{k∉B} v_k − Σ_s w_s v_s) and N = `outsideCount`.
    func applyControlVariate(queryCount: Int, outsideCount: Int) {
        guard outsideCount > 0 else { return }
        let dvp = paddedValueDim
        for i in 0..<queryCount {
            guard rowMax[i] > -.infinity else { continue }
            let w = Double(sampleSum[i]) / Double(outsideCount)
            for c in 0..<valueDim { acc[i * dvp + c] += Float(w * valueCorrection[c]) }
        }
    }

    /// Hands each of the tile's first `count` rows to `emit` as a normalised partial
    /// (o_r = O_r / ℓ_r, lse_r = (m_r + log2 ℓ_r) · ln 2). A query that saw no key at all (every
    /// key masked) gives the empty partial (0, −inf).
    @inline(__always)
    func finishTile(count: Int, emit: (_ row: Int, _ output: UnsafePointer<Float>, _ logSumExp: Float) -> Void) {
        let dv = valueDim, dvp = paddedValueDim
        for r in 0..<count {
            let src = acc + r * dvp
            let sum = rowSum[r]
            let lse: Float = sum > 0 ? (rowMax[r] + log2f(sum)) * ln2 : -.infinity
            let inv: Float = sum > 0 ? 1 / sum : 0
            for c in 0..<dv { src[c] *= inv }
            emit(r, UnsafePointer(src), lse)
        }
    }
}

/// Writes a partial (o, lse) over a row, or lse-merges it into the row's existing partial:
///
///     merge((o₁, l₁), (o₂, l₂)):  l = logaddexp(l₁, l₂);  o = o₁·e^(l₁−l) + o₂·e^(l₂−l)
///
/// in fp32; an empty partial (0, −inf) on either side leaves the other unchanged. Every merge in
/// the package (tiles, recursion levels, ranks) goes through here, so the same partials merged
/// in the same order give the same bits wherever they were computed.
@inline(__always)
package func mergePartial(
    into output: UnsafeMutablePointer<Float>, logSumExp: UnsafeMutablePointer<Float>,
    partial: UnsafePointer<Float>, partialLogSumExp newLse: Float, count: Int, merge: Bool
) {
    let old = logSumExp.pointee
    if !merge || old == -.infinity {
        copyRow(from: partial, to: output, count: count)
        logSumExp.pointee = newLse
        return
    }
    guard newLse > -.infinity else { return }
    // Two exponentials: with m the larger lse, e^(l₁−l) = a/(a + b) for a = e^(l₁−m), b = e^(l₂−m).
    let m = max(old, newLse)
    let a = expf(old - m), b = expf(newLse - m)
    let inv = 1 / (a + b)
    let wOld = a * inv, wNew = b * inv
    for c in 0..<count { output[c] = output[c] * wOld + partial[c] * wNew }
    logSumExp.pointee = m + logf(a + b)
}

/// A query's sample part (o_s, lse_s) lse-merged into its block part (o_b, lse_b), in place: the
/// one way the two parts of a HyperAttention block are combined, on one rank or two.
@inline(__always)
package func mergeSamplePart(
    into blockPart: UnsafeMutablePointer<Float>, logSumExp: UnsafeMutablePointer<Float>,
    samplePart: UnsafePointer<Float>, logSumExp sampleLse: Float, valueDim: Int
) {
    mergePartial(into: blockPart, logSumExp: logSumExp, partial: samplePart, partialLogSumExp: sampleLse, count: valueDim, merge: true)
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Memory for `count` elements on a 64-byte (cache-line) boundary, so that 16-lane loads of
/// rows whose stride is a multiple of 16 never straddle two lines. Free with
/// `UnsafeMutableRawPointer(p).deallocate()`.
func allocateAligned<T>(_ count: Int) -> UnsafeMutablePointer<T> {
    UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<T>.stride, alignment: 64)
        .bindMemory(to: T.self, capacity: max(count, 1))
}

/// The m sampled key and value rows of one recursion node, gathered once and shared by all of
/// its blocks: keys `count × headDim`, values `count × paddedValueDim` (zero-padded), aligned.
package final class SampleRows: @unchecked Sendable {
    package let count: Int
    package let headDim: Int
    package let valueDim: Int
    package let paddedValueDim: Int
    package let keys: UnsafeMutablePointer<Float>
    package let values: UnsafeMutablePointer<Float>

    package init(count: Int, headDim: Int, valueDim: Int) {
        self.count = count
        self.headDim = headDim
        self.valueDim = valueDim
        paddedValueDim = (valueDim + microCols - 1) / microCols * microCols
        keys = allocateAligned(count * headDim)
        values = allocateAligned(count * paddedValueDim)
        values.initialize(repeating: 0, count: count * paddedValueDim)
    }

    /// Copies sample `i`'s key and value rows in.
    package func set(_ i: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        copyRow(from: key, to: keys + i * headDim, count: headDim)
        copyRow(from: value, to: values + i * paddedValueDim, count: valueDim)
    }

    deinit {
        UnsafeMutableRawPointer(keys).deallocate()
        UnsafeMutableRawPointer(values).deallocate()
    }
}
