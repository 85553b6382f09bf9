import HyperAttention
import HyperAttentionTestSupport
import Testing

@Suite("Tensor rows along the sequence axis")
struct TensorRowsTests {
    @Test("rows(_:) picks the chunks one after the other for every leading index; joiningRows undoes it")
    func rowsAndJoin() throws {
        let t = TestData.gaussian([2, 3, 10, 4], seed: 9)
        let chunks = [7..<10, 0..<3, 5..<5, 3..<4]
        let picked = t.rows(chunks)
        #expect(picked.shape == [2, 3, 7, 4])
        let x = t.scalars, y = picked.scalars
        var i = 0
        for outer in 0..<6 {
            for chunk in chunks {
                for row in chunk {
                    for c in 0..<4 {
                        #expect(y[i] == x[(outer * 10 + row) * 4 + c])
                        i += 1
                    }
                }
            }
        }
        // Splitting into consecutive pieces and joining them gives the tensor back.
        let pieces = [0..<4, 4..<4, 4..<9, 9..<10].map { t.rows([$0]) }
        #expect(Tensor.joiningRows(pieces).shape == t.shape)
        #expect(Tensor.joiningRows(pieces).scalars == x)
        #expect(t.rows([0..<10]).scalars == x)
    }
}
