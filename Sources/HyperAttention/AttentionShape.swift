/// The dimensions of one attention problem, read off Q, K and V in SDPA layout.
public struct AttentionShape: Sendable, Equatable, CustomStringConvertible {
    public var batch: Int
    public var queryHeads: Int
    public var keyHeads: Int
    public var queryCount: Int
    public var keyCount: Int
    public var headDim: Int
    public var valueDim: Int

    /// Number of query heads that share one key/value head (GQA group size).
    public var groupSize: Int { queryHeads / keyHeads }

    public var description: String {
        "b=\(batch) h=\(queryHeads)" + (keyHeads != queryHeads ? " h_kv=\(keyHeads)" : "")
            + " n=\(queryCount)" + (keyCount != queryCount ? " n_k=\(keyCount)" : "")
            + " d=\(headDim)" + (valueDim != headDim ? " d_v=\(valueDim)" : "")
    }

    /// Reads and checks the shapes of Q `[b, h_q, n_q, d]`, K `[b, h_kv, n_k, d]`,
    /// V `[b, h_kv, n_k, d_v]` (ranks 2 and 3 drop leading 1s).
    /// - Throws: `AttentionError.invalidArgument` naming the tensor that is wrong.
    public init(query: [Int], key: [Int], value: [Int]) throws {
        func four(_ s: [Int], _ name: String) throws -> [Int] {
            guard (2...4).contains(s.count) else {
                throw AttentionError.invalidArgument(name, "expected shape [n, d], [h, n, d] or [b, h, n, d], got \(s)")
            }
            return Array(repeating: 1, count: 4 - s.count) + s
        }
        let q = try four(query, "query"), k = try four(key, "key"), v = try four(value, "value")
        for (name, s) in [("query", q), ("key", k), ("value", v)] {
            guard s[0] >= 1 else { throw AttentionError.invalidArgument(name, "batch must be ≥ 1, got \(s[0])") }
            guard s[1] >= 1 else { throw AttentionError.invalidArgument(name, "heads must be ≥ 1, got \(s[1])") }
            guard s[2] >= 1 else { throw AttentionError.invalidArgument(name, "sequence length n must be ≥ 1, got \(s[2])") }
            guard s[3] >= 1 else { throw AttentionError.invalidArgument(name, "head dim d must be ≥ 1, got \(s[3])") }
        }
        guard query.count == key.count, key.count == value.count else {
            throw AttentionError.invalidArgument("key", "query, key and value must have the same rank, got \(query), \(key), \(value)")
        }
        guard q[0] == k[0], k[0] == v[0] else {
            throw AttentionError.invalidArgument("key", "batch sizes differ: query \(q[0]), key \(k[0]), value \(v[0])")
        }
        guard k[1] == v[1] else {
            throw AttentionError.invalidArgument("value", "key has \(k[1]) heads but value has \(v[1])")
        }
        guard k[2] == v[2] else {
            throw AttentionError.invalidArgument("value", "key has \(k[2]) rows but value has \(v[2])")
        }
        guard q[3] == k[3] else {
            throw AttentionError.invalidArgument("key", "query head dim \(q[3]) differs from key head dim \(k[3])")
        }
        guard q[1] % k[1] == 0 else {
            throw AttentionError.invalidArgument("key", "query heads (\(q[1])) must be a multiple of key/value heads (\(k[1]))")
        }
        self.init(batch: q[0], queryHeads: q[1], keyHeads: k[1], queryCount: q[2], keyCount: k[2], headDim: q[3], valueDim: v[3])
    }

    public init(batch: Int, queryHeads: Int, keyHeads: Int, queryCount: Int, keyCount: Int, headDim: Int, valueDim: Int) {
        self.batch = batch
        self.queryHeads = queryHeads
        self.keyHeads = keyHeads
        self.queryCount = queryCount
        self.keyCount = keyCount
        self.headDim = headDim
        self.valueDim = valueDim
    }
}
