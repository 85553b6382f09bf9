import ArgumentParser
import Foundation
import HyperAttention

/// `hyperattn` with no subcommand: attention over built-in synthetic inputs, with a summary of
/// speed, the machine's FMA peak and the error against exact attention.
struct DefaultJob: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synthetic",
        abstract: "Run attention on built-in synthetic inputs (the default when no subcommand is given).",
        discussion: """
            Generates deterministic clustered Gaussian Q, K, V from --seed (16 clusters per head; \
            each row's softmax mass falls mostly on its own cluster, so attention is far from \
            uniform), runs causal HyperAttention on them (or exact attention with --exact), and \
            prints the shape, mode, time, GFLOP/s of useful work, the fp32 FMA peak measured now \
            on the same threads, and the error against a float64 reference on --error-rows \
            sampled query rows.
            """)

    @Option(help: "Batch size b.")
    var batch: Int = 1

    @Option(help: "Query heads h.")
    var heads: Int = 8

    @Option(help: "Key/value heads (GQA/MQA); a divisor of --heads. Default: --heads.")
    var kvHeads: Int?

    @Option(name: .customLong("n"), help: "Sequence length n (queries and keys).")
    var n: Int = 32768

    @Option(name: .customLong("d"), help: "Head dimension d of queries and keys.")
    var d: Int = 64

    @Option(name: .customLong("dv"), help: "Head dimension of values. Default: d.")
    var dv: Int?

    @Flag(inversion: .prefixedNo, help: "Causal masking.")
    var causal = true

    @Flag(help: "Exact attention instead of HyperAttention.")
    var exact = false

    @OptionGroup(title: "Algorithm")
    var algorithm: CommonAttentionOptions

    @Option(help: "Query rows (over all heads) checked against the float64 reference; 0 skips the check.")
    var errorRows: Int = 256

    @Option(help: "Milliseconds per trial of the FMA peak measurement (best of 3); 0 skips it.")
    var peakMs: Int = 200

    func validate() throws {
        try requirePositive(batch, "--batch")
        try validateHeads(heads: heads, kvHeads: kvHeads)
        try requirePositive(n, "--n")
        try requirePositive(d, "--d")
        if let dv { try requirePositive(dv, "--dv") }
        guard errorRows >= 0 else { throw ValidationError("--error-rows must be ≥ 0, got \(errorRows)") }
        guard peakMs >= 0 else { throw ValidationError("--peak-ms must be ≥ 0, got \(peakMs)") }
    }

    func run() throws {
        let threads = algorithm.effectiveThreads
        let mode: AttentionMode = exact ? .exact : .hyper
        let options = algorithm.attentionOptions(mode: mode, causal: causal)
        let progress = ProgressLine()

        progress.begin("generating inputs")
        let t0 = monotonicSeconds()
        let problem = SyntheticProblem(
            batch: batch, heads: heads, kvHeads: kvHeads ?? heads, n: n, d: d, dv: dv ?? d, seed: algorithm.seed,
            threads: threads)
        let inputSeconds = monotonicSeconds() - t0
        let shape = try AttentionShape(query: problem.query.shape, key: problem.key.shape, value: problem.value.shape)

        progress.begin("measuring FMA peak")
        let peak = peakMs > 0 ? PeakFLOPS.measure(threads: threads, trialSeconds: Double(peakMs) / 1000) : nil

        progress.begin("\(mode.rawValue)\(causal ? " causal" : "") n=\(n)")
        let start = monotonicSeconds()
        let result = try attention(
            query: problem.query, key: problem.key, value: problem.value, options: options, progress: progress.callback)
        let seconds = monotonicSeconds() - start
        let rss = peakRSSBytes()

        var error: SampledError?
        if errorRows > 0 {
            progress.begin("float64 reference on \(errorRows) rows")
            error = try SampledError.measure(
                query: problem.query, key: problem.key, value: problem.value, options: options, result: result,
                rows: errorRows, seed: algorithm.seed, threads: threads)
        }
        progress.end()

        let flops = usefulFLOPs(shape: shape, options: options, stats: result.stats)
        let gflops = flops / seconds / 1e9
        var lines: [(String, String)] = [
            ("shape", "\(shape)"),
            ("mode", algorithm.summary(mode: mode)),
            ("causal", causal ? "yes" : "no"),
            ("inputs", "synthetic clustered Gaussian, seed \(algorithm.seed) (\(fixed(inputSeconds, 2)) s to generate)"),
            ("threads", "\(threads)"),
            ("time", "\(fixed(seconds, 3)) s"),
            ("GFLOP/s", "\(fixed(gflops, 1)) (\(fixed(flops / 1e9, 2)) GFLOP useful, \(result.stats.evaluatedPairs) query-key pairs evaluated)"),
        ]
        if let peak {
            lines.append(("peak", "\(fixed(peak.gflops, 1)) GFLOP/s fp32 FMA on \(threads) thread(s), measured now"))
            lines.append(("of peak", "\(fixed(100 * gflops / peak.gflops, 1))%"))
        }
        if let error {
            lines.append((
                "error",
                "‖O−O*‖/‖O*‖ = \(scientific(error.relativeError)), ‖O−O*‖/‖V‖ = \(scientific(error.relativeErrorToV)), "
                    + "max |lse−lse*| = \(scientific(error.maxLogSumExpError)) on \(error.rows) sampled rows "
                    + "(float64 reference, \(fixed(error.seconds, 2)) s)"))
        }
        let bytes = tensorBytes(shape)
        lines.append((
            "memory",
            "peak RSS \(fixed(Double(rss) / 1_048_576, 1)) MiB = \(fixed(Double(rss) / Double(bytes), 2)) × the bytes of Q, K, V, O"))

        let width = lines.map(\.0.count).max()! + 1
        print("hyperattn: synthetic job")
        for (label, value) in lines {
            print("  " + (label + ":").padding(toLength: width, withPad: " ", startingAt: 0) + " " + value)
        }
    }
}
