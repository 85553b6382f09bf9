import Foundation
import Testing

/// The kernels are compiled for x86-64-v3; on an older CPU `hyperattn` must refuse with one
/// clear line before any Swift code runs (instead of dying of SIGILL). Checked by running the
/// real binary under qemu-user emulating CPUs with and without AVX2/FMA.
@Suite("CPU check")
struct CPUCheckTests {
    static let qemu: String? = ["/usr/bin/qemu-x86_64", "/usr/local/bin/qemu-x86_64"].first { FileManager.default.isExecutableFile(atPath: $0) }

    func run(cpu: String) throws -> (status: Int32, stderr: String) {
        let binary = try #require(HyperattnBinary.url)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.qemu!)
        p.arguments = ["-cpu", cpu, binary.path, "--help"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let data = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        // qemu warns about host features it does not emulate; keep only our lines.
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").filter { !$0.hasPrefix("qemu-x86_64: warning") }
        return (p.terminationStatus, lines.joined(separator: "\n"))
    }

    @Test("an AVX2-less CPU gets one error line and exit status 2", .enabled(if: qemu != nil, "qemu-x86_64 (Debian qemu-user) is not installed"))
    func refusesOldCPU() throws {
        let r = try run(cpu: "Nehalem")
        #expect(r.status == 2)
        #expect(r.stderr.hasPrefix("hyperattn: error: this CPU lacks AVX2/FMA") && !r.stderr.contains("\n"), "\(r.stderr)")
    }

    @Test("a Haswell CPU runs it", .enabled(if: qemu != nil, "qemu-x86_64 (Debian qemu-user) is not installed"))
    func runsOnHaswell() throws {
        let r = try run(cpu: "Haswell")
        #expect(r.status == 0, "\(r.stderr)")
    }
}
