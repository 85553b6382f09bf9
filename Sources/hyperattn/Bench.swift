import ArgumentParser
import Foundation
import HyperAttention

/// `hyperattn bench`: a table of attention timings against the machine's measured FMA peak.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time exact and HyperAttention over sequence lengths, against the measured FMA peak.",
        discussion: """
            For each row (n × mode × causal): the best time of --repeats calls on synthetic \
            clustered Gaussian inputs, GFLOP/s of useful work (exact: 2·n²·(d+d_v) per head, \
            halved when causal; hyper: the work the call counted), the fp32 FMA peak measured at \
            the start of this run on --threads threads and the fraction of it, the error against a \
            float64 reference on --error-rows sampled rows, and the peak RSS against the bytes of \
            Q, K, V, O. The table goes to stdout; --json and --csv files are rewritten atomically \
            after every row. Progress goes to stderr when it is a terminal.
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

    @Option(help: ArgumentHelp("Comma-separated modes: exact, hyper.", valueName: "modes"))
    var modes: ModeList = ModeList(values: [.exact, .hyper])

    @Option(help: ArgumentHelp("Causal rows: both, yes or no.", valueName: "both|yes|no"))
    var causal: CausalChoice = .both

    @Option(help: "Calls per row; the best time counts (≥ 1).")
    var repeats: Int = 3

    @Option(help: "Query rows (over all heads) checked against the float64 reference; 0 skips the check.")
    var errorRows: Int = 256

    @Option(help: "Milliseconds per trial of the FMA peak measurement (best of 3, ≥ 1).")
    var peakMs: Int = 200

    @OptionGroup(title: "Algorithm")
    var algorithm: CommonAttentionOptions

    func validate() throws {
        for value in n.values { try requirePositive(value, "--n") }
        try requirePositive(batch, "--batch")
        try validateHeads(heads: heads, kvHeads: kvHeads)
        try requirePositive(d, "--d")
        if let dv { try requirePositive(dv, "--dv") }
        try requirePositive(repeats, "--repeats")
        try requirePositive(peakMs, "--peak-ms")
        guard errorRows >= 0 else { throw ValidationError("--error-rows must be ≥ 0, got \(errorRows)") }
    }

    func run() throws {
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
            settings: BenchSettings(
                batch: batch, heads: heads, kvHeads: kvHeads ?? heads, d: d, dv: dv ?? d, seed: algorithm.seed,
                blockSize: algorithm.blockSize, samples: algorithm.samples, lshBits: algorithm.lshBits,
                minSeqLen: algorithm.minSeqLen, estimator: estimatorName(algorithm.estimator),
                scale: algorithm.scale.map(Double.init), repeats: repeats, errorRows: errorRows),
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
                    let options = algorithm.attentionOptions(mode: mode, causal: isCausal)
                    var times: [Double] = []
                    var result: AttentionResult?
                    for r in 0..<repeats {
                        progress.begin(label + (repeats > 1 ? " (call \(r + 1)/\(repeats))" : ""))
                        result = nil  // free the previous output first
                        let start = monotonicSeconds()
                        result = try attention(
                            query: problem.query, key: problem.key, value: problem.value, options: options,
                            progress: progress.callback)
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

// MARK: - Argument types

/// A comma-separated list of integers (`16384,131072`).
struct IntList: ExpressibleByArgument {
    var values: [Int]
    init(values: [Int]) { self.values = values }
    init?(argument: String) {
        let parts = argument.split(separator: ",", omittingEmptySubsequences: false)
            .map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ $0 != nil }) else { return nil }
        values = parts.map { $0! }
    }
    var defaultValueDescription: String { values.map(String.init).joined(separator: ",") }
}

/// A comma-separated list of attention modes (`exact,hyper`).
struct ModeList: ExpressibleByArgument {
    var values: [AttentionMode]
    init(values: [AttentionMode]) { self.values = values }
    init?(argument: String) {
        let parts = argument.split(separator: ",").map { AttentionMode(rawValue: $0.trimmingCharacters(in: .whitespaces).lowercased()) }
        guard !parts.isEmpty, parts.allSatisfy({ $0 != nil }) else { return nil }
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
        "maxLogSumExpError", "peakRSSBytes", "tensorBytes", "rssToTensorBytes",
    ]

    var csvLine: String {
        func opt(_ x: Double?) -> String { x.map { "\($0)" } ?? "" }
        return [
            mode, "\(causal)", "\(n)", "\(batch)", "\(heads)", "\(kvHeads)", "\(d)", "\(dv)", "\(threads)",
            "\(seconds)", "\(flops)", "\(gflops)", "\(peakGflops)", "\(fractionOfPeak)", "\(evaluatedPairs)",
            "\(errorRows)", opt(relativeError), opt(relativeErrorToV), opt(maxLogSumExpError), "\(peakRSSBytes)",
            "\(tensorBytes)", "\(rssToTensorBytes)",
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
