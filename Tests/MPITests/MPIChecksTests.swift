import Foundation
import Testing

/// Runs the `MPIChecks` program (built beside this test bundle) under `mpirun`, as the MPI
/// wrapper can only be tested across processes. Skipped when `mpirun` or the program is absent.
@Suite("MPI wrapper under mpirun", .serialized)
struct MPIChecksTests {
    /// The result of one `mpirun`.
    struct Run {
        var status: Int32
        var output: String
        var timedOut: Bool
    }

    /// `mpirun`, found on `PATH`.
    static let mpirun: URL? = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { URL(fileURLWithPath: String($0)).appendingPathComponent("mpirun") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }()

    /// The `MPIChecks` executable: `$MPICHECKS`, else next to the test bundle in the build folder.
    static let checks: URL? = {
        if let explicit = ProcessInfo.processInfo.environment["MPICHECKS"] { return URL(fileURLWithPath: explicit) }
        var candidates = [URL]()
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        candidates.append(exe.deletingLastPathComponent().appendingPathComponent("MPIChecks"))
        candidates.append(exe.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("MPIChecks"))
        let bundle = Bundle.main.bundleURL
        candidates.append(bundle.deletingLastPathComponent().appendingPathComponent("MPIChecks"))
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }()

    static var available: Bool { mpirun != nil && checks != nil }

    /// Runs `mpirun -np ranks MPIChecks arguments…`, killing it after `timeout` seconds.
    static func run(ranks: Int, _ arguments: [String], timeout: TimeInterval = 60) throws -> Run {
        let process = Process()
        process.executableURL = mpirun!
        process.arguments = ["--oversubscribe", "--bind-to", "none", "-np", "\(ranks)", checks!.path] + arguments
        var environment = ProcessInfo.processInfo.environment
        environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        if environment["OMPI_MCA_btl"] == nil { environment["OMPI_MCA_btl"] = "self,vader" }
        if environment["OMPI_MCA_pml"] == nil { environment["OMPI_MCA_pml"] = "ob1" }
        if environment["OMPI_MCA_btl_vader_single_copy_mechanism"] == nil {
            environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"
        }
        process.environment = environment
        let outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("mpichecks-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outputFile) }
        let handle = try FileHandle(forWritingTo: outputFile)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        var timedOut = false
        while process.isRunning {
            if Date() > deadline {
                timedOut = true
                process.terminate()
                break
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        process.waitUntilExit()
        try handle.close()
        let output = (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
        return Run(status: process.terminationStatus, output: output, timedOut: timedOut)
    }

    @Test("every check passes on every rank", .enabled(if: MPIChecksTests.available, "mpirun or MPIChecks not found"),
          arguments: [1, 2, 3, 4])
    func allChecksPass(ranks: Int) throws {
        let run = try Self.run(ranks: ranks, ["all"])
        #expect(!run.timedOut, "mpirun -np \(ranks) timed out:\n\(run.output)")
        #expect(run.status == 0, "mpirun -np \(ranks) exited \(run.status):\n\(run.output)")
        #expect(run.output.contains(" passed, 0 failed"), "no clean summary:\n\(run.output)")
    }

    @Test("a failing check makes mpirun exit non-zero", .enabled(if: MPIChecksTests.available, "mpirun or MPIChecks not found"))
    func failingCheckFails() throws {
        let run = try Self.run(ranks: 2, ["expected-failure"], timeout: 30)
        #expect(!run.timedOut)
        #expect(run.status != 0)
        #expect(run.output.contains("0 passed, 1 failed"), "\(run.output)")
    }

    @Test("MPI_Abort on one rank ends the job promptly, non-zero", .enabled(if: MPIChecksTests.available, "mpirun or MPIChecks not found"))
    func abortFails() throws {
        let run = try Self.run(ranks: 3, ["abort"], timeout: 30)
        #expect(!run.timedOut, "the job hung after MPI_Abort")
        #expect(run.status == 3, "mpirun exited \(run.status):\n\(run.output)")
    }
}
