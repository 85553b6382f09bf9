import Foundation
import Testing

/// Runs the built `hyperattn` executable.
///
/// The binary is looked up next to the test bundle (SwiftPM puts both in the same products
/// directory, whatever `--scratch-path` is), walking up a few directories for bundle layouts, or
/// taken from `$HYPERATTN_BIN`.
enum HyperattnBinary {
    static let url: URL? = {
        let fileManager = FileManager.default
        if let path = ProcessInfo.processInfo.environment["HYPERATTN_BIN"] { return URL(fileURLWithPath: path) }
        var starts = [URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()]
        if let executable = Bundle.main.executableURL { starts.append(executable) }
        starts.append(Bundle.main.bundleURL)
        for start in starts {
            var directory = start.deletingLastPathComponent()
            for _ in 0..<4 {
                let candidate = directory.appendingPathComponent("hyperattn")
                var isDirectory: ObjCBool = false
                if fileManager.fileExists(atPath: candidate.path, isDirectory: &isDirectory), !isDirectory.boolValue,
                    fileManager.isExecutableFile(atPath: candidate.path)
                {
                    return candidate
                }
                directory = directory.deletingLastPathComponent()
            }
        }
        return nil
    }()

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// One `hyperattn` at a time from these tests, so that the FMA peak each run measures is not
    /// shared with another of them.
    private static let lock = NSLock()

    /// Runs `hyperattn arguments…`, killing it after `timeout` seconds.
    static func run(_ arguments: [String], timeout: Double = 60) throws -> Output {
        lock.lock()
        defer { lock.unlock() }
        let binary = try #require(url, "hyperattn binary not found next to the test bundle; build it first (swift build)")
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("hyperattn-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outURL = directory.appendingPathComponent("stdout"), errURL = directory.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)

        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let killer = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
        process.waitUntilExit()
        killer.cancel()
        try out.close()
        try err.close()
        return Output(
            status: process.terminationStatus,
            stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
    }

    /// The value after `label:` on a summary line of the default job.
    static func field(_ label: String, in text: String) -> String? {
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix(label + ":") {
                return trimmed.dropFirst(label.count + 1).trimmingCharacters(in: .whitespaces)
            }
        }
        return nil
    }
}

@Suite("hyperattn default job")
struct DefaultJobTests {
    @Test("small causal hyper job prints the summary")
    func smallHyperJob() throws {
        let result = try HyperattnBinary.run(["--n", "4096", "--heads", "2", "--error-rows", "64", "--peak-ms", "50"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let text = result.stdout
        #expect(HyperattnBinary.field("shape", in: text) == "b=1 h=2 n=4096 d=64")
        #expect(HyperattnBinary.field("mode", in: text)?.hasPrefix("hyper") == true)
        #expect(HyperattnBinary.field("causal", in: text) == "yes")
        for label in ["time", "GFLOP/s", "peak", "of peak", "error", "memory", "threads"] {
            #expect(HyperattnBinary.field(label, in: text) != nil, "missing \(label): in\n\(text)")
        }
        #expect(text.contains("‖O−O*‖/‖O*‖ = ") && text.contains("‖O−O*‖/‖V‖ = "))
        let peak = HyperattnBinary.field("peak", in: text).flatMap { Double($0.split(separator: " ")[0]) }
        #expect((peak ?? 0) > 0)
    }

    @Test("exact job matches the float64 reference")
    func exactJobError() throws {
        let result = try HyperattnBinary.run([
            "--n", "1500", "--heads", "4", "--kv-heads", "2", "--d", "32", "--dv", "24", "--exact", "--no-causal",
            "--error-rows", "40", "--peak-ms", "0", "--threads", "1",
        ])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(HyperattnBinary.field("shape", in: result.stdout) == "b=1 h=4 h_kv=2 n=1500 d=32 d_v=24")
        #expect(HyperattnBinary.field("causal", in: result.stdout) == "no")
        let error = try #require(HyperattnBinary.field("error", in: result.stdout))
        // "‖O−O*‖/‖O*‖ = 1.23e-07, ..."
        let value = error.components(separatedBy: "= ").dropFirst().first?.split(separator: ",").first
        let relative = try #require(value.flatMap { Double($0) }, "cannot read the error from \(error)")
        #expect(relative < 1e-4)
    }

    @Test(
        "bad flags exit non-zero with one error line naming the flag",
        arguments: [
            (["--n", "0"], "--n"), (["--d", "0"], "--d"), (["--block-size", "0"], "--block-size"),
            (["--samples", "0"], "--samples"), (["--threads", "0"], "--threads"),
            (["--heads", "3", "--kv-heads", "2"], "--kv-heads"), (["--lsh-bits", "17"], "--lsh-bits"),
            (["--min-seq-len", "0"], "--min-seq-len"), (["--estimator", "bogus"], "--estimator"),
            (["--heads", "0"], "--heads"), (["bench", "--n", "0"], "--n"), (["bench", "--n", "1024,abc"], "--n"),
            (["bench", "--repeats", "0"], "--repeats"), (["bench", "--modes", "fast"], "--modes"),
            (["bench", "--threads", "0"], "--threads"), (["bench", "--samples", "0"], "--samples"),
        ])
    func badFlags(arguments: [String], flag: String) throws {
        let result = try HyperattnBinary.run(arguments, timeout: 20)
        #expect(result.status != 0)
        // Exactly one line on stderr, no usage block.
        let errorLines = result.stderr.split(separator: "\n")
        #expect(errorLines.count == 1, "stderr: \(result.stderr)")
        #expect(errorLines.first?.hasPrefix("hyperattn: error: ") == true, "stderr: \(result.stderr)")
        #expect(errorLines.first?.contains(flag) == true, "error line does not name \(flag): \(result.stderr)")
        #expect(result.stdout.isEmpty)
    }

    @Test("help lists the subcommands")
    func help() throws {
        let result = try HyperattnBinary.run(["--help"], timeout: 20)
        #expect(result.status == 0)
        for name in ["synthetic", "run", "bench"] { #expect(result.stdout.contains(name)) }
    }
}
