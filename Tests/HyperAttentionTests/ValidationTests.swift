import HyperAttention
import HyperAttentionTestSupport
import Testing

@Suite("Argument validation")
struct ValidationTests {
    func expectError(_ argument: String, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected an error naming \(argument)")
        } catch let AttentionError.invalidArgument(name, reason) {
            #expect(name == argument, "got \(name): \(reason)")
            #expect(!reason.isEmpty)
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test("bad shapes and options throw errors naming the argument")
    func badArguments() {
        let q = TestData.gaussian([1, 4, 10, 8], seed: 1), k = TestData.gaussian([1, 2, 10, 8], seed: 2)
        let v = TestData.gaussian([1, 2, 10, 8], seed: 3)
        expectError("key") { _ = try attention(query: q, key: TestData.gaussian([1, 3, 10, 8], seed: 2), value: TestData.gaussian([1, 3, 10, 8], seed: 2)) }
        expectError("key") { _ = try attention(query: q, key: TestData.gaussian([1, 2, 10, 9], seed: 2), value: v) }
        expectError("value") { _ = try attention(query: q, key: k, value: TestData.gaussian([1, 2, 11, 8], seed: 2)) }
        expectError("value") { _ = try attention(query: q, key: k, value: TestData.gaussian([1, 1, 10, 8], seed: 2)) }
        expectError("key") { _ = try attention(query: q, key: TestData.gaussian([2, 2, 10, 8], seed: 2), value: TestData.gaussian([2, 2, 10, 8], seed: 2)) }
        expectError("query") { _ = try attention(query: TestData.gaussian([1, 4, 0, 8], seed: 1), key: k, value: v) }
        expectError("query") { _ = try attention(query: TestData.gaussian([1, 4, 10, 0], seed: 1), key: TestData.gaussian([1, 2, 10, 0], seed: 1), value: v) }
        expectError("query") { _ = try attention(query: TestData.gaussian([10], seed: 1), key: k, value: v) }
        expectError("causal") { _ = try attention(query: TestData.gaussian([1, 4, 9, 8], seed: 1), key: k, value: v, options: AttentionOptions(causal: true)) }
        expectError("blockSize") { _ = try attention(query: q, key: k, value: v, options: AttentionOptions(blockSize: 0)) }
        expectError("samples") { _ = try attention(query: q, key: k, value: v, options: AttentionOptions(samples: 0)) }
        expectError("lshBits") { _ = try attention(query: q, key: k, value: v, options: AttentionOptions(lshBits: 0)) }
        expectError("lshBits") { _ = try attention(query: q, key: k, value: v, options: AttentionOptions(lshBits: 17)) }
        expectError("minSeqLen") { _ = try attention(query: q, key: k, value: v, options: AttentionOptions(minSeqLen: 0)) }
        expectError("threads") { _ = try attention(query: q, key: k, value: v, options: AttentionOptions(threads: 0)) }
        expectError("scale") { _ = try attention(query: q, key: k, value: v, options: AttentionOptions(scale: .nan)) }
        expectError("scalars") { _ = try Tensor(shape: [2, 3], scalars: [1, 2]) }
    }
}
