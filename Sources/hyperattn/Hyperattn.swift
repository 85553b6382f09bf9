import ArgumentParser
import Foundation
import CPUFeatures  // links the constructor that refuses CPUs without AVX2/FMA before `main`
import HyperAttention

/// The `hyperattn` command: HyperAttention and exact attention over long sequences.
@main
struct Hyperattn: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hyperattn",
        abstract: "Exact attention and HyperAttention (Han et al., ICLR 2024) over long sequences.",
        discussion: """
            With no subcommand, runs the built-in synthetic job: b=1, 8 heads, n=32768, d=64, \
            causal HyperAttention on deterministic clustered Gaussian inputs (flags override it, \
            e.g. `hyperattn --n 4096 --exact`), and prints time, GFLOP/s, the machine's fp32 FMA \
            peak measured in the same run, and the error against exact attention on sampled rows.

            `hyperattn run` reads Q, K, V from .npy files and writes O (and the row log-sum-exp); \
            `hyperattn bench` times exact and HyperAttention over sequence lengths and writes \
            JSON/CSV tables.

            Build with `scripts/build.sh` (release, `-Xswiftc -target-cpu -Xswiftc haswell`): \
            without a target CPU Swift emits no FMA instructions and the kernels run 60-140× slower.
            """,
        subcommands: [DefaultJob.self, Run.self, Bench.self],
        defaultSubcommand: DefaultJob.self)

    /// Parses and runs, printing any error as one `hyperattn: error:` line (no usage block) and
    /// exiting non-zero; `--help` and `--version` behave as usual.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            let status = exitCode(for: error)
            if status == .success || status.rawValue == 0 {
                exit(withError: error)  // help, version: printed as ArgumentParser does
            }
            let message = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            let line = message.hasPrefix("Error: ") ? String(message.dropFirst(7)) : message
            // Under mpirun every rank parses the same arguments and fails the same way: rank 0 speaks.
            let env = ProcessInfo.processInfo.environment
            let rank = env["OMPI_COMM_WORLD_RANK"] ?? env["PMIX_RANK"] ?? "0"
            if rank == "0" {
                FileHandle.standardError.write("hyperattn: error: \(line)\n".data(using: .utf8)!)
                // mpirun ends the job as soon as it sees this rank exit non-zero and can drop
                // output it has not forwarded yet (seen once in CI: the line was lost); give its
                // forwarding a moment first.
                if env["OMPI_COMM_WORLD_RANK"] != nil || env["PMIX_RANK"] != nil { usleep(300_000) }
            }
            Foundation.exit(status.rawValue)
        }
    }
}
