import Foundation
import HyperAttention
import MPI

/// How `hyperattn` (the default job and `bench`) was started, and the job-wide failure rules
/// under `mpirun`.
///
/// Detection: OpenMPI's launcher sets `OMPI_COMM_WORLD_SIZE` (PMIx launchers `PMIX_RANK`);
/// `HYPERATTN_MPI=1` or the `--mpi` flag force MPI (a singleton run then has one rank). Without
/// any of these the single-process path runs and MPI is never initialised.
///
/// Failures: every error ends the whole job promptly, non-zero, with one message.
/// * Option errors are found by every rank alike before MPI starts: rank 0 reports the error
///   (one `hyperattn: error:` line) and exits 1; the other ranks stay silent and exit 1 a moment
///   later, by which time mpirun has already torn the job down because of rank 0
///   (`failOptionsQuietly`).
/// * Errors every rank meets at the same point (shape checks, non-finite inputs) are agreed with
///   one allreduce: the lowest failing rank prints its message, all ranks finalise and exit 1
///   (`agree`).
/// * Anything else (an MPI error inside the computation, where the other ranks may be waiting in
///   a collective): the failing rank prints its message and calls `MPI_Abort` (`fail`).
enum MPILaunch {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// True when started by an MPI launcher (or forced by `HYPERATTN_MPI=1`).
    static var launchedByMPI: Bool {
        let env = environment
        return env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMIX_RANK"] != nil || env["HYPERATTN_MPI"] == "1"
    }

    /// Whether to take the distributed path: launched by MPI or asked for with `--mpi`.
    static func isMPI(flag: Bool) -> Bool { flag || launchedByMPI }

    /// This process's rank as the launcher announced it (before MPI_Init), if any.
    static var launcherRank: Int? {
        let env = environment
        return Int(env["OMPI_COMM_WORLD_RANK"] ?? env["PMIX_RANK"] ?? env["PMI_RANK"] ?? "")
    }

    /// Ranks on this node (`OMPI_COMM_WORLD_LOCAL_SIZE`), 1 when unknown.
    static var localRanks: Int { max(1, Int(environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1) }

    /// Default worker threads per rank: the cores shared out among this node's ranks, at least 1.
    static var threadsPerRank: Int { max(1, ProcessInfo.processInfo.activeProcessorCount / localRanks) }

    /// The share of a rank's measured peak that counts towards the job's: 1, or cores / (local
    /// ranks × threads) when the node is oversubscribed (the ranks' trials then overlap only in
    /// part, and their sum would exceed what the cores can do).
    static func peakShare(threads: Int) -> Double {
        min(1, Double(ProcessInfo.processInfo.activeProcessorCount) / Double(localRanks * max(threads, 1)))
    }

    /// Initialises MPI (MPI_THREAD_FUNNELED: only the main thread calls MPI) and returns the world.
    static func start() -> Communicator {
        do {
            _ = try MPIEnvironment.initialize(threadLevel: .funneled)
        } catch {
            printLaunchError("cannot initialise MPI: \(error)")
            exit(1)
        }
        return Communicator.world
    }

    /// Finalises MPI (errors there are reported, the job still ends 0 when the work is done).
    static func finish() {
        do { try MPIEnvironment.finalize() } catch { printLaunchError("MPI_Finalize: \(error)") }
    }

    /// Runs option checks. Under an MPI launcher every rank finds the same error; only rank 0
    /// reports it (the error is rethrown there); the others exit 1 silently after a grace period
    /// in which mpirun, seeing rank 0 fail, ends the job.
    static func validating(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch {
            optionErrorFound()
            throw error
        }
    }

    /// Called where an option error is about to be reported: returns on rank 0 (or outside
    /// mpirun); other ranks exit quietly (`failOptionsQuietly`).
    static func optionErrorFound() {
        if launchedByMPI, let rank = launcherRank, rank != 0 { failOptionsQuietly() }
    }

    /// A rank other than 0 that found an option error: wait for mpirun to end the job because of
    /// rank 0, then exit 1 (a bound, so that a launcher that does not tear jobs down still ends).
    static func failOptionsQuietly() -> Never {
        usleep(3_000_000)
        exit(1)
    }

    /// Agrees on an error found by some ranks at the same point of the program: returns normally
    /// when no rank has a message; otherwise the lowest failing rank prints its message, and every
    /// rank finalises MPI and exits 1.
    static func agree(_ world: Communicator, _ message: String?) {
        let firstFailure: Int
        do {
            firstFailure = try world.allReduce(message != nil ? world.rank : Int.max, operation: .min)
        } catch {
            fail(world, "agreeing on an error: \(error)")
        }
        if firstFailure == Int.max { return }
        if firstFailure == world.rank, let message { printLaunchError(message) }
        finish()
        exit(1)
    }

    /// Runs `body` on every rank and agrees on failure (see `agree`).
    static func agreeing<T>(_ world: Communicator, _ body: () throws -> T) -> T {
        var value: T?
        var message: String?
        do { value = try body() } catch { message = "\(error)" }
        agree(world, message)
        return value!
    }

    /// Ends the whole job from this rank: one message, then MPI_Abort (never returns, never hangs).
    static func fail(_ world: Communicator, _ message: String) -> Never {
        printLaunchError(world.size > 1 ? "rank \(world.rank): \(message)" : message)
        world.abort(code: 1)
    }

    /// Runs `body`; any error ends the whole job from this rank (`fail`).
    static func orAbort<T>(_ world: Communicator, _ what: String, _ body: () throws -> T) -> T {
        do { return try body() } catch { fail(world, "\(what): \(error)") }
    }
}

/// `hyperattn: error: <message>` on stderr.
func printLaunchError(_ message: String) {
    FileHandle.standardError.write("hyperattn: error: \(message)\n".data(using: .utf8)!)
}

/// The flat index of the first NaN or infinity in `t`, or nil.
func firstNonFiniteIndex(_ t: Tensor) -> Int? {
    t.withUnsafeBufferPointer { b in b.firstIndex { !$0.isFinite } }
}

/// The first non-finite element of `t` as a message naming the tensor, head, token and column,
/// for a `[b, h, rows, dim]` shard whose rows start at token `firstRow`; nil when all are finite.
func nonFiniteMessage(_ t: Tensor, name: String, firstRow: Int) -> String? {
    let s = t.shape
    guard let bad = firstNonFiniteIndex(t) else { return nil }
    let dim = max(s.last ?? 1, 1), rows = max(s.count >= 2 ? s[s.count - 2] : 1, 1)
    let row = bad / dim
    return "\(name): non-finite value \(t.withUnsafeBufferPointer { $0[bad] }) at head \(row / rows), token \(firstRow + row % rows), column \(bad % dim)"
}

