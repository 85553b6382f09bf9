@testable import HyperAttention
import HyperAttentionTestSupport
import Testing

@Suite("PieceExecutor: the block kernel's measured work")
struct PieceExecutorTests {
    /// The causal recursion of one head, level by level, on an executor over all rows: the
    /// HyperAttention blocks' pairs are counted in `blockKernel` (for the distributed speed
    /// dealing) and the exact tiles' are not.
    @Test("blockKernel counts the HyperAttention blocks' pairs and time, not the exact tiles'")
    func blockKernelCountsHyperBlocksOnly() throws {
        let n = 3000, d = 32
        let shape = AttentionShape(batch: 1, queryHeads: 1, keyHeads: 1, queryCount: n, keyCount: n, headDim: d, valueDim: d)
        let options = AttentionOptions(mode: .hyper, causal: true, blockSize: 64, samples: 32, minSeqLen: 512)
        let plan = AttentionPlan(shape: shape, options: options)
        let q = TestData.gaussian([1, 1, n, d], seed: 1), k = TestData.gaussian([1, 1, n, d], seed: 2), v = TestData.gaussian([1, 1, n, d], seed: 3)
        var output = Tensor(shape: [1, 1, n, d]) { _ in }
        var lse = Tensor(shape: [1, 1, n]) { _ in }
        let levels = plan.levels(head: 0)
        let exactLevels = levels.filter { $0.allSatisfy { !$0.hyper } }, hyperLevels = levels.filter { $0.allSatisfy(\.hyper) }
        #expect(!exactLevels.isEmpty && !hyperLevels.isEmpty, "the recursion has levels of exact leaves and of rectangles")
        withAttentionIO(query: q, key: k, value: v, output: &output, lse: &lse, queryRows: 0..<n, keyRows: 0..<n) { io in
            let executor = PieceExecutor(plan: plan, io: io, threads: 2, meter: ProgressMeter(total: 1, callback: nil))
            for level in levels where exactLevels.contains(level) { executor.run(level) }
            #expect(executor.evaluatedPairs > 0)
            #expect(executor.blockKernel.pairs == 0 && executor.blockKernel.seconds == 0)
            let exactPairs = executor.evaluatedPairs
            for level in levels where hyperLevels.contains(level) { executor.run(level) }
            let blocks = executor.blockKernel
            #expect(blocks.pairs == executor.evaluatedPairs - exactPairs)
            #expect(blocks.pairs > 0 && blocks.seconds > 0)
        }
    }

    /// The speed calibration of a distributed call's first rectangles: HyperAttention blocks of a
    /// synthetic problem, in `blockKernel`'s units, until the requested block time is reached.
    @Test("measureBlockKernel runs HyperAttention blocks until the requested time")
    func measureBlockKernelRunsBlocks() {
        let options = AttentionOptions(blockSize: 64, samples: 32, threads: 2)
        // One run: n = 1024 rows (8 blocks would be 512), each query against its block's 64 keys
        // and the samples outside its block (32 at most).
        let once = measureBlockKernel(options: options, headDim: 32, valueDim: 24, minimumSeconds: 0)
        #expect(once.pairs > 1024 * 64 && once.pairs <= 1024 * (64 + 32))
        #expect(once.seconds > 0)
        let m = measureBlockKernel(options: options, headDim: 32, valueDim: 24, minimumSeconds: 0.005)
        #expect(m.pairs % once.pairs == 0, "whole runs of the same problem")
        #expect(m.seconds >= 0.005 || m.pairs == 64 * once.pairs, "until the time is reached, or 64 runs")
    }
}
