import ArgumentParser
import Foundation
import HyperAttention

/// The algorithm flags shared by the subcommands: everything of `AttentionOptions` except the
/// mode and causality, which each subcommand spells its own way.
struct CommonAttentionOptions: ParsableArguments {
    @Option(help: "Seed of every random choice (synthetic inputs, hash directions, samples).")
    var seed: UInt64 = 0

    @Option(help: "Worker threads (also the threads the FMA peak is measured on). Default: all cores; under mpirun the cores divided by the ranks on the node.")
    var threads: Int?

    @Option(help: "Key block size b of the LSH block part (≥ 1).")
    var blockSize: Int = 256

    @Option(help: "Sampled keys m of the residual (≥ 1).")
    var samples: Int = 256

    @Option(help: "Random hyperplanes r of the sortLSH hash, 1...16 (2^r buckets).")
    var lshBits: Int = 7

    @Option(help: "HyperAttention falls back to exact attention below this length; causal recursion leaves are at most this long (≥ 1).")
    var minSeqLen: Int = 2048

    @Option(
        help: ArgumentHelp(
            "Residual estimator: uniform, stratified or stratified-cv (stratified + control variate on Σ V).",
            valueName: "estimator"),
        transform: parseEstimator)
    var estimator: ResidualEstimator = AttentionOptions().estimator

    @Option(help: "Logit scale (default 1/sqrt(d)).")
    var scale: Float?

    /// Under mpirun only rank 0 reports an option error (`MPILaunch.validating`).
    func validate() throws { try MPILaunch.validating(checkOptions) }

    private func checkOptions() throws {
        try requirePositive(blockSize, "--block-size")
        try requirePositive(samples, "--samples")
        try requirePositive(minSeqLen, "--min-seq-len")
        if let threads { try requirePositive(threads, "--threads") }
        guard (1...16).contains(lshBits) else { throw ValidationError("--lsh-bits must be in 1...16, got \(lshBits)") }
        if let scale, !scale.isFinite || scale == 0 {
            throw ValidationError("--scale must be finite and non-zero, got \(scale)")
        }
    }

    /// The thread count in effect.
    var effectiveThreads: Int { threads ?? ProcessInfo.processInfo.activeProcessorCount }

    /// The library options for a mode and causality.
    func attentionOptions(mode: AttentionMode, causal: Bool) -> AttentionOptions {
        AttentionOptions(
            mode: mode, causal: causal, scale: scale, lshBits: lshBits, blockSize: blockSize, samples: samples,
            minSeqLen: minSeqLen, seed: seed, threads: effectiveThreads, estimator: estimator)
    }

    /// One line of the settings that matter for `mode`.
    func summary(mode: AttentionMode) -> String {
        mode == .exact
            ? "exact"
            : "hyper (block \(blockSize), samples \(samples), lsh bits \(lshBits), min seq len \(minSeqLen), estimator \(estimatorName(estimator)))"
    }
}

/// Throws `ValidationError("<flag> must be ≥ 1, got <value>")` unless value ≥ 1.
func requirePositive(_ value: Int, _ flag: String) throws {
    guard value >= 1 else { throw ValidationError("\(flag) must be ≥ 1, got \(value)") }
}

/// Checks the head counts of a problem: heads ≥ 1, kvHeads ≥ 1 and a divisor of heads.
func validateHeads(heads: Int, kvHeads: Int?) throws {
    try requirePositive(heads, "--heads")
    if let kvHeads {
        try requirePositive(kvHeads, "--kv-heads")
        guard heads % kvHeads == 0 else {
            throw ValidationError("--heads (\(heads)) must be a multiple of --kv-heads (\(kvHeads))")
        }
    }
}

/// Parses an estimator name: `uniform`, `stratified`, `stratified-cv` (or the Swift case names).
@Sendable func parseEstimator(_ text: String) throws -> ResidualEstimator {
    switch text.lowercased() {
    case "uniform": return .uniform
    case "stratified": return .stratified
    case "stratified-cv", "stratified-control-variate", "stratifiedcontrolvariate", "cv": return .stratifiedControlVariate
    default:
        MPILaunch.optionErrorFound()  // under mpirun: only rank 0 goes on to report
        throw ValidationError("unknown estimator '\(text)'; expected uniform, stratified or stratified-cv")
    }
}

/// The command-line name of an estimator.
func estimatorName(_ e: ResidualEstimator) -> String {
    switch e {
    case .uniform: return "uniform"
    case .stratified: return "stratified"
    case .stratifiedControlVariate: return "stratified-cv"
    }
}
