@testable import DistributedHyperAttention
import HyperAttention
import Testing

// The pure parts of the distributed layer (no MPI calls): how blocks are dealt to ranks and the
// speed measurement behind `.measuredSpeed`. The collectives themselves are checked under mpirun
// (DistributedChecks, MPIChecks).
@Suite("block dealing and speed weights")
struct BlockDealingTests {
    @Test("equal weights, or any rank not yet measured: ⌊c·nb/P⌋", arguments: [(10, 3), (5, 8), (4096, 16), (0, 4)])
    func equal(blocks: Int, ranks: Int) {
        let expected = (0...ranks).map { $0 * blocks / ranks }
        #expect(BlockDealing.firstBlocks(blocks: blocks, weights: Array(repeating: 7, count: ranks)) == expected)
        var unmeasured = Array(repeating: Int64(1000), count: ranks)
        unmeasured[ranks - 1] = 1
        #expect(BlockDealing.firstBlocks(blocks: blocks, weights: unmeasured) == expected)
    }

    @Test("speed weights: runs in proportion, clamped to [1/2, 2] × mean, covering every block once")
    func proportional() {
        // All within [1/2, 2] × the mean (250): exactly proportional.
        let first = BlockDealing.firstBlocks(blocks: 1000, weights: [200, 200, 300, 300])
        #expect(first == [0, 200, 400, 700, 1000])
        // One rank 100× faster than the rest gets at most 2× the mean weight; one nearly stopped
        // at least 1/2.
        let clamped = BlockDealing.firstBlocks(blocks: 1200, weights: [10_000, 100, 100, 2])
        let sizes = zip(clamped.dropFirst(), clamped).map { $0 - $1 }
        #expect(clamped.first == 0 && clamped.last == 1200 && sizes.allSatisfy { $0 >= 0 })
        let mean = (10_000.0 + 100 + 100 + 2) / 4
        let w = [10_000.0, 100, 100, 2].map { min(max($0, mean / 2), mean * 2) }
        for (size, weight) in zip(sizes, w) {
            #expect(abs(Double(size) - 1200 * weight / w.reduce(0, +)) <= 1)
        }
    }

    @Test("work that stays with a rank (sample parts at the query rows' owners) is taken off its share")
    func fixedWork() {
        // Causal rectangle on 4 ranks: ranks 2 and 3 hold the query rows, whose sample parts (100
        // blocks' worth each) are their whole share of 400: all blocks to the key side.
        #expect(BlockDealing.firstBlocks(blocks: 200, weights: [7, 7, 7, 7], fixedWork: [0, 0, 100, 100], blockWork: 1)
                == [0, 100, 200, 200, 200])
        // Fixed work above a rank's share: it gets no block, the others split them evenly.
        #expect(BlockDealing.firstBlocks(blocks: 90, weights: [1, 1, 1, 1], fixedWork: [0, 0, 0, 300], blockWork: 2)
                == [0, 30, 60, 90, 90])
        // With speeds: rank 1 twice as fast takes twice the share of 600 (300) less its 150.
        #expect(BlockDealing.firstBlocks(blocks: 450, weights: [100, 200, 100], fixedWork: [0, 150, 0], blockWork: 1)
                == [0, 150, 300, 450])
        // No fixed work: the split of the weights alone (up to rounding).
        #expect(BlockDealing.firstBlocks(blocks: 1000, weights: [200, 200, 300, 300], fixedWork: [0, 0, 0, 0], blockWork: 3)
                == BlockDealing.firstBlocks(blocks: 1000, weights: [200, 200, 300, 300]))
    }

    @Test("gathered layout of per-block rows: each rank's blocks ascending, ranks in order")
    func gatheredLayout() {
        // Blocks 0..4 owned by ranks 1, 0, 1, 2, 0; rows of 3 values; rank 3 owns none.
        let layout = BlockDealing.gatheredLayout(owner: [1, 0, 1, 2, 0], ranks: 4, width: 3)
        #expect(layout.counts == [6, 6, 3, 0])
        // Rank 0's blocks 1, 4 at 0, 3; rank 1's blocks 0, 2 at 6, 9; rank 2's block 3 at 12.
        #expect(layout.offsets == [6, 0, 9, 12, 3])
    }

    @Test("owner(ofBlock:) is the rank whose run holds the block, empty runs skipped")
    func owners() {
        for first in [[0, 0, 3, 3, 7], [0, 2, 2, 2, 5], [0, 1, 2, 3, 4], [0, 0, 0, 0, 6]] {
            for j in 0..<first.last! {
                let r = BlockDealing.owner(ofBlock: j, firstBlocks: first)
                #expect(first[r] <= j && j < first[r + 1], "block \(j) in \(first): rank \(r)")
            }
        }
    }

    @Test("affinity: bytes each rank holds of each block, a rank's runs within one block merged")
    func affinity() {
        // 4 blocks of 10 rows over a side of 40; runs in position order (two buckets).
        let partition = BlockPartition(keyCount: 40, blockSize: 10)
        let runs: [BlockDealing.RowRun] = [
            .init(rank: 0, start: 0, count: 12),  // block 0, 2 rows of block 1
            .init(rank: 1, start: 12, count: 5),  // block 1
            .init(rank: 0, start: 17, count: 3),  // block 1 again (next bucket): merged with rank 0's 2
            .init(rank: 1, start: 20, count: 20),  // blocks 2 and 3
        ]
        var a = BlockAffinity(blocks: 4)
        a.add(runs, partition: partition, length: 40, bytesPerRow: 3, queries: true)
        let got = a.candidates.map { [$0.block, $0.rank, $0.bytes] }
        #expect(got == [[0, 0, 30], [1, 0, 15], [1, 1, 15], [2, 1, 30], [3, 1, 30]])
        #expect(a.candidates.allSatisfy { $0.queries })
    }

    @Test("row-locality placement: every rank gets its quota; blocks go where most of their bytes are")
    func locality() {
        // 3 ranks, 6 blocks, 2 each. Rank 2 holds most of blocks 0–3, rank 0 of blocks 4 and 5.
        var a = BlockAffinity(blocks: 6)
        let partition = BlockPartition(keyCount: 60, blockSize: 10)
        a.add([.init(rank: 2, start: 0, count: 38), .init(rank: 1, start: 38, count: 2), .init(rank: 0, start: 40, count: 20)],
              partition: partition, length: 60, bytesPerRow: 1, queries: true)
        let owner = BlockDealing.assign(quota: [0, 2, 4, 6], affinity: a)
        // Rank 2 takes blocks 0 and 1 (its first full ones), rank 0 blocks 4 and 5; rank 1 holds
        // only 2 rows of block 3 and gets it, and then block 2 (left over, lowest rank with quota).
        #expect(owner == [2, 2, 1, 1, 0, 0])
        // On equal bytes, query rows win over key rows.
        var tie = BlockAffinity(blocks: 2)
        let two = BlockPartition(keyCount: 20, blockSize: 10)
        tie.add([.init(rank: 0, start: 0, count: 20)], partition: two, length: 20, bytesPerRow: 5, queries: false)
        tie.add([.init(rank: 1, start: 0, count: 20)], partition: two, length: 20, bytesPerRow: 5, queries: true)
        #expect(BlockDealing.assign(quota: [0, 1, 2], affinity: tie) == [1, 0])
        // Random affinities: quotas always met exactly, every block placed once.
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let ranks = Int.random(in: 1...9, using: &rng), blocks = Int.random(in: 0...40, using: &rng)
            var r = BlockAffinity(blocks: blocks)
            let length = max(blocks * 7, 1)
            let p = BlockPartition(keyCount: length, blockSize: 7)
            var runs: [BlockDealing.RowRun] = [], start = 0
            while start < length {
                let count = min(Int.random(in: 1...20, using: &rng), length - start)
                runs.append(.init(rank: Int.random(in: 0..<ranks, using: &rng), start: start, count: count))
                start += count
            }
            if blocks > 0 { r.add(runs, partition: p, length: length, bytesPerRow: 2, queries: Bool.random(using: &rng)) }
            let quota = BlockDealing.firstBlocks(blocks: blocks, weights: Array(repeating: 1, count: ranks))
            let owner = BlockDealing.assign(quota: quota, affinity: r)
            #expect(owner.count == blocks && owner.allSatisfy { (0..<ranks).contains($0) })
            for rank in 0..<ranks {
                #expect(owner.filter { $0 == rank }.count == quota[rank + 1] - quota[rank])
            }
        }
    }

    @Test("speed weight: 1 before a measurement or for equal work; pairs per second after; decay forgets")
    func speedWeight() {
        let all = ExchangeScratch(speedHistoryDecay: 1)
        #expect(all.speedWeight(balancing: .measuredSpeed) == 1)
        all.recordBlockKernel(pairs: 1_000_000, seconds: 1)
        all.recordBlockKernel(pairs: 3_000_000, seconds: 1)
        #expect(all.speedWeight(balancing: .measuredSpeed) == 2_000_000)
        #expect(all.speedWeight(balancing: .equalWork) == 1)
        let recent = ExchangeScratch(speedHistoryDecay: 0.5)
        recent.recordBlockKernel(pairs: 1_000_000, seconds: 1)
        recent.recordBlockKernel(pairs: 0, seconds: 0)  // nothing measured: neither added nor decayed
        recent.recordBlockKernel(pairs: 3_000_000, seconds: 1)
        // (0.5·1e6 + 3e6) / (0.5 + 1)
        #expect(recent.speedWeight(balancing: .measuredSpeed) == 2_333_333)
    }

    @Test("sample-part placement: auto runs them at the owners unless a rank's sample parts would exceed its share by > 10%")
    func samplePartPlacementBySpeeds() {
        let auto = SamplePartPlacement.bySpeeds
        // A causal rectangle of 2 ranks: rank 0 holds the keys, rank 1 the queries, whose sample
        // parts (1000 rows × 256 samples) are half of the work; the blocks the other half.
        let work: [Double] = [0, 256_000], blocks = 256_000.0
        #expect(auto.samplesAtOwners(speedWeights: [1, 1], sampleWork: work, totalBlockWork: blocks))                  // not measured yet
        #expect(auto.samplesAtOwners(speedWeights: [5_000_000, 1], sampleWork: work, totalBlockWork: blocks))          // one rank not measured
        #expect(auto.samplesAtOwners(speedWeights: [3_000_000, 3_000_000], sampleWork: work, totalBlockWork: blocks))  // even
        // The query rank faster than the key rank: its sample parts fit in its share, and the key
        // rank's slowness is dealt away with the blocks.
        #expect(auto.samplesAtOwners(speedWeights: [1_000_000, 2_000_000], sampleWork: work, totalBlockWork: blocks))
        // The query rank slower: its sample parts alone are (mean / its speed) × its share:
        // 1.05 / 1.0 ≤ 1.1, 1.15 / 1.0 > 1.1.
        #expect(auto.samplesAtOwners(speedWeights: [1_100_000, 1_000_000], sampleWork: work, totalBlockWork: blocks))
        #expect(!auto.samplesAtOwners(speedWeights: [1_300_000, 1_000_000], sampleWork: work, totalBlockWork: blocks))
        #expect(abs(SamplePartPlacement.predictedOverload(speedWeights: [1_300_000, 1_000_000], sampleWork: work, totalBlockWork: blocks) - 1.15) < 1e-12)
        // 4 ranks, queries on ranks 2 and 3: only the query ranks' speeds decide.
        let work4: [Double] = [0, 0, 128_000, 128_000]
        #expect(auto.samplesAtOwners(speedWeights: [1_000_000, 3_000_000, 2_000_000, 2_000_000], sampleWork: work4, totalBlockWork: blocks))
        #expect(!auto.samplesAtOwners(speedWeights: [3_000_000, 3_000_000, 2_000_000, 2_000_000], sampleWork: work4, totalBlockWork: blocks))
        // Clamped as the dealing clamps them: a weight below half the mean counts as half of it.
        #expect(BlockDealing.shares([1, 1]) == [0.5, 0.5])
        #expect(BlockDealing.shares([1_000_000, 9_000_000]) == [2_500_000.0 / 11_500_000, 9_000_000.0 / 11_500_000])
        #expect(SamplePartPlacement.atOwners.samplesAtOwners(speedWeights: [1_000_000, 2_000_000], sampleWork: [256_000, 0], totalBlockWork: 1))
        #expect(!SamplePartPlacement.withBlocks.samplesAtOwners(speedWeights: [1, 1], sampleWork: work, totalBlockWork: blocks))
        #expect(SamplePartPlacement(rawValue: "auto") == .bySpeeds)
    }
}
