import Foundation

/// Work counters of one attention call.
public struct AttentionStats: Sendable, Equatable {
    /// Query–key pairs whose logit was evaluated (block keys, sampled keys and exact tiles),
    /// not counting tile padding.
    public var evaluatedPairs: Int = 0
    /// Useful floating-point operations: `evaluatedPairs · 2 · (d + d_v)` (one multiply-add per
    /// element of q·k and of p·v).
    public var flops: Double = 0
    public init() {}
}

/// The result of an attention call.
public struct AttentionResult: Sendable {
    /// O = softmax(scale · Q Kᵀ) V, shape `[b, h_q, n_q, d_v]` (in the query's rank).
    public var output: Tensor
    /// Row log-sum-exp lse_i = log Σ_k exp(scale · q_i · k_k), shape `[b, h_q, n_q]` (query rank − 1).
    public var logSumExp: Tensor
    /// What was computed.
    public var stats: AttentionStats

    public init(output: Tensor, logSumExp: Tensor, stats: AttentionStats) {
        self.output = output
        self.logSumExp = logSumExp
        self.stats = stats
    }
}

/// Attention of `query` over `key`/`value`, exact or HyperAttention, on all cores.
///
///     O = softmax(Q Kᵀ · scale) V,   lse_i = log Σ_k exp(scale · q_i·k_k)
///
/// - Parameters:
///   - query: `[b, h_q, n_q, d]` (or `[h_q, n_q, d]`, `[n_q, d]`).
///   - key: `[b, h_kv, n_k, d]`, with h_q a multiple of h_kv (GQA/MQA).
///   - value: `[b, h_kv, n_k, d_v]`.
///   - options: algorithm and parameters; see `AttentionOptions` for the defaults.
///   - progress: called now and then from worker threads with the fraction done (0...1).
/// - Throws: `AttentionError.invalidArgument` naming the offending argument.
public func attention(
    query: Tensor, key: Tensor, value: Tensor, options: AttentionOptions = AttentionOptions(),
    progress: (@Sendable (Double) -> Void)? = nil
) throws -> AttentionResult {
    let shape = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
    try options.validate(for: shape)
    if case .cuda = options.backend {
        throw AttentionError.invalidArgument(
            "backend", "the CUDA backend is served by cudaAttention in module HyperAttentionCUDA; HyperAttention.attention runs on the CPU only")
    }
    let plan = AttentionPlan(shape: shape, options: options)
    return plan.run(query: query, key: key, value: value, progress: progress)
}

extension AttentionOptions {
    /// Checks the options against a problem shape.
    /// - Throws: `AttentionError.invalidArgument` naming the option.
    public func validate(for shape: AttentionShape) throws {
        if causal && shape.queryCount != shape.keyCount {
            throw AttentionError.invalidArgument(
                "causal", "causal attention needs n_q == n_k, got n_q = \(shape.queryCount), n_k = \(shape.keyCount)")
        }
        if let scale, !scale.isFinite {
            throw AttentionError.invalidArgument("scale", "must be finite, got \(scale)")
        }
        guard (1...16).contains(lshBits) else {
            throw AttentionError.invalidArgument("lshBits", "must be in 1...16, got \(lshBits)")
        }
        guard blockSize >= 1 else { throw AttentionError.invalidArgument("blockSize", "must be ≥ 1, got \(blockSize)") }
        guard samples >= 1 else { throw AttentionError.invalidArgument("samples", "must be ≥ 1, got \(samples)") }
        guard minSeqLen >= 1 else { throw AttentionError.invalidArgument("minSeqLen", "must be ≥ 1, got \(minSeqLen)") }
        if case let .cuda(device, _) = backend, device < 0 {
            throw AttentionError.invalidArgument("backend", "CUDA device index must be ≥ 0, got \(device)")
        }
        if let threads, threads < 1 {
            throw AttentionError.invalidArgument("threads", "must be ≥ 1, got \(threads)")
        }
    }

    /// The logit scale in effect for head dimension `d`.
    public func effectiveScale(headDim d: Int) -> Float { scale ?? 1 / Float(d).squareRoot() }

    /// The thread count in effect.
    public var effectiveThreads: Int { threads ?? ProcessInfo.processInfo.activeProcessorCount }
}
