@testable import DistributedHyperAttention
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

    @Test("owner(ofBlock:) is the rank whose run holds the block, empty runs skipped")
    func owners() {
        for first in [[0, 0, 3, 3, 7], [0, 2, 2, 2, 5], [0, 1, 2, 3, 4], [0, 0, 0, 0, 6]] {
            for j in 0..<first.last! {
                let r = BlockDealing.owner(ofBlock: j, firstBlocks: first)
                #expect(first[r] <= j && j < first[r + 1], "block \(j) in \(first): rank \(r)")
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
        recent.recordBlockKernel(pairs: 3_000_000, seconds: 1)
        // (0.5·1e6 + 3e6) / (0.5 + 1)
        #expect(recent.speedWeight(balancing: .measuredSpeed) == 2_333_333)
    }
}
