import DistributedHyperAttention
import Foundation
import HyperAttention
import MPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Machine

/// What the benchmark ran on.
struct MachineInfo: Codable, Sendable {
    /// `model name` from /proc/cpuinfo.
    var cpuModel: String
    /// Logical CPUs available to the process.
    var logicalCPUs: Int
    /// Distinct (physical id, core id) pairs in /proc/cpuinfo (logical CPUs when unknown).
    var physicalCores: Int
    var hostname: String
    var operatingSystem: String
    /// `release` or `debug`.
    var configuration: String
    /// Whether FMA instructions were generated: inferred from the measured peak (a loop compiled
    /// without `-target-cpu haswell` calls `fmaf` per lane and runs below 10 GFLOP/s per thread).
    var fmaCodeGenerated: Bool?
    /// The build command of `scripts/build.sh`, which the binary is meant to be built with.
    var buildFlags: String

    static func current() -> MachineInfo {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        var model = "unknown"
        var cores = Set<String>()
        var physical = ""
        for line in cpuinfo.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "model name" where model == "unknown": model = parts[1]
            case "physical id": physical = parts[1]
            case "core id": cores.insert(physical + ":" + parts[1])
            default: break
            }
        }
        #if DEBUG
        let configuration = "debug"
        #else
        let configuration = "release"
        #endif
        let logical = ProcessInfo.processInfo.activeProcessorCount
        return MachineInfo(
            cpuModel: model, logicalCPUs: logical, physicalCores: cores.isEmpty ? logical : cores.count,
            hostname: ProcessInfo.processInfo.hostName,
            operatingSystem: ProcessInfo.processInfo.operatingSystemVersionString,
            configuration: configuration, fmaCodeGenerated: nil,
            buildFlags: "swift build -c release -Xswiftc -target-cpu -Xswiftc haswell")
    }
}

/// Peak resident set size of this process so far, in bytes (`getrusage` `ru_maxrss`).
func peakRSSBytes() -> Int {
    var usage = rusage()
    #if os(Linux)
    guard getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage) == 0 else { return 0 }
    return Int(usage.ru_maxrss) * 1024  // kilobytes on Linux
    #else
    guard getrusage(RUSAGE_SELF, &usage) == 0 else { return 0 }
    return Int(usage.ru_maxrss)
    #endif
}

/// Bytes of the fp32 tensors Q, K, V and O of a problem.
func tensorBytes(_ s: AttentionShape) -> Int {
    let q = s.batch * s.queryHeads * s.queryCount * s.headDim
    let k = s.batch * s.keyHeads * s.keyCount * s.headDim
    let v = s.batch * s.keyHeads * s.keyCount * s.valueDim
    let o = s.batch * s.queryHeads * s.queryCount * s.valueDim
    return 4 * (q + k + v + o)
}

// MARK: - Progress

/// A single progress line on stderr, rewritten in place (`\r[3/8] hyper causal n=131072  42%`),
/// shown only when stderr is a terminal. Safe to update from the attention call's worker threads;
/// redraws at most every 100 ms.
final class ProgressLine: @unchecked Sendable {
    let enabled: Bool
    private let lock = NSLock()
    private var label = ""
    private var lastDraw = 0.0

    init(enabled: Bool = isatty(2) != 0) { self.enabled = enabled }

    /// Starts a new step.
    func begin(_ label: String) {
        guard enabled else { return }
        lock.lock(); defer { lock.unlock() }
        self.label = label
        lastDraw = 0
        draw("\r\u{1B}[K\(label) …")
    }

    /// Reports the fraction done of the current step.
    func update(_ fraction: Double) {
        guard enabled else { return }
        lock.lock(); defer { lock.unlock() }
        let now = monotonicSeconds()
        guard now - lastDraw >= 0.1 else { return }
        lastDraw = now
        draw("\r\u{1B}[K\(label) \(Int((fraction * 100).rounded()))%")
    }

    /// A callback for `attention(progress:)`.
    var callback: (@Sendable (Double) -> Void)? {
        guard enabled else { return nil }
        return { [self] (fraction: Double) in self.update(fraction) }
    }

    /// Clears the line.
    func end() {
        guard enabled else { return }
        lock.lock(); defer { lock.unlock() }
        draw("\r\u{1B}[K")
    }

    private func draw(_ text: String) {
        fputs(text, stderr)
        fflush(stderr)
    }
}

// MARK: - Files

/// Writes `data` to `path` atomically: a temporary file in the same directory, then rename(2).
func writeAtomically(_ data: Data, to path: String) throws {
    let url = URL(fileURLWithPath: path)
    let temporary = url.deletingLastPathComponent()
        .appendingPathComponent(".\(url.lastPathComponent).tmp.\(getpid())")
    do {
        try data.write(to: temporary)
    } catch {
        throw CLIError("cannot write \(path): \(error.localizedDescription)")
    }
    guard rename(temporary.path, url.path) == 0 else {
        let reason = String(cString: strerror(errno))
        try? FileManager.default.removeItem(at: temporary)
        throw CLIError("cannot write \(path): \(reason)")
    }
}

// MARK: - Formatting

/// `x` with `digits` decimals.
func fixed(_ x: Double, _ digits: Int) -> String {
    x.isFinite ? String(format: "%.\(digits)f", x) : "\(x)"
}

/// `x` in scientific notation with 2 decimals (`1.23e-04`).
func scientific(_ x: Double) -> String {
    x.isFinite ? String(format: "%.2e", x) : "\(x)"
}

/// A CSV field, quoted when needed.
func csvField(_ s: String) -> String {
    s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" })
        ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
}

// MARK: - Distributed runs

/// Every rank's `DistributedReport`, on every rank (one allgather of 14 numbers per rank).
func gatherReports(_ world: Communicator, _ report: DistributedReport) throws -> [DistributedReport] {
    let mine = [
        report.hashSeconds, report.exchangeSeconds, report.sampleGatherSeconds, report.computeSeconds, report.returnSeconds,
        report.totalSeconds, Double(report.bytesSent), Double(report.bytesReceived), Double(report.evaluatedPairs),
        report.waitSeconds, Double(report.bytesSentToSelf), Double(report.spanningRectangles), Double(report.rectanglesWithSamplesAtOwners),
        report.speedCalibrationSeconds,
    ]
    let n = mine.count
    let all = try world.allGather(mine)
    return (0..<world.size).map { r in
        let x = all[(r * n)..<(r * n + n)].map { $0 }
        var rep = DistributedReport()
        rep.hashSeconds = x[0]; rep.exchangeSeconds = x[1]; rep.sampleGatherSeconds = x[2]; rep.computeSeconds = x[3]
        rep.returnSeconds = x[4]; rep.totalSeconds = x[5]
        rep.bytesSent = Int(x[6]); rep.bytesReceived = Int(x[7]); rep.evaluatedPairs = Int(x[8])
        rep.waitSeconds = x[9]; rep.bytesSentToSelf = Int(x[10])
        rep.spanningRectangles = Int(x[11]); rep.rectanglesWithSamplesAtOwners = Int(x[12])
        rep.speedCalibrationSeconds = x[13]
        return rep
    }
}

/// Maximum and mean over the ranks.
struct MaxMean: Codable, Equatable {
    var max: Double
    var mean: Double
    init(_ values: [Double]) {
        max = values.max() ?? 0
        mean = values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count)
    }
    /// max / mean (1 = perfectly balanced; 1 when everything is 0).
    var imbalance: Double { mean > 0 ? max / mean : 1 }
}

/// The issue's bound on the bytes one rank sends in a distributed call, from its shard sizes.
///
///     non-causal:  B_p = Σ over b·h_q heads [ 4·(n_q,p·d + n_k,p·(d + d_v) + n_q,p·d_v)   (own Q, K, V, O rows)
///                                             + 4·m·(d + d_v) ]                       (m sampled K|V rows)
///                        + 64·P per head                                              (O(P) counters)
///     causal:      (⌈log₂ P⌉ + 1) · B_p
///
/// K and V are counted once per query head, as the rectangles are per query head (with GQA the
/// K|V rows of a key head travel once for each of its query heads). `withIds` (the JSON name is
/// kept) is the volume the design itself implies beyond the bare shard: every returned O row
/// carries its lse, every sampled row its index, and the allgathered bucket counts (16·2^r bytes
/// sent) and the control variate's Σ V (8·d_v) travel per head. Q and K|V rows carry no ids: they
/// are sent in sorted order and the receiver reads their positions off the allgathered counts. nil for exact attention
/// (or HyperAttention below --min-seq-len): an exact piece spanning ranks is gathered to one rank.
struct ByteBound {
    var issue: Int
    var withIds: Int

    init?(shape s: AttentionShape, options: AttentionOptions, rank: Int, ranks: Int) {
        guard options.mode == .hyper, s.queryCount >= options.minSeqLen || s.keyCount >= options.minSeqLen else { return nil }
        let nq = DistributedAttention.tokenRange(rank: rank, ranks: ranks, count: s.queryCount).count
        let nk = DistributedAttention.tokenRange(rank: rank, ranks: ranks, count: s.keyCount).count
        let d = s.headDim, dv = s.valueDim, m = options.samples, heads = s.batch * s.queryHeads
        let levels = options.causal ? Self.ceilLog2(ranks) + 1 : 1
        let counters = 64 * ranks
        let perHead = 4 * (nq * d + nk * (d + dv) + nq * dv) + 4 * m * (d + dv) + counters
        let perHeadIds = 4 * (nq * d + nk * (d + dv) + nq * (dv + 1)) + 4 * m * (d + dv + 1) + counters
            + 16 * (1 << options.lshBits) + (options.estimator == .stratifiedControlVariate ? 8 * dv : 0)
        issue = levels * heads * perHead
        withIds = levels * heads * perHeadIds
    }

    static func ceilLog2(_ p: Int) -> Int {
        var levels = 0
        while (1 << levels) < p { levels += 1 }
        return levels
    }

    static let formula = "per head: 4·(n_q,p·d + n_k,p·(d+d_v) + n_q,p·d_v) + 4·m·(d+d_v) + 64·P; × b·h_q heads; × (⌈log2 P⌉+1) when causal"

    /// Ring attention's traffic, exactly: rank p passes on the K|V shards of the P − 1 ranks
    /// p, p−1, …, p−P+2 (every one but its successor's), 4·n_k,q·(d+d_v) bytes per K/V head each.
    init?(ringShape s: AttentionShape, causal: Bool, rank: Int, ranks: Int) {
        guard ranks > 1 else { return nil }
        func shard(_ q: Int) -> Int {
            let rows = RingAttention.chunks(rank: q, ranks: ranks, count: s.keyCount, causal: causal).reduce(0) { $0 + $1.count }
            return 4 * s.batch * s.keyHeads * rows * (s.headDim + s.valueDim)
        }
        let total = (0..<(ranks - 1)).reduce(0) { $0 + shard((rank - $1 + ranks) % ranks) }
        issue = total
        withIds = total
    }

    static let ringFormula = "ring: the P−1 K|V shards a rank passes on, 4·n_k,q·(d+d_v)·b·h_kv bytes each (all but its successor's)"
}

/// One rank's line of a distributed bench row.
struct RankRow: Codable {
    var rank: Int
    var queryRows: Int
    var hashSeconds, exchangeSeconds, sampleGatherSeconds, computeSeconds, returnSeconds, totalSeconds: Double
    /// Of those, blocked waiting for other ranks' data (HyperAttention rectangles only).
    var waitSeconds: Double
    /// Of `bytesSent`, addressed to itself (copied locally by MPI).
    var bytesSentToSelf: Int
    var bytesSent, bytesReceived: Int
    /// `ByteBound.issue` / `.withIds` for this rank's shard.
    var byteBound: Int?
    var byteBoundWithIds: Int?
    var evaluatedPairs: Int
}

/// The bound columns of a distributed bench row.
struct ByteBoundReport: Codable {
    var formula: String
    /// Per rank, the issue's bound and the design's volume with lse, sample indices and histograms.
    var perRank: [Int]
    var perRankWithIds: [Int]
    /// max over ranks of bytesSent / bound (≤ 1: within the bound).
    var measuredToBoundMax: Double
    var measuredToBoundWithIdsMax: Double
    var withinBound: Bool
}

/// Per-phase times, traffic and imbalance over the ranks of one distributed call.
struct DistributedSummary {
    var reports: [DistributedReport]
    var shape: AttentionShape
    var options: AttentionOptions
    /// Query rows each rank holds.
    var queryRows: [Int]
    /// Ring attention rows (exact; no HyperAttention byte bound).
    var ring = false

    var ranks: Int { reports.count }
    var evaluatedPairs: Int { reports.reduce(0) { $0 + $1.evaluatedPairs } }

    var phases: [String: MaxMean] {
        [
            "hash": MaxMean(reports.map(\.hashSeconds)), "exchange": MaxMean(reports.map(\.exchangeSeconds)),
            "sampleGather": MaxMean(reports.map(\.sampleGatherSeconds)), "compute": MaxMean(reports.map(\.computeSeconds)),
            "return": MaxMean(reports.map(\.returnSeconds)), "total": MaxMean(reports.map(\.totalSeconds)),
            "wait": MaxMean(reports.map(\.waitSeconds)), "speedCalibration": MaxMean(reports.map(\.speedCalibrationSeconds)),
        ]
    }
    var bytesSent: MaxMean { MaxMean(reports.map { Double($0.bytesSent) }) }
    var bytesReceived: MaxMean { MaxMean(reports.map { Double($0.bytesReceived) }) }
    /// Bytes sent to other ranks (what links carry): `bytesSent − bytesSentToSelf`.
    var bytesSentToOthers: MaxMean { MaxMean(reports.map { Double($0.bytesSent - $0.bytesSentToSelf) }) }
    /// max/mean over ranks of computeSeconds.
    var computeImbalance: Double { MaxMean(reports.map(\.computeSeconds)).imbalance }
    /// max/mean over ranks of evaluated query–key pairs (the FLOP count: meaningful when ranks
    /// share cores and times are not).
    var flopImbalance: Double { MaxMean(reports.map { Double($0.evaluatedPairs) }).imbalance }

    var bounds: [ByteBound?] {
        (0..<ranks).map { ring ? ByteBound(ringShape: shape, causal: options.causal, rank: $0, ranks: ranks)
                               : ByteBound(shape: shape, options: options, rank: $0, ranks: ranks) }
    }

    var byteBoundReport: ByteBoundReport? {
        let b = bounds
        guard b.allSatisfy({ $0 != nil }) else { return nil }
        let issue = b.map { $0!.issue }, ids = b.map { $0!.withIds }
        let ratio = zip(reports, issue).map { Double($0.bytesSent) / Double(max($1, 1)) }.max() ?? 0
        let ratioIds = zip(reports, ids).map { Double($0.bytesSent) / Double(max($1, 1)) }.max() ?? 0
        return ByteBoundReport(
            formula: ring ? ByteBound.ringFormula : ByteBound.formula, perRank: issue, perRankWithIds: ids,
            measuredToBoundMax: ratio, measuredToBoundWithIdsMax: ratioIds, withinBound: ratio <= 1)
    }

    var perRank: [RankRow] {
        let b = bounds
        return reports.enumerated().map { r, rep in
            RankRow(
                rank: r, queryRows: queryRows[r],
                hashSeconds: rep.hashSeconds, exchangeSeconds: rep.exchangeSeconds, sampleGatherSeconds: rep.sampleGatherSeconds,
                computeSeconds: rep.computeSeconds, returnSeconds: rep.returnSeconds, totalSeconds: rep.totalSeconds,
                waitSeconds: rep.waitSeconds, bytesSentToSelf: rep.bytesSentToSelf,
                bytesSent: rep.bytesSent, bytesReceived: rep.bytesReceived, byteBound: b[r]?.issue,
                byteBoundWithIds: b[r]?.withIds, evaluatedPairs: rep.evaluatedPairs)
        }
    }

    var phaseLine: String {
        let p = phases
        // The speed calibration of a first call, when there was one (`DistributedAttention`).
        let calibration = p["speedCalibration"]!.max > 0 ? ["speedCalibration"] : []
        return (calibration + ["hash", "exchange", "sampleGather", "compute", "return", "total"]).map { name in
            let label = ["exchange": "sort/exchange", "sampleGather": "sample gather", "speedCalibration": "speed calibration"][name] ?? name
            return "\(label) \(fixed(p[name]!.max, 3))/\(fixed(p[name]!.mean, 3))"
        }.joined(separator: ", ") + " s (max/mean over ranks)"
            + (ring ? "" : "; of which waiting for other ranks \(fixed(p["wait"]!.max, 3))/\(fixed(p["wait"]!.mean, 3)) s")
    }

    var trafficLine: String {
        let s = bytesSent, r = bytesReceived
        let o = bytesSentToOthers
        var line = "sent \(mib(s.max))/\(mib(s.mean)) MiB (to other ranks \(mib(o.max))/\(mib(o.mean))), received \(mib(r.max))/\(mib(r.mean)) MiB (max/mean per rank)"
        if let b = byteBoundReport, ring {
            line += "; ring expects \(mib(Double(b.perRank.max() ?? 0))) MiB (P−1 K|V shards), sent/expected max \(fixed(b.measuredToBoundMax, 3))"
        } else if let b = byteBoundReport {
            line += "; bound \(mib(Double(b.perRank.max() ?? 0))) MiB (with lse \(mib(Double(b.perRankWithIds.max() ?? 0)))), "
                + "sent/bound max \(fixed(b.measuredToBoundMax, 3)) (with lse \(fixed(b.measuredToBoundWithIdsMax, 3)))"
        } else if ring {
            line += "; one rank: nothing sent"
        } else {
            line += "; no bound (exact pieces spanning ranks are gathered to one rank)"
        }
        return line
    }

    var imbalanceLine: String {
        "compute time \(fixed(computeImbalance, 3)), FLOPs (evaluated pairs) \(fixed(flopImbalance, 3)) (max/mean over ranks)"
    }

    /// Rectangles spanning ranks whose sample parts ran at the query rows' owners, of all those
    /// rectangles (each counted once per rank taking part, summed over the ranks).
    var samplePartsAtOwners: (atOwners: Int, rectangles: Int) {
        (reports.reduce(0) { $0 + $1.rectanglesWithSamplesAtOwners }, reports.reduce(0) { $0 + $1.spanningRectangles })
    }

    /// Where the sample parts ran, when any ran at the owners (`--sample-parts owners|auto`).
    var samplePartsLine: String? {
        let s = samplePartsAtOwners
        guard s.atOwners > 0 else { return nil }
        return "at the query rows' owners in \(s.atOwners) of \(s.rectangles) rectangle shares (rank × rectangle)"
            + (s.atOwners < s.rectangles ? ", with the blocks in the rest" : "")
    }

    /// Per-rank sent bytes against the bound, and evaluated pairs.
    var perRankLines: [String] {
        let b = bounds
        return reports.enumerated().map { r, rep in
            "rank \(r): sent \(mib(Double(rep.bytesSent))) MiB"
                + (b[r].map { " (bound \(mib(Double($0.issue))), with lse \(mib(Double($0.withIds))))" } ?? "")
                + ", received \(mib(Double(rep.bytesReceived))) MiB, pairs \(rep.evaluatedPairs), compute \(fixed(rep.computeSeconds, 3)) s"
        }
    }
}

/// Bytes as MiB with 2 decimals.
func mib(_ bytes: Double) -> String { fixed(bytes / 1_048_576, 2) }
