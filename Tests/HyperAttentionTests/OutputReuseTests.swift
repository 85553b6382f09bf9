import HyperAttention
import HyperAttentionTestSupport
import Testing

/// `attention(query:key:value:options:output:logSumExp:progress:)`: writing into caller tensors
/// gives the allocating call's results bit for bit, checks the shapes, and respects copy-on-write.
@Suite("Attention into caller tensors")
struct OutputReuseTests {
    /// GQA (4 query heads over 2 K/V heads), b = 2, d ≠ d_v.
    let q = TestData.gaussian([2, 4, 1500, 32], seed: 81)
    let k = TestData.gaussian([2, 2, 1500, 32], seed: 82)
    let v = TestData.gaussian([2, 2, 1500, 16], seed: 83)

    func options(_ mode: AttentionMode, causal: Bool) -> AttentionOptions {
        AttentionOptions(mode: mode, causal: causal, blockSize: 64, samples: 32, minSeqLen: 400, seed: 9, threads: 2)
    }

    /// A tensor of `shape` holding NaN, ±inf, huge, tiny and negative values in turn.
    func garbage(_ shape: [Int]) -> Tensor {
        let values: [Float] = [.nan, 3e38, -.infinity, .infinity, -7, 1e-30, -.nan, 123456]
        return Tensor(shape: shape) { b in for i in b.indices { b[i] = values[i % values.count] } }
    }

    func bits(_ t: Tensor) -> [UInt32] { t.scalars.map(\.bitPattern) }

    @Test("equals the allocating call bit for bit over garbage, and again over its own last output", arguments: [
        (AttentionMode.exact, false), (.exact, true), (.hyper, false), (.hyper, true),
    ])
    func equalsAllocating(mode: AttentionMode, causal: Bool) throws {
        let o = options(mode, causal: causal)
        let fresh = try attention(query: q, key: k, value: v, options: o)
        var output = garbage([2, 4, 1500, 16]), lse = garbage([2, 4, 1500])
        for _ in 0..<2 {
            let stats = try attention(query: q, key: k, value: v, options: o, output: &output, logSumExp: &lse)
            #expect(bits(output) == bits(fresh.output))
            #expect(bits(lse) == bits(fresh.logSumExp))
            #expect(stats == fresh.stats)
        }
        #expect(fresh.output.scalars.allSatisfy(\.isFinite) && fresh.logSumExp.scalars.allSatisfy(\.isFinite))
    }

    @Test("ranks 2 and 3: output and lse in the query's rank")
    func lowerRanks() throws {
        let o = options(.hyper, causal: true)
        let q3 = try q.reshaped([8, 1500, 32]), k3 = TestData.gaussian([8, 1500, 32], seed: 84), v3 = TestData.gaussian([8, 1500, 16], seed: 85)
        let fresh3 = try attention(query: q3, key: k3, value: v3, options: o)
        var out3 = garbage([8, 1500, 16]), lse3 = garbage([8, 1500])
        try attention(query: q3, key: k3, value: v3, options: o, output: &out3, logSumExp: &lse3)
        #expect(bits(out3) == bits(fresh3.output) && bits(lse3) == bits(fresh3.logSumExp))

        let q2 = TestData.gaussian([900, 32], seed: 86), k2 = TestData.gaussian([900, 32], seed: 87), v2 = TestData.gaussian([900, 8], seed: 88)
        let fresh2 = try attention(query: q2, key: k2, value: v2, options: o)
        var out2 = garbage([900, 8]), lse2 = garbage([900])
        try attention(query: q2, key: k2, value: v2, options: o, output: &out2, logSumExp: &lse2)
        #expect(bits(out2) == bits(fresh2.output) && bits(lse2) == bits(fresh2.logSumExp))
    }

    @Test("a copy taken before the call keeps its values; storage held alone is written in place")
    func copyOnWrite() throws {
        let o = options(.hyper, causal: false)
        let fresh = try attention(query: q, key: k, value: v, options: o)
        var output = garbage([2, 4, 1500, 16]), lse = garbage([2, 4, 1500])
        let outputCopy = output, lseCopy = lse
        let before = (bits(outputCopy), bits(lseCopy))
        try attention(query: q, key: k, value: v, options: o, output: &output, logSumExp: &lse)
        #expect(bits(outputCopy) == before.0)
        #expect(bits(lseCopy) == before.1)
        #expect(bits(output) == bits(fresh.output) && bits(lse) == bits(fresh.logSumExp))

        // Now `output` and `lse` hold their storage alone: the next call writes into it.
        let storage = (output.unsafeStoragePointer, lse.unsafeStoragePointer)
        try attention(query: q, key: k, value: v, options: o, output: &output, logSumExp: &lse)
        #expect(output.unsafeStoragePointer == storage.0 && lse.unsafeStoragePointer == storage.1)
        #expect(bits(output) == bits(fresh.output) && bits(lse) == bits(fresh.logSumExp))
    }

    @Test("wrong output or lse shapes throw naming the argument, with expected and got shapes; the tensors are untouched")
    func wrongShapes() throws {
        let o = options(.exact, causal: false)
        let goodOutput = garbage([2, 4, 1500, 16]), goodLse = garbage([2, 4, 1500])
        let badOutputs = [[2, 4, 1500, 32], [8, 1500, 16], [2, 4, 1499, 16], [2, 4, 1500 * 16], [1, 2, 4, 1500, 16]]
        let badLses = [[2, 4, 1500, 1], [8, 1500], [2, 4, 1501], [2, 4, 1500, 16]]
        func expectError(_ argument: String, _ output: Tensor, _ lse: Tensor, expected: [Int], got: [Int]) {
            var output = output, lse = lse
            let before = (bits(output), bits(lse))
            do {
                try attention(query: q, key: k, value: v, options: o, output: &output, logSumExp: &lse)
                Issue.record("expected an error naming \(argument) for \(got)")
            } catch let AttentionError.invalidArgument(name, reason) {
                #expect(name == argument, "got \(name): \(reason)")
                #expect(reason.contains("expected shape \(expected)") && reason.contains("got \(got)"), "\(reason)")
            } catch {
                Issue.record("unexpected error \(error)")
            }
            #expect(bits(output) == before.0 && bits(lse) == before.1)
        }
        for shape in badOutputs {
            expectError("output", garbage(shape), goodLse, expected: [2, 4, 1500, 16], got: shape)
        }
        for shape in badLses {
            expectError("logSumExp", goodOutput, garbage(shape), expected: [2, 4, 1500], got: shape)
        }
        // The problem itself is checked first, as in the allocating call.
        var output = goodOutput, lse = goodLse
        #expect(throws: AttentionError.self) {
            try attention(query: q, key: k, value: v, options: AttentionOptions(blockSize: 0), output: &output, logSumExp: &lse)
        }
    }
}
