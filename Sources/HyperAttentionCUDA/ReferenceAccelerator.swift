import Foundation
import HyperAttention

/// `CUDAPieceAccelerator`'s work done on the CPU, for checking the distributed GPU path on
/// machines without a GPU: the shard's pieces run with the core's executor (what the GPU session
/// runs is checked against the CPU path by `scripts/test-gpu.sh`), and the blocks by evaluating
/// the very tables the GPU kernels get (`BlockBatchTables`: packed rows, tiles, samples at their
/// positions in the packed key layout, control-variate records) as the tile kernel reads them,
/// in float64 on fp32 rows. A wrong slot, sample position, mask or block index in those tables
/// shows up as a wrong output here.
package final class ReferenceAccelerator: PieceAccelerator {
    package let deviceDescription = "CPU reference of the CUDA tables (float64)"
    /// Blocks computed so far (for tests that must see this path taken).
    package private(set) var blocksRun = 0
    package private(set) var piecesRun = 0

    package init() {}

    package func runPieces(_ job: ShardPieces, options: AttentionOptions) throws -> Int {
        let s = job.shape
        let global = AttentionShape(batch: s.batch, queryHeads: s.queryHeads, keyHeads: s.keyHeads,
                                    queryCount: job.queryOrigin + s.queryCount, keyCount: job.keyOrigin + s.keyCount,
                                    headDim: s.headDim, valueDim: s.valueDim)
        let io = AttentionIO(query: job.query.baseAddress!, key: job.key.baseAddress!, value: job.value.baseAddress!,
                             output: job.output.baseAddress!, lse: job.logSumExp.baseAddress!,
                             queryRows: job.queryOrigin..<(job.queryOrigin + s.queryCount),
                             keyRows: job.keyOrigin..<(job.keyOrigin + s.keyCount))
        let executor = PieceExecutor(plan: AttentionPlan(shape: global, options: options), io: io, threads: 1,
                                     meter: ProgressMeter(total: 1, callback: nil))
        for level in job.levels where !level.isEmpty {
            executor.run(level)
            piecesRun += level.count
        }
        return executor.evaluatedPairs
    }

    package func runBlocks(_ batch: BlockBatch, options: AttentionOptions, exchangeBlockSums: ([Double]) throws -> [Double]) throws {
        let t = BlockBatchTables(batch, options: options)
        let d = batch.headDim, dv = batch.valueDim
        var query = [Float](repeating: .nan, count: t.queryRows * d)
        var key = [Float](repeating: .nan, count: t.keyRows * d), value = [Float](repeating: .nan, count: t.keyRows * dv)
        query.withUnsafeMutableBufferPointer { q in
            key.withUnsafeMutableBufferPointer { k in
                value.withUnsafeMutableBufferPointer { v in
                    BlockBatchTables.packRows(batch, query: q.baseAddress!, key: k.baseAddress!, value: v.baseAddress!, threads: 2)
                }
            }
        }
        // The key order the kernel gets is the identity over the packed key rows.
        let keyOrder = [Int32](0..<Int32(t.keyRows))
        func keyRow(_ r: Int) -> ArraySlice<Float> { key[(r * d)..<((r + 1) * d)] }
        func valueRow(_ r: Int) -> ArraySlice<Float> { value[(r * dv)..<((r + 1) * dv)] }
        // Control variate: Σ v per block of the batch (cv_block_sums), all blocks' sums from the
        // exchange, and each block's correction (cv_finish).
        var correction: [Double] = []
        if t.controlVariate {
            let m = Int(t.controlPiece[6])
            var sums: [Double] = [], inside: [Double] = []
            for b in 0..<(t.controlBlocks.count / 7) {
                let first = Int(t.controlBlocks[7 * b + 3]), count = Int(t.controlBlocks[7 * b + 4])
                var sum = [Double](repeating: 0, count: dv), within = [Double](repeating: 0, count: dv)
                for p in first..<(first + count) {
                    for (c, x) in valueRow(Int(keyOrder[p])).enumerated() { sum[c] += Double(x) }
                }
                for s in 0..<m {
                    let p = Int(t.samplePositions[s])
                    guard p >= first && p < first + count else { continue }
                    for (c, x) in valueRow(Int(keyOrder[p])).enumerated() { within[c] += Double(t.sampleWeights[s]) * Double(x) }
                }
                sums += sum
                inside += within
            }
            let all = try exchangeBlockSums(sums)
            precondition(all.count == batch.blockCount * dv, "exchangeBlockSums returned \(all.count) values for \(batch.blockCount) blocks")
            var node = [Double](repeating: 0, count: dv), sampled = [Double](repeating: 0, count: dv)
            for j in 0..<batch.blockCount { for c in 0..<dv { node[c] += all[j * dv + c] } }
            for s in 0..<m {
                for (c, x) in valueRow(Int(keyOrder[Int(t.samplePositions[s])])).enumerated() {
                    sampled[c] += Double(t.sampleWeights[s]) * Double(x)
                }
            }
            correction = [Double](repeating: .nan, count: batch.blockCount * dv)
            for (i, block) in batch.blocks.enumerated() {
                for c in 0..<dv {
                    correction[block.index * dv + c] = node[c] - all[block.index * dv + c] - (sampled[c] - inside[i * dv + c])
                }
            }
        } else if batch.blocks.isEmpty {
            return
        }
        // The tiles, as attn_*_h reads them (log2 domain, masked samples at −inf).
        let scaleLog2 = Double(options.effectiveScale(headDim: d)) * 1.442_695_040_888_963_4
        var o = [Double](repeating: 0, count: dv), out = [Float](repeating: 0, count: dv)
        for tile in 0..<t.tileCount {
            let f = Array(t.tiles[(tile * HostLevel.tileFields)..<((tile + 1) * HostLevel.tileFields)]).map(Int.init)
            let (qFirst, qCount, kFirst, kCount) = (f[2], f[3], f[4], f[5])
            precondition(f[9] == -1 && f[10] == 0 && f[7] == 0 && f[8] == 0, "block tiles read slots directly")
            var keys: [(row: Int, bias: Double, sample: Bool)] = (kFirst..<(kFirst + kCount)).map { (Int(keyOrder[$0]), 0, false) }
            for s in 0..<f[12] {
                let p = Int(t.samplePositions[f[11] + s])
                let masked = p >= kFirst && p < kFirst + kCount
                keys.append((Int(keyOrder[p]), masked ? -.infinity : Double(t.sampleLog2Weights[f[11] + s]), true))
            }
            for row in qFirst..<(qFirst + qCount) {
                let q = query[(row * d)..<((row + 1) * d)]
                let scores = keys.map { k -> Double in
                    k.bias == -.infinity ? -.infinity : zip(q, keyRow(k.row)).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } * scaleLog2 + k.bias
                }
                let top = scores.max() ?? -.infinity
                var l = 0.0, ls = 0.0
                for c in 0..<dv { o[c] = 0 }
                if top > -.infinity {
                    for (k, s) in zip(keys, scores) where s > -.infinity {
                        let p = Foundation.exp2(s - top)
                        l += p
                        if k.sample { ls += p }
                        for (c, x) in valueRow(k.row).enumerated() { o[c] += p * Double(x) }
                    }
                }
                if f[13] & Int(HostLevel.flagControlVariate) != 0 && f[15] > 0 && top > -.infinity {
                    let w = ls / Double(f[15])
                    for c in 0..<dv { o[c] += w * correction[f[14] * dv + c] }
                }
                for c in 0..<dv { out[c] = l > 0 ? Float(o[c] / l) : 0 }
                let lse = l > 0 ? Float((top + Foundation.log2(l)) * 0.693_147_180_559_945_3) : -.infinity
                out.withUnsafeBufferPointer { batch.emit(row, $0.baseAddress!, lse) }
            }
        }
        blocksRun += batch.blocks.count
    }
}
