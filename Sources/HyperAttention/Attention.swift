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
/// Allocates the output and log-sum-exp tensors; to compute again into the same memory (and
/// skip faulting in fresh pages every call), pass them back to
/// `attention(query:key:value:options:output:logSumExp:progress:)`.
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
    let shapes = try AttentionOutputShapes(query: query, key: key, value: value, options: options)
    // Not zero-filled: every row is written by the call (see `AttentionPlan.run`), so the pages
    // are first touched by the workers, in parallel.
    var output = Tensor(shape: shapes.output) { _ in }
    var lse = Tensor(shape: shapes.logSumExp) { _ in }
    let stats = try attention(query: query, key: key, value: value, options: options,
                              output: &output, logSumExp: &lse, progress: progress)
    return AttentionResult(output: output, logSumExp: lse, stats: stats)
}

/// Attention of `query` over `key`/`value`, like `attention(query:key:value:options:progress:)`,
/// written into tensors the caller provides: with the memory of an earlier call's result, say,
/// so that repeated calls do not fault in fresh pages each time.
///
/// The results are bit for bit those of the allocating call, whatever `output` and `logSumExp`
/// held before (every element is overwritten). Tensors are values: if `output` or `logSumExp`
/// shares its storage with a copy, that copy is left as it was and the tensor gets storage of
/// its own (as with any write to a shared `Tensor`); only storage this tensor holds alone is
/// written in place.
///
/// - Parameters:
///   - query: `[b, h_q, n_q, d]` (or `[h_q, n_q, d]`, `[n_q, d]`).
///   - key: `[b, h_kv, n_k, d]`, with h_q a multiple of h_kv (GQA/MQA).
///   - value: `[b, h_kv, n_k, d_v]`.
///   - options: algorithm and parameters; see `AttentionOptions` for the defaults.
///   - output: receives O; its shape must be the query's with the last dimension d_v
///     (`[b, h_q, n_q, d_v]` in the query's rank).
///   - logSumExp: receives the rows' log-sum-exp; its shape must be the query's without the
///     last dimension (`[b, h_q, n_q]` in the query's rank − 1).
///   - progress: called now and then from worker threads with the fraction done (0...1).
/// - Returns: what was computed.
/// - Throws: `AttentionError.invalidArgument` naming the offending argument (`output` or
///   `logSumExp` when a shape is wrong); the tensors are then left untouched.
@discardableResult
public func attention(
    query: Tensor, key: Tensor, value: Tensor, options: AttentionOptions = AttentionOptions(),
    output: inout Tensor, logSumExp: inout Tensor, progress: (@Sendable (Double) -> Void)? = nil
) throws -> AttentionStats {
    let shapes = try AttentionOutputShapes(query: query, key: key, value: value, options: options)
    guard output.shape == shapes.output else {
        throw AttentionError.invalidArgument(
            "output", "expected shape \(shapes.output) (the query's with last dimension d_v = \(shapes.problem.valueDim)), got \(output.shape)")
    }
    guard logSumExp.shape == shapes.logSumExp else {
        throw AttentionError.invalidArgument(
            "logSumExp", "expected shape \(shapes.logSumExp) (the query's without its last dimension), got \(logSumExp.shape)")
    }
    // Storage shared with a copy would be copied before the first write, old values and all;
    // every value is overwritten, so fresh storage does the same job without the copy.
    if !output.hasUniqueStorage() { output = Tensor(shape: shapes.output) { _ in } }
    if !logSumExp.hasUniqueStorage() { logSumExp = Tensor(shape: shapes.logSumExp) { _ in } }
    let plan = AttentionPlan(shape: shapes.problem, options: options)
    return plan.run(query: query, key: key, value: value, output: &output, lse: &logSumExp, progress: progress)
}

/// The checked problem shape of a CPU attention call and the shapes of its results.
private struct AttentionOutputShapes {
    var problem: AttentionShape
    /// The query's shape with the last dimension d_v.
    var output: [Int]
    /// The query's shape without the last dimension.
    var logSumExp: [Int]

    init(query: Tensor, key: Tensor, value: Tensor, options: AttentionOptions) throws {
        problem = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
        try options.validate(for: problem)
        if case .cuda = options.backend {
            throw AttentionError.invalidArgument(
                "backend", "the CUDA backend is served by cudaAttention in module HyperAttentionCUDA; HyperAttention.attention runs on the CPU only")
        }
        output = query.shape
        output[output.count - 1] = problem.valueDim
        logSumExp = Array(query.shape.dropLast())
    }
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
