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
}
