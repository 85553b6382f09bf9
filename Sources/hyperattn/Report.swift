import Foundation
import HyperAttention

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
        throw ValidationFailure("cannot write \(path): \(error.localizedDescription)")
    }
    guard rename(temporary.path, url.path) == 0 else {
        let reason = String(cString: strerror(errno))
        try? FileManager.default.removeItem(at: temporary)
        throw ValidationFailure("cannot write \(path): \(reason)")
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
