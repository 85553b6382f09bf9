import ArgumentParser
import Foundation
import DistributedHyperAttention
import HyperAttention
import MPI

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

            Under mpirun (or with --mpi) the job runs distributed over the ranks: each rank \
            generates only its own tokens (the inputs are a function of the global token index, so \
            the result does not depend on the number of ranks), rank 0 prints the summary, and the \
            error check gathers the sampled rows to rank 0, which generates the whole K and V for \
            the float64 reference. Threads per rank default to the cores divided by the ranks on \
            the node.
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

    @Flag(help: "Run distributed over MPI even without an MPI launcher's environment (automatic under mpirun).")
    var mpi = false

    /// Test hook: this rank writes a NaN into its generated queries (the job must fail cleanly).
    @Option(help: .hidden)
    var injectNanRank: Int?

    func validate() throws { try MPILaunch.validating(checkOptions) }

    private func checkOptions() throws {
        try requirePositive(batch, "--batch")
        try validateHeads(heads: heads, kvHeads: kvHeads)
        try requirePositive(n, "--n")
        try requirePositive(d, "--d")
        if let dv { try requirePositive(dv, "--dv") }
        guard errorRows >= 0 else { throw ValidationError("--error-rows must be ≥ 0, got \(errorRows)") }
        guard peakMs >= 0 else { throw ValidationError("--peak-ms must be ≥ 0, got \(peakMs)") }
    }

    func run() throws {
        if MPILaunch.isMPI(flag: mpi) {
            runDistributed()
        } else {
            try runSingleProcess()
        }
    }

    private func runSingleProcess() throws {
        let threads = algorithm.effectiveThreads
        let mode: AttentionMode = exact ? .exact : .hyper
        let options = algorithm.attentionOptions(mode: mode, causal: causal)
        let progress = ProgressLine()

        progress.begin("generating inputs")
        let t0 = monotonicSeconds()
        var problem = SyntheticProblem(
            batch: batch, heads: heads, kvHeads: kvHeads ?? heads, n: n, d: d, dv: dv ?? d, seed: algorithm.seed,
            threads: threads)
        if injectNanRank == 0 { problem.query = injectNaN(problem.query) }
        for (name, t) in [("query", problem.query), ("key", problem.key), ("value", problem.value)] {
            if let message = nonFiniteMessage(t, name: "synthetic \(name)", firstRow: 0) { throw CLIError(message) }
        }
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

        printSummary(lines)
    }

    private func printSummary(_ lines: [(String, String)]) {
        let width = lines.map(\.0.count).max()! + 1
        print("hyperattn: synthetic job")
        for (label, value) in lines {
            print("  " + (label + ":").padding(toLength: width, withPad: " ", startingAt: 0) + " " + value)
        }
        fflush(stdout)
    }

    // MARK: - Under mpirun

    /// The default job over the ranks of MPI_COMM_WORLD (`DistributedAttention`): each rank
    /// generates its own shard; rank 0 prints the summary.
    private func runDistributed() {
        let world = MPILaunch.start()
        let ranks = world.size
        let threads = algorithm.threads ?? MPILaunch.threadsPerRank
        let mode: AttentionMode = exact ? .exact : .hyper
        var options = algorithm.attentionOptions(mode: mode, causal: causal)
        options.threads = threads
        let progress = ProgressLine(enabled: world.rank == 0 && isatty(2) != 0)
        let spec = SyntheticSpec(batch: batch, heads: heads, kvHeads: kvHeads ?? heads, n: n, d: d, dv: dv ?? d, seed: algorithm.seed)
        let shape = spec.shape
        let dist = MPILaunch.agreeing(world) {
            try checkedOptions(options, shape)
            return try DistributedAttention(communicator: world, shape: shape, options: options)
        }

        progress.begin("generating inputs (\(ranks) ranks)")
        let t0 = MPIEnvironment.wallTime
        var problem = SyntheticProblem(spec, tokens: dist.localQueries, threads: threads)
        if injectNanRank == world.rank { problem.query = injectNaN(problem.query) }
        let firstRow = dist.localQueries.lowerBound
        MPILaunch.agree(world, [("query", problem.query), ("key", problem.key), ("value", problem.value)].lazy
            .compactMap { nonFiniteMessage($0.1, name: "rank \(world.rank): synthetic \($0.0)", firstRow: firstRow) }.first)
        let inputSeconds = MPILaunch.orAbort(world, "MPI") { try world.allReduce(MPIEnvironment.wallTime - t0, operation: .max) }

        // Every rank measures its peak at once on its threads: the sum is the job's peak.
        var peak: Double?
        if peakMs > 0 {
            progress.begin("measuring FMA peak")
            MPILaunch.orAbort(world, "MPI") { try world.barrier() }
            let mine = PeakFLOPS.measure(threads: threads, trialSeconds: Double(peakMs) / 1000).gflops * MPILaunch.peakShare(threads: threads)
            peak = MPILaunch.orAbort(world, "MPI") { try world.allReduce(mine, operation: .sum) }
        }

        progress.begin("\(mode.rawValue)\(causal ? " causal" : "") n=\(n) on \(ranks) ranks")
        MPILaunch.orAbort(world, "MPI") { try world.barrier() }
        let start = MPIEnvironment.wallTime
        let result = MPILaunch.orAbort(world, "distributed attention") {
            try dist.run(query: problem.query, key: problem.key, value: problem.value, logSumExp: errorRows > 0)
        }
        let elapsed = MPIEnvironment.wallTime - start
        let seconds = MPILaunch.orAbort(world, "MPI") { try world.allReduce(elapsed, operation: .max) }
        let reports = MPILaunch.orAbort(world, "MPI") { try gatherReports(world, result.report) }
        let rss = MPILaunch.orAbort(world, "MPI") { try world.allReduce(peakRSSBytes(), operation: .sum) }
        problem = SyntheticProblem(spec, tokens: 0..<0, threads: 1)  // free the shard

        var error: (error: SampledError?, skipped: String?) = (nil, nil)
        if errorRows > 0 {
            progress.begin("float64 reference on \(errorRows) rows")
            error = MPILaunch.orAbort(world, "error check") {
                try SampledError.measureDistributed(
                    world: world, spec: spec, options: options, result: result, queryChunks: dist.queryChunks(rank:),
                    rows: errorRows, threads: threads, maxKeyValueBytes: referenceMemoryLimit())
            }
        }
        progress.end()

        if world.rank == 0 {
            let summary = DistributedSummary(
                reports: reports, shape: shape, options: options,
                queryRows: (0..<ranks).map { dist.queryChunks(rank: $0).reduce(0) { $0 + $1.count } })
            let flops = options.mode == .exact
                ? usefulFLOPs(shape: shape, options: options, stats: result.stats)
                : Double(summary.evaluatedPairs) * 2 * Double(shape.headDim + shape.valueDim)
            let gflops = flops / seconds / 1e9
            var lines: [(String, String)] = [
                ("shape", "\(shape)"),
                ("mode", algorithm.summary(mode: mode)),
                ("causal", causal ? "yes" : "no"),
                ("inputs", "synthetic clustered Gaussian, seed \(algorithm.seed), each rank its own tokens (\(fixed(inputSeconds, 2)) s to generate)"),
                ("ranks", "\(ranks) (MPI), \(threads) thread(s) per rank"),
                ("threads", "\(threads * ranks) in all"),
                ("time", "\(fixed(seconds, 3)) s (slowest rank)"),
                ("GFLOP/s", "\(fixed(gflops, 1)) (\(fixed(flops / 1e9, 2)) GFLOP useful, \(summary.evaluatedPairs) query-key pairs evaluated)"),
            ]
            if let peak {
                lines.append(("peak", "\(fixed(peak, 1)) GFLOP/s fp32 FMA, sum over the ranks measured together now (scaled by cores/threads where oversubscribed)"))
                lines.append(("of peak", "\(fixed(100 * gflops / peak, 1))%"))
            }
            lines.append(("phases", summary.phaseLine))
            lines.append(("traffic", summary.trafficLine))
            lines.append(("imbalance", summary.imbalanceLine))
            if let line = summary.samplePartsLine { lines.append(("sample parts", line)) }
            if let e = error.error {
                lines.append((
                    "error",
                    "‖O−O*‖/‖O*‖ = \(scientific(e.relativeError)), ‖O−O*‖/‖V‖ = \(scientific(e.relativeErrorToV)), "
                        + "max |lse−lse*| = \(scientific(e.maxLogSumExpError)) on \(e.rows) sampled rows "
                        + "(float64 reference on rank 0, \(fixed(e.seconds, 2)) s)"))
            } else if let skipped = error.skipped {
                lines.append(("error", skipped))
            }
            let bytes = tensorBytes(shape)
            lines.append((
                "memory",
                "peak RSS summed over ranks \(fixed(Double(rss) / 1_048_576, 1)) MiB = \(fixed(Double(rss) / Double(bytes), 2)) × the bytes of Q, K, V, O"))
            printSummary(lines)
        }
        MPILaunch.finish()
    }
}

/// `t` with its first element set to NaN (the `--inject-nan-rank` test hook).
func injectNaN(_ t: Tensor) -> Tensor {
    guard t.count > 0 else { return t }
    var scalars = t.scalars
    scalars[0] = .nan
    return (try? Tensor(shape: t.shape, scalars: scalars)) ?? t
}

/// The options checked against the shape, errors naming the flag.
func checkedOptions(_ options: AttentionOptions, _ shape: AttentionShape) throws {
    do {
        try options.validate(for: shape)
    } catch let AttentionError.invalidArgument(argument, reason) {
        let flags = ["causal": "--causal", "blockSize": "--block-size", "samples": "--samples", "lshBits": "--lsh-bits",
                     "minSeqLen": "--min-seq-len", "threads": "--threads", "scale": "--scale"]
        throw CLIError("\(flags[argument] ?? argument): \(reason)")
    }
}

/// The most rank 0 may allocate for the whole K and V of the error check: a quarter of the
/// physical memory, at most 8 GiB (`HYPERATTN_REFERENCE_MAX_BYTES` overrides).
func referenceMemoryLimit() -> Int {
    if let text = ProcessInfo.processInfo.environment["HYPERATTN_REFERENCE_MAX_BYTES"], let value = Int(text) { return value }
    return min(8 << 30, Int(ProcessInfo.processInfo.physicalMemory / 4))
}
