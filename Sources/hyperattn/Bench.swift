import ArgumentParser
import Foundation
import DistributedHyperAttention
import HyperAttention
import HyperAttentionCUDA
import MPI

/// `hyperattn bench`: a table of attention timings against the machine's measured FMA peak.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time exact and HyperAttention over sequence lengths, against the measured FMA peak.",
        discussion: """
            For each row (n × mode × causal): the best time of --repeats calls on synthetic \
            clustered Gaussian inputs (in one process, each call after the first writes into the \
            memory of the previous call's output), GFLOP/s of useful work (exact: 2·n²·(d+d_v) per head, \
            halved when causal; hyper: the work the call counted), the fp32 FMA peak measured at \
            the start of this run on --threads threads and the fraction of it, the error against a \
            float64 reference on --error-rows sampled rows, and the peak RSS against the bytes of \
            Q, K, V, O. The table goes to stdout; --json and --csv files are rewritten atomically \
            after every row. Progress goes to stderr when it is a terminal.

            Under mpirun (or with --mpi) every row runs distributed over the ranks (each rank \
            generates its own tokens) and adds: per-phase times (hash, sort/exchange, sample \
            gather, compute, return; max and mean over ranks), bytes sent and received per rank \
            (max and mean) against the bound on bytes sent (own Q, K, V, O shard + m sampled rows + \
            O(P) counters per head, × (⌈log2 P⌉+1) when causal), and the compute imbalance \
            (max/mean of compute seconds and of evaluated pairs). The peak is the sum of the \
            ranks' peaks measured together; rank 0 prints and writes the files.
            """)

    @Option(help: ArgumentHelp("Write the results as JSON to this file.", valueName: "file"))
    var json: String?

    @Option(help: ArgumentHelp("Write the results as CSV to this file.", valueName: "file"))
    var csv: String?

    @Option(name: .customLong("n"), help: ArgumentHelp("Comma-separated sequence lengths.", valueName: "n,n,…"))
    var n: IntList = IntList(values: [16384, 131072])

    @Option(help: "Batch size b.")
    var batch: Int = 1

    @Option(help: "Query heads h.")
    var heads: Int = 1

    @Option(help: "Key/value heads (GQA/MQA); a divisor of --heads. Default: --heads.")
    var kvHeads: Int?

    @Option(name: .customLong("d"), help: "Head dimension d of queries and keys.")
    var d: Int = 64

    @Option(name: .customLong("dv"), help: "Head dimension of values. Default: d.")
    var dv: Int?

    @Option(help: ArgumentHelp("Comma-separated modes: exact, hyper, ring (ring attention: exact over MPI ranks; needs mpirun or --mpi).", valueName: "modes"))
    var modes: ModeList = ModeList(values: [.exact, .hyper])

    @Option(help: ArgumentHelp("Causal rows: both, yes or no.", valueName: "both|yes|no"))
    var causal: CausalChoice = .both

    @Option(help: "Calls per row; the best time counts (≥ 1).")
    var repeats: Int = 3

    @Option(help: "Query rows (over all heads) checked against the float64 reference; 0 skips the check.")
    var errorRows: Int = 256

    @Option(help: "Milliseconds per trial of the FMA peak measurement (best of 3, ≥ 1).")
    var peakMs: Int = 200

    @Flag(help: "Run distributed over MPI even without an MPI launcher's environment (automatic under mpirun).")
    var mpi = false

    @Option(help: ArgumentHelp("Under MPI, how HyperAttention blocks are dealt to ranks: speed (in proportion to each rank's measured kernel speed) or work (equal FLOPs).", valueName: "speed|work"))
    var balance: BlockBalancing = .measuredSpeed

    @Option(help: ArgumentHelp("Under MPI, which HyperAttention blocks each rank computes: local (preferably those whose rows it already holds, so fewer rows travel) or contiguous (runs in sorted order, rank 0 first; for comparison).", valueName: "local|contiguous"))
    var placement: BlockPlacement = .rowLocality

    @Option(help: ArgumentHelp(samplePartsHelp, valueName: "blocks|owners|auto"))
    var sampleParts: SamplePartPlacement = .bySpeeds

    @Option(help: ArgumentHelp("Under MPI, whether HyperAttention rectangles are pipelined (one rectangle's rows travel while another computes) or run one after another, every collective completed before the next step (for comparison).", valueName: "yes|no"))
    var pipeline: YesNo = .yes

    @Option(help: ArgumentHelp("Under MPI with --balance speed: the weight, in (0, 1], of the speed history at each new rectangle's measurement (1, the default: all rectangles count the same; smaller follows cores whose speed changes during a call).", valueName: "decay"))
    var speedHistoryDecay: Double = DistributedAttention.defaultSpeedHistoryDecay

    @Option(help: "Also print one line per rank (bytes vs bound, pairs, compute time) under MPI.")
    var perRank: Bool = false

    @OptionGroup(title: "Algorithm")
    var algorithm: CommonAttentionOptions

    @OptionGroup(title: "Backend")
    var compute: BackendOptions

    func validate() throws { try MPILaunch.validating(checkOptions) }

    private func checkOptions() throws {
        for value in n.values { try requirePositive(value, "--n") }
        try requirePositive(batch, "--batch")
        try validateHeads(heads: heads, kvHeads: kvHeads)
        try requirePositive(d, "--d")
        if let dv { try requirePositive(dv, "--dv") }
        try requirePositive(repeats, "--repeats")
        try requirePositive(peakMs, "--peak-ms")
        guard errorRows >= 0 else { throw ValidationError("--error-rows must be ≥ 0, got \(errorRows)") }
        guard speedHistoryDecay > 0, speedHistoryDecay <= 1 else {
            throw ValidationError("--speed-history-decay must be in (0, 1], got \(speedHistoryDecay)")
        }
        if compute.isCUDA && MPILaunch.isMPI(flag: mpi) && modes.values.contains(.ring) {
            throw ValidationError("--modes ring computes on the CPU: leave ring out of --modes with --backend cuda")
        }
        if modes.values.contains(.ring) && !MPILaunch.isMPI(flag: mpi) {
            throw ValidationError("--modes ring is ring attention over MPI ranks: run under mpirun (or add --mpi for one rank)")
        }
    }

    func run() throws {
        if compute.isCUDA && !MPILaunch.isMPI(flag: mpi) {
            return try runGPUBench(compute)
        }
        if MPILaunch.isMPI(flag: mpi) {
            runDistributed()
        } else {
            try runSingleProcess()
        }
    }

    /// The settings of a single-process run: no block dealing.
    private var singleProcessSettings: BenchSettings {
        var single = settings
        single.balance = nil
        single.placement = nil
        single.sampleParts = nil
        single.pipeline = nil
        single.speedHistoryDecay = nil
        return single
    }

    /// The settings of a distributed run.
    private var settings: BenchSettings {
        BenchSettings(
            batch: batch, heads: heads, kvHeads: kvHeads ?? heads, d: d, dv: dv ?? d, seed: algorithm.seed,
            blockSize: algorithm.blockSize, samples: algorithm.samples, lshBits: algorithm.lshBits,
            minSeqLen: algorithm.minSeqLen, estimator: estimatorName(algorithm.estimator),
            scale: algorithm.scale.map(Double.init), repeats: repeats, errorRows: errorRows, balance: balance.rawValue,
            placement: placement.rawValue, sampleParts: sampleParts.rawValue, pipeline: pipeline == .yes,
            speedHistoryDecay: speedHistoryDecay)
    }

    private func runSingleProcess() throws {
        let threads = algorithm.effectiveThreads
        let progress = ProgressLine()
        var machine = MachineInfo.current()

        progress.begin("measuring FMA peak on \(threads) thread(s)")
        let peak = PeakFLOPS.measure(threads: threads, trialSeconds: Double(peakMs) / 1000)
        machine.fmaCodeGenerated = peak.gflops / Double(threads) > 10
        progress.end()

        let causalValues: [Bool] = causal == .both ? [false, true] : [causal == .yes]
        let total = n.values.count * modes.values.count * causalValues.count
        var report = BenchReport(
            date: ISO8601DateFormatter().string(from: Date()), machine: machine, threads: threads, peak: peak,
            settings: singleProcessSettings,
            rows: [])

        print("hyperattn bench: \(machine.cpuModel), \(machine.logicalCPUs) logical CPUs, \(threads) thread(s)")
        print("fp32 FMA peak: \(fixed(peak.gflops, 1)) GFLOP/s on \(threads) thread(s) (\(peak.method))")
        print("settings: b=\(batch) h=\(heads) h_kv=\(kvHeads ?? heads) d=\(d) d_v=\(dv ?? d), "
            + algorithm.summary(mode: .hyper) + ", seed \(algorithm.seed), best of \(repeats)")
        print(BenchRow.tableHeader)
        fflush(stdout)

        var index = 0
        for length in n.values {
            progress.begin("[\(index + 1)/\(total)] generating inputs n=\(length)")
            let problem = SyntheticProblem(
                batch: batch, heads: heads, kvHeads: kvHeads ?? heads, n: length, d: d, dv: dv ?? d,
                seed: algorithm.seed, threads: threads)
            let shape = try AttentionShape(
                query: problem.query.shape, key: problem.key.shape, value: problem.value.shape)
            for mode in modes.values {
                for isCausal in causalValues {
                    index += 1
                    let label = "[\(index)/\(total)] \(mode.rawValue)\(isCausal ? " causal" : "") n=\(length)"
                    let options = algorithm.attentionOptions(mode: mode.attentionMode, causal: isCausal)
                    var times: [Double] = []
                    var result: AttentionResult?
                    for r in 0..<repeats {
                        progress.begin(label + (repeats > 1 ? " (call \(r + 1)/\(repeats))" : ""))
                        let start = monotonicSeconds()
                        // After the first call, each call writes into the previous call's output
                        // and lse (moved out of `result`, so their storage is not shared and is
                        // written in place) instead of faulting in fresh pages.
                        if var last = result.take() {
                            last.stats = try attention(
                                query: problem.query, key: problem.key, value: problem.value, options: options,
                                output: &last.output, logSumExp: &last.logSumExp, progress: progress.callback)
                            result = last
                        } else {
                            result = try attention(
                                query: problem.query, key: problem.key, value: problem.value, options: options,
                                progress: progress.callback)
                        }
                        times.append(monotonicSeconds() - start)
                    }
                    let rss = peakRSSBytes()
                    var error: SampledError?
                    if errorRows > 0 {
                        progress.begin(label + " float64 reference")
                        error = try SampledError.measure(
                            query: problem.query, key: problem.key, value: problem.value, options: options,
                            result: result!, rows: errorRows, seed: algorithm.seed, threads: threads)
                    }
                    progress.end()

                    let seconds = times.min()!
                    let flops = usefulFLOPs(shape: shape, options: options, stats: result!.stats)
                    let gflops = flops / seconds / 1e9
                    let row = BenchRow(
                        mode: mode.rawValue, causal: isCausal, n: length, batch: batch, heads: heads,
                        kvHeads: kvHeads ?? heads, d: d, dv: dv ?? d, threads: threads, seconds: seconds,
                        allSeconds: times, flops: flops, gflops: gflops, peakGflops: peak.gflops,
                        fractionOfPeak: gflops / peak.gflops, evaluatedPairs: result!.stats.evaluatedPairs,
                        errorRows: error?.rows ?? 0, relativeError: error?.relativeError,
                        relativeErrorToV: error?.relativeErrorToV, maxLogSumExpError: error?.maxLogSumExpError,
                        peakRSSBytes: rss, tensorBytes: tensorBytes(shape),
                        rssToTensorBytes: Double(rss) / Double(tensorBytes(shape)))
                    result = nil
                    report.rows.append(row)
                    print(row.tableLine)
                    fflush(stdout)
                    try report.write(json: json, csv: csv)
                }
            }
        }
        if let json { print("wrote \(json)") }
        if let csv { print("wrote \(csv)") }
    }
}

// MARK: - Under mpirun

extension Bench {
    /// The bench over the ranks of MPI_COMM_WORLD: every row is a `DistributedAttention` call on
    /// shards each rank generates itself; rank 0 prints the table and writes the files.
    func runDistributed() {
        let world = MPILaunch.start()
        let ranks = world.size, isRoot = world.rank == 0
        let threads = algorithm.threads ?? MPILaunch.threadsPerRank
        let progress = ProgressLine(enabled: isRoot && isatty(2) != 0)
        var machine = MachineInfo.current()

        // A missing GPU ends the job now, not after the peak measurement.
        if compute.isCUDA {
            MPILaunch.agreeing(world) { _ = try namingCUDAFailure(rank: world.rank) { try cudaDeviceDescription(compute.deviceIndex) } }
        }
        // The ranks' peaks, measured together (they share the node's cores), summed.
        progress.begin("measuring FMA peak on \(ranks) rank(s) × \(threads) thread(s)")
        MPILaunch.orAbort(world, "MPI") { try world.barrier() }
        let mine = PeakFLOPS.measure(threads: threads, trialSeconds: Double(peakMs) / 1000)
        let trials = MPILaunch.orAbort(world, "MPI") { try world.allReduce(mine.trialGflops.map { $0 * MPILaunch.peakShare(threads: threads) }, operation: .sum) }
        let peak = PeakFLOPS(
            gflops: trials.max() ?? 0, threads: threads * ranks, trialGflops: trials, trialSeconds: mine.trialSeconds,
            method: mine.method + "; summed over \(ranks) rank(s) of \(threads) thread(s) measured at the same time (each scaled by cores/(local ranks × threads) where oversubscribed)")
        machine.fmaCodeGenerated = peak.gflops / Double(threads * ranks) > 10
        progress.end()

        let causalValues: [Bool] = causal == .both ? [false, true] : [causal == .yes]
        let total = n.values.count * modes.values.count * causalValues.count
        var report = BenchReport(
            date: ISO8601DateFormatter().string(from: Date()), machine: machine, threads: threads * ranks, peak: peak,
            settings: settings, rows: [])
        if isRoot {
            print("hyperattn bench: \(machine.cpuModel), \(machine.logicalCPUs) logical CPUs, \(ranks) MPI rank(s) × \(threads) thread(s)")
            print("fp32 FMA peak: \(fixed(peak.gflops, 1)) GFLOP/s, sum over the ranks measured together (\(mine.method))")
            print("settings: b=\(batch) h=\(heads) h_kv=\(kvHeads ?? heads) d=\(d) d_v=\(dv ?? d), "
                + algorithm.summary(mode: .hyper) + ", seed \(algorithm.seed), best of \(repeats)")
            print("byte bound (sent per rank): " + ByteBound.formula)
            print(BenchRow.tableHeader)
            fflush(stdout)
        }

        var index = 0
        for length in n.values {
            let spec = SyntheticSpec(
                batch: batch, heads: heads, kvHeads: kvHeads ?? heads, n: length, d: d, dv: dv ?? d, seed: algorithm.seed)
            let shape = spec.shape
            // Each rank's shard, generated for the layout of the method (ring causal: zigzag).
            var problem: (chunks: [Range<Int>], tensors: SyntheticProblem)?
            for mode in modes.values {
                for isCausal in causalValues {
                    index += 1
                    let label = "[\(index)/\(total)] \(mode.rawValue)\(isCausal ? " causal" : "") n=\(length)"
                    var options = compute.applied(to: algorithm.attentionOptions(mode: mode.attentionMode, causal: isCausal))
                    options.threads = threads
                    let dist: any SequenceParallelAttention = MPILaunch.agreeing(world) {
                        try checkedOptions(options, shape)
                        if mode == .ring { return try RingAttention(communicator: world, shape: shape, options: options) }
                        return try namingCUDAFailure(rank: world.rank) {
                            try DistributedAttention(communicator: world, shape: shape, options: options, balancing: balance, placement: placement, sampleParts: sampleParts,
                                                     pipelined: pipeline == .yes, speedHistoryDecay: speedHistoryDecay)
                        }
                    }
                    // Each rank's GPU, printed once (every rank takes this branch on the same row).
                    if compute.isCUDA, index == 1, let gpu = (dist as? DistributedAttention)?.accelerator?.deviceDescription {
                        let all = MPILaunch.orAbort(world, "MPI") { try world.gatherv(Array("rank \(world.rank): \(gpu)".utf8), root: 0) }
                        if let all {
                            var at = 0
                            for count in all.counts {
                                print("  gpu " + String(decoding: all.values[at..<(at + count)], as: UTF8.self))
                                at += count
                            }
                        }
                    }
                    let chunks = dist.localQueryChunks
                    if problem?.chunks != chunks {
                        problem = nil
                        progress.begin(label + " generating inputs")
                        let tensors = SyntheticProblem(spec, chunks: chunks, threads: threads)
                        MPILaunch.agree(world, [("query", tensors.query), ("key", tensors.key), ("value", tensors.value)].lazy
                            .compactMap { nonFiniteMessage($0.1, name: "rank \(world.rank): synthetic \($0.0)", firstRow: chunks[0].lowerBound) }.first)
                        problem = (chunks, tensors)
                    }
                    let inputs = problem!.tensors
                    var times: [Double] = []
                    // The best call's report, and its result only when the error check needs it:
                    // the other calls' tensors are dropped, so the next call reuses their memory
                    // (`DistributedAttention` keeps them) instead of faulting in fresh pages.
                    var best: (seconds: Double, report: DistributedReport, result: DistributedResult?)?
                    for r in 0..<repeats {
                        progress.begin(label + (repeats > 1 ? " (call \(r + 1)/\(repeats))" : ""))
                        MPILaunch.orAbort(world, "MPI") { try world.barrier() }
                        let start = MPIEnvironment.wallTime
                        let result = MPILaunch.orAbort(world, "distributed attention") {
                            try dist.run(query: inputs.query, key: inputs.key, value: inputs.value, logSumExp: errorRows > 0)
                        }
                        let elapsed = MPIEnvironment.wallTime - start
                        let seconds = MPILaunch.orAbort(world, "MPI") { try world.allReduce(elapsed, operation: .max) }
                        times.append(seconds)
                        if best == nil || seconds < best!.seconds { best = (seconds, result.report, errorRows > 0 ? result : nil) }
                    }
                    let bestReport = best!.report
                    let reports = MPILaunch.orAbort(world, "MPI") { try gatherReports(world, bestReport) }
                    let rss = MPILaunch.orAbort(world, "MPI") { try world.allReduce(peakRSSBytes(), operation: .sum) }
                    var error: (error: SampledError?, skipped: String?) = (nil, nil)
                    if errorRows > 0 {
                        progress.begin(label + " float64 reference")
                        error = MPILaunch.orAbort(world, "error check") {
                            try SampledError.measureDistributed(
                                world: world, spec: spec, options: options, result: best!.result!, queryChunks: dist.queryChunks(rank:),
                                rows: errorRows, threads: threads, maxKeyValueBytes: referenceMemoryLimit())
                        }
                    }
                    progress.end()
                    guard isRoot else { continue }

                    let summary = DistributedSummary(
                        reports: reports, shape: shape, options: options,
                        queryRows: (0..<ranks).map { dist.queryChunks(rank: $0).reduce(0) { $0 + $1.count } }, ring: mode == .ring)
                    let seconds = times.min()!
                    var stats = AttentionStats()
                    stats.evaluatedPairs = summary.evaluatedPairs
                    stats.flops = Double(summary.evaluatedPairs) * 2 * Double(shape.headDim + shape.valueDim)
                    let flops = usefulFLOPs(shape: shape, options: options, stats: stats)
                    let gflops = flops / seconds / 1e9
                    let e = error.error
                    var row = BenchRow(
                        mode: mode.rawValue, causal: isCausal, n: length, batch: batch, heads: heads,
                        kvHeads: kvHeads ?? heads, d: d, dv: dv ?? d, threads: threads * ranks, seconds: seconds,
                        allSeconds: times, flops: flops, gflops: gflops, peakGflops: peak.gflops,
                        fractionOfPeak: gflops / peak.gflops, evaluatedPairs: summary.evaluatedPairs,
                        errorRows: e?.rows ?? 0, relativeError: e?.relativeError,
                        relativeErrorToV: e?.relativeErrorToV, maxLogSumExpError: e?.maxLogSumExpError,
                        peakRSSBytes: rss, tensorBytes: tensorBytes(shape),
                        rssToTensorBytes: Double(rss) / Double(tensorBytes(shape)))
                    row.ranks = ranks
                    row.threadsPerRank = threads
                    row.phases = summary.phases
                    row.bytesSentMax = summary.bytesSent.max
                    row.bytesSentMean = summary.bytesSent.mean
                    row.bytesReceivedMax = summary.bytesReceived.max
                    row.bytesReceivedMean = summary.bytesReceived.mean
                    row.bytesSentToOthersMax = summary.bytesSentToOthers.max
                    row.bytesSentToOthersMean = summary.bytesSentToOthers.mean
                    row.computeImbalance = summary.computeImbalance
                    row.flopImbalance = summary.flopImbalance
                    row.byteBound = summary.byteBoundReport
                    (row.rectangleSharesWithSamplesAtOwners, row.rectangleShares) = summary.samplePartsAtOwners
                    row.perRank = summary.perRank
                    report.rows.append(row)
                    print(row.tableLine)
                    print("    phases: " + summary.phaseLine)
                    print("    bytes:  " + summary.trafficLine)
                    print("    imbalance: " + summary.imbalanceLine)
                    if let line = summary.samplePartsLine { print("    sample parts: " + line) }
                    if let skipped = error.skipped { print("    error check " + skipped) }
                    if perRank { for line in summary.perRankLines { print("    " + line) } }
                    fflush(stdout)
                    let written: String?
                    do { try report.write(json: json, csv: csv); written = nil } catch { written = "\(error)" }
                    if let written {
                        printLaunchError(written)
                        world.abort(code: 1)
                    }
                }
            }
        }
        if isRoot {
            if let json { print("wrote \(json)") }
            if let csv { print("wrote \(csv)") }
        }
        MPILaunch.finish()
    }
}

// MARK: - Argument types

/// A comma-separated list of integers (`16384,131072`).
struct IntList: ExpressibleByArgument {
    var values: [Int]
    init(values: [Int]) { self.values = values }
    init?(argument: String) {
        let parts = argument.split(separator: ",", omittingEmptySubsequences: false)
            .map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ $0 != nil }) else {
            _ = Self.invalid()
            return nil
        }
        values = parts.map { $0! }
    }
    /// nil, after which ArgumentParser reports the error; under mpirun only rank 0 does.
    static func invalid() -> Self? {
        MPILaunch.optionErrorFound()
        return nil
    }
    var defaultValueDescription: String { values.map(String.init).joined(separator: ",") }
}

/// What a bench row runs: the library's modes, or ring attention (exact, over MPI ranks).
enum BenchMode: String, CaseIterable, ExpressibleByArgument {
    case exact, hyper, ring
    /// The library mode computed (ring attention is exact attention).
    var attentionMode: AttentionMode { self == .hyper ? .hyper : .exact }
}

/// A comma-separated list of bench modes (`exact,hyper,ring`).
struct ModeList: ExpressibleByArgument {
    var values: [BenchMode]
    init(values: [BenchMode]) { self.values = values }
    init?(argument: String) {
        let parts = argument.split(separator: ",").map { BenchMode(rawValue: $0.trimmingCharacters(in: .whitespaces).lowercased()) }
        guard !parts.isEmpty, parts.allSatisfy({ $0 != nil }) else {
            _ = IntList.invalid()
            return nil
        }
        values = parts.map { $0! }
    }
    var defaultValueDescription: String { values.map(\.rawValue).joined(separator: ",") }
}

/// Which causal settings the bench runs.
enum CausalChoice: String, ExpressibleByArgument, CaseIterable {
    case both, yes, no
}

// MARK: - Report

/// Settings common to all rows of a bench run.
struct BenchSettings: Codable {
    var batch, heads, kvHeads, d, dv: Int
    var seed: UInt64
    var blockSize, samples, lshBits, minSeqLen: Int
    var estimator: String
    var scale: Double?
    var repeats, errorRows: Int
    /// Under MPI: how HyperAttention blocks were dealt to ranks (`speed` or `work`).
    var balance: String? = nil
    /// Under MPI: which blocks each rank computed (`local` or `contiguous`).
    var placement: String? = nil
    /// Under MPI: where the causal rectangles' sample parts ran (`blocks`, `owners` or `auto`).
    var sampleParts: String? = nil
    /// Under MPI: whether rectangles were pipelined.
    var pipeline: Bool? = nil
    /// Under MPI: the speed history's decay of `--balance speed`.
    var speedHistoryDecay: Double? = nil
}

/// One row of the bench: one (n, mode, causal).
struct BenchRow: Codable {
    var mode: String
    var causal: Bool
    var n, batch, heads, kvHeads, d, dv, threads: Int
    /// Best of `allSeconds`.
    var seconds: Double
    var allSeconds: [Double]
    /// Useful FLOPs of one call (`usefulFLOPs`).
    var flops: Double
    var gflops: Double
    /// fp32 FMA peak measured in this run on `threads` threads.
    var peakGflops: Double
    var fractionOfPeak: Double
    var evaluatedPairs: Int
    /// Error against the float64 reference on `errorRows` sampled rows (see `SampledError`).
    var errorRows: Int
    var relativeError: Double?
    var relativeErrorToV: Double?
    var maxLogSumExpError: Double?
    /// Peak RSS of the process after this row's calls (getrusage ru_maxrss), bytes.
    var peakRSSBytes: Int
    /// Bytes of Q, K, V and O.
    var tensorBytes: Int
    var rssToTensorBytes: Double

    // Distributed runs only (absent from single-process rows). peakRSSBytes is then the sum
    // over the ranks, seconds the slowest rank's, peakGflops the sum of the ranks' peaks.
    var ranks: Int? = nil
    var threadsPerRank: Int? = nil
    /// hash, exchange (sort/exchange), sampleGather, compute, return, total: seconds, max/mean over ranks.
    var phases: [String: MaxMean]? = nil
    var bytesSentMax: Double? = nil
    var bytesSentMean: Double? = nil
    var bytesReceivedMax: Double? = nil
    var bytesReceivedMean: Double? = nil
    /// Bytes sent to other ranks (excluding a rank's rows to itself), max and mean per rank.
    var bytesSentToOthersMax: Double? = nil
    var bytesSentToOthersMean: Double? = nil
    /// HyperAttention rectangles spanning ranks, counted once per rank taking part and summed
    /// over the ranks, and of those the ones whose sample parts ran at the query rows' owners.
    var rectangleShares: Int? = nil
    var rectangleSharesWithSamplesAtOwners: Int? = nil
    /// max/mean over ranks of computeSeconds.
    var computeImbalance: Double? = nil
    /// max/mean over ranks of evaluated query–key pairs.
    var flopImbalance: Double? = nil
    var byteBound: ByteBoundReport? = nil
    var perRank: [RankRow]? = nil

    static let columns: [(title: String, width: Int)] = [
        ("mode", 5), ("causal", 6), ("n", 8), ("seconds", 9), ("GFLOP/s", 8), ("peak", 7), ("of peak", 7),
        ("err/|O*|", 9), ("err/|V|", 9), ("RSS MiB", 8), ("RSS/QKVO", 8),
    ]

    static var tableHeader: String { line(columns.map(\.title)) }

    var tableLine: String {
        Self.line([
            mode, causal ? "yes" : "no", "\(n)", fixed(seconds, 4), fixed(gflops, 1), fixed(peakGflops, 1),
            fixed(100 * fractionOfPeak, 1) + "%", relativeError.map(scientific) ?? "-",
            relativeErrorToV.map(scientific) ?? "-", fixed(Double(peakRSSBytes) / 1_048_576, 1),
            fixed(rssToTensorBytes, 2),
        ])
    }

    private static func line(_ cells: [String]) -> String {
        zip(cells, columns).enumerated().map { i, pair in
            let (cell, column) = pair
            let pad = String(repeating: " ", count: max(0, column.width - cell.count))
            return i < 2 ? cell + pad : pad + cell
        }.joined(separator: "  ")
    }

    static let csvHeader = [
        "mode", "causal", "n", "batch", "heads", "kvHeads", "d", "dv", "threads", "seconds", "flops", "gflops",
        "peakGflops", "fractionOfPeak", "evaluatedPairs", "errorRows", "relativeError", "relativeErrorToV",
        "maxLogSumExpError", "peakRSSBytes", "tensorBytes", "rssToTensorBytes", "ranks", "threadsPerRank",
        "hashSecondsMax", "exchangeSecondsMax", "sampleGatherSecondsMax", "computeSecondsMax", "computeSecondsMean",
        "returnSecondsMax", "bytesSentMax", "bytesSentMean", "bytesReceivedMax", "bytesReceivedMean", "byteBoundMax",
        "bytesSentToBoundMax", "computeImbalance", "flopImbalance", "bytesSentToOthersMax", "waitSecondsMax",
        "speedCalibrationSecondsMax",
    ]

    var csvLine: String {
        func opt(_ x: Double?) -> String { x.map { "\($0)" } ?? "" }
        func opt(_ x: Int?) -> String { x.map { "\($0)" } ?? "" }
        return [
            mode, "\(causal)", "\(n)", "\(batch)", "\(heads)", "\(kvHeads)", "\(d)", "\(dv)", "\(threads)",
            "\(seconds)", "\(flops)", "\(gflops)", "\(peakGflops)", "\(fractionOfPeak)", "\(evaluatedPairs)",
            "\(errorRows)", opt(relativeError), opt(relativeErrorToV), opt(maxLogSumExpError), "\(peakRSSBytes)",
            "\(tensorBytes)", "\(rssToTensorBytes)", opt(ranks), opt(threadsPerRank), opt(phases?["hash"]?.max),
            opt(phases?["exchange"]?.max), opt(phases?["sampleGather"]?.max), opt(phases?["compute"]?.max),
            opt(phases?["compute"]?.mean), opt(phases?["return"]?.max), opt(bytesSentMax), opt(bytesSentMean),
            opt(bytesReceivedMax), opt(bytesReceivedMean), opt(byteBound?.perRank.max()),
            opt(byteBound?.measuredToBoundMax), opt(computeImbalance), opt(flopImbalance), opt(bytesSentToOthersMax),
            opt(phases?["wait"]?.max), opt(phases?["speedCalibration"]?.max),
        ].map(csvField).joined(separator: ",")
    }
}

/// Everything a bench run writes to --json.
struct BenchReport: Codable {
    var tool = "hyperattn bench"
    var date: String
    var machine: MachineInfo
    var threads: Int
    var peak: PeakFLOPS
    var settings: BenchSettings
    var rows: [BenchRow]

    /// Writes the JSON and CSV files (each atomically) where asked.
    func write(json: String?, csv: String?) throws {
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            encoder.nonConformingFloatEncodingStrategy = .convertToString(
                positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            try writeAtomically(encoder.encode(self) + Data("\n".utf8), to: json)
        }
        if let csv {
            let text = ([BenchRow.csvHeader.joined(separator: ",")] + rows.map(\.csvLine)).joined(separator: "\n") + "\n"
            try writeAtomically(Data(text.utf8), to: csv)
        }
    }
}

extension BlockBalancing: ExpressibleByArgument {}
extension BlockPlacement: ExpressibleByArgument {}
extension SamplePartPlacement: ExpressibleByArgument {}

/// `--sample-parts` of `run` and `bench`.
let samplePartsHelp = "Under MPI, where the sample parts (queries against the node's samples) of the causal recursion's HyperAttention blocks run: auto (the default: owners for a rectangle unless, by its ranks' measured speeds, some rank's sample parts would exceed its share of the work by more than 10%, else blocks), blocks (with the rest of the block, on the rank it is dealt to: all of the work dealt by speed) or owners (on each query row's rank: fewer bytes for the busiest rank, less work dealt by speed). The output is the same."


/// A yes/no option value.
enum YesNo: String, ExpressibleByArgument, CaseIterable {
    case yes, no
}
