import ArgumentParser
import DistributedHyperAttention
import Foundation
import HyperAttention
import MPI
import NPY

/// `hyperattn run`: attention of Q, K, V read from `.npy` files, output written as `.npy`.
///
/// Under `mpirun` every rank reads only its own rows of the files (the sequence axis split as
/// [⌊p·n/P⌋, ⌊(p+1)·n/P⌋)), the ranks compute together, and each writes its rows of O (and lse)
/// into one temporary file that rank 0 renames to the target once every rank has written and
/// synced. Any rank's error ends the job with one line from one rank and a non-zero exit, and
/// leaves no output file.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Attention of Q, K, V from .npy files; writes O (and optionally the row log-sum-exp).",
        discussion: """
            Inputs: NumPy .npy (versions 1-3), little-endian float32, float16 or float64, C order, \
            of shape [n, d], [h, n, d] or [b, h, n, d] (the same rank for all three); K and V may \
            have fewer heads than Q (GQA/MQA) and V its own last dimension d_v. Output: float32 in \
            the query's shape with last dimension d_v, written atomically; --lse writes the row \
            log-sum-exp (the query's shape without its last dimension). Under mpirun each rank \
            reads and writes only its own rows.
            """)

    @Option(name: .customLong("q"), help: "Queries .npy file.")
    var query: String

    @Option(name: .customLong("k"), help: "Keys .npy file.")
    var key: String

    @Option(name: .customLong("v"), help: "Values .npy file.")
    var value: String

    @Option(help: "Output .npy file for O.")
    var out: String

    @Option(help: "Optional output .npy file for the row log-sum-exp.")
    var lse: String?

    @Flag(help: "Causal masking (needs n_q == n_k).")
    var causal = false

    @Flag(help: "Exact attention instead of HyperAttention (the same as --mode exact).")
    var exact = false

    @Option(help: ArgumentHelp("hyper, exact, or ring (ring attention: exact over the MPI ranks; needs mpirun).", valueName: "mode"))
    var mode: BenchMode?

    /// The mode in effect.
    private var effectiveMode: BenchMode { mode ?? (exact ? .exact : .hyper) }

    @Option(help: ArgumentHelp(samplePartsHelp, valueName: "blocks|owners|auto"))
    var sampleParts: SamplePartPlacement = .bySpeeds

    @OptionGroup(title: "Algorithm")
    var algorithm: CommonAttentionOptions

    @OptionGroup(title: "Backend")
    var compute: BackendOptions

    /// Under mpirun only rank 0 reports an option error (`MPILaunch.validating`): were every rank
    /// to print it and exit, mpirun could tear rank 0 down before its line got out.
    func validate() throws { try MPILaunch.validating(checkOptions) }

    private func checkOptions() throws {
        let inputs = [("--q", query), ("--k", key), ("--v", value)]
        for (flag, path) in [("--out", out)] + (lse.map { [("--lse", $0)] } ?? []) {
            if let clash = inputs.first(where: { samePath($0.1, path) }) {
                throw ValidationError("\(flag) \(path) is also the \(clash.0) input; choose another output path")
            }
        }
        if let lse, samePath(lse, out) { throw ValidationError("--lse and --out name the same file \(out)") }
        if exact, let mode, mode != .exact { throw ValidationError("--exact contradicts --mode \(mode.rawValue)") }
        if effectiveMode == .ring && compute.isCUDA {
            throw ValidationError("--mode ring computes on the CPU: use --backend cpu with it")
        }
        if effectiveMode == .ring && !RunLaunch.current.isMPI {
            throw ValidationError("--mode ring is ring attention over MPI ranks: run it under mpirun")
        }
    }

    func run() throws {
        let launch = RunLaunch.current
        if launch.isMPI {
            try runDistributed(launch)
        } else {
            try runSingleProcess()
        }
    }

    // MARK: - One process

    private func runSingleProcess() throws {
        let options = algorithm.attentionOptions(mode: effectiveMode.attentionMode, causal: causal)
        let (q, k, v, shape) = try failing { () throws -> (Tensor, Tensor, Tensor, AttentionShape) in
            let headers = try readHeaders()
            let shape = try problemShape(headers)
            try checkedOptions(options, shape)
            try checkOutputs()
            let q = try readFile("--q", query), k = try readFile("--k", key), v = try readFile("--v", value)
            for (flag, path, t) in [("--q", query, q), ("--k", key, k), ("--v", value, v)] {
                let n = t.shape[t.shape.count - 2]
                try requireFinite(t, flag: flag, path: path, firstRow: 0, rowsPerHead: n, totalRows: n)
            }
            return (q, k, v, shape)
        }
        let start = Date()
        let result = try failing { try compute.attention(query: q, key: k, value: v, options: compute.applied(to: options)) }
        let seconds = Date().timeIntervalSince(start)
        try failing {
            do { try NPYFile.write(result.output, to: out) } catch { throw CLIError("--out \(error)") }
            if let lse {
                do {
                    try NPYFile.write(result.logSumExp, to: lse)
                } catch {
                    unlink(out)  // all outputs or none
                    throw CLIError("--lse \(error)")
                }
            }
        }
        printSummary(shape: shape, options: options, seconds: seconds, flops: result.stats.flops, ranks: 1)
    }

    // MARK: - Under mpirun

    private func runDistributed(_ launch: RunLaunch) throws {
        try launch.start()
        let world = Communicator.world
        var options = compute.applied(to: algorithm.attentionOptions(mode: effectiveMode.attentionMode, causal: causal))
        if algorithm.threads == nil { options.threads = launch.threadsPerRank }
        // Every rank checks headers and options (all see the same files, so all agree); rank 0
        // also checks that the outputs can be written.
        let setup = try agree(world) { () throws -> (AttentionShape, [Int], [Int]) in
            let headers = try readHeaders()
            let shape = try problemShape(headers)
            try checkedOptions(options, shape)
            if world.rank == 0 { try checkOutputs() }
            return (shape, headers.q.shape, headers.v.shape)
        }
        guard let (shape, queryShape, valueShape) = setup else { launch.exit(1) }
        let made = try agree(world) { () throws -> any SequenceParallelAttention in
            if effectiveMode == .ring { return try RingAttention(communicator: world, shape: shape, options: options) }
            return try namingCUDAFailure(rank: world.rank) { try DistributedAttention(communicator: world, shape: shape, options: options, sampleParts: sampleParts) }
        }
        guard let dist = made else { launch.exit(1) }
        if let gpu = (dist as? DistributedAttention)?.accelerator?.deviceDescription {
            print("  rank \(world.rank) gpu: \(gpu), \(compute.precision.rawValue) inputs")
        }
        // Each rank reads only its rows (chunk after chunk), as [b, h, rows, d].
        let slices = try agree(world) { () throws -> (Tensor, Tensor, Tensor) in
            func read(_ flag: String, _ path: String, _ chunks: [Range<Int>], heads: Int, width: Int, total: Int) throws -> Tensor {
                Tensor.joiningRows(try chunks.map { rows in
                    let t = try readSlice(flag, path, rows: rows, as: [shape.batch, heads, rows.count, width])
                    try requireFinite(t, flag: flag, path: path, firstRow: rows.lowerBound, rowsPerHead: rows.count, totalRows: total)
                    return t
                })
            }
            let q = try read("--q", query, dist.localQueryChunks, heads: shape.queryHeads, width: shape.headDim, total: shape.queryCount)
            let k = try read("--k", key, dist.localKeyChunks, heads: shape.keyHeads, width: shape.headDim, total: shape.keyCount)
            let v = try read("--v", value, dist.localKeyChunks, heads: shape.keyHeads, width: shape.valueDim, total: shape.keyCount)
            return (q, k, v)
        }
        guard let (q, k, v) = slices else { launch.exit(1) }
        try world.barrier()
        let start = MPIEnvironment.wallTime
        let result: DistributedResult
        do {
            result = try dist.run(query: q, key: k, value: v, logSumExp: lse != nil)
        } catch {
            // An MPI or argument failure mid-computation: the other ranks may be inside a
            // collective, so end the job from here.
            printError("rank \(world.rank): \(error)")
            world.abort(code: 1)
        }
        let seconds = try world.allReduce(MPIEnvironment.wallTime - start, operation: .max)
        let flops = try world.allReduce(result.stats.flops, operation: .sum)
        // One output file written by all ranks: rank 0 creates it under a temporary name,
        // everyone writes and syncs its rows, rank 0 renames it.
        var outShape = queryShape
        outShape[outShape.count - 1] = valueShape[valueShape.count - 1]
        let lseShape = Array(queryShape.dropLast())
        // lse ([..., n]) is written as the rows of a [..., n, 1] array: the same bytes.
        var targets = [(out, outShape, outShape, result.output)]
        if let lse { targets.append((lse, lseShape, lseShape + [1], result.logSumExp)) }
        var committed: [String] = []
        /// Ends the job after a failed write: rank 0 removes the temporary file and any output
        /// already in place, so that either all outputs appear or none.
        func abandon(_ tempPath: String) -> Never {
            if world.rank == 0 {
                unlink(tempPath)
                for path in committed { unlink(path) }
            }
            launch.exit(1)
        }
        for (path, fileShape, rowShape, data) in targets {
            let temp = try world.broadcast(Array(NPYFile.temporaryPath(for: path).utf8), root: 0)
            let tempPath = String(decoding: temp, as: UTF8.self)
            let flag = path == out ? "--out" : "--lse"
            guard try agreeOnRankZero(world, {
                do { try NPYFile.createForParallelWrite(path: tempPath, shape: fileShape) } catch { throw CLIError("\(flag) \(error)") }
            }) else {
                abandon(tempPath)
            }
            let written: Void? = try agree(world) {
                let local = try data.reshaped(Array(rowShape.dropLast(2)) + [dist.localQueryCount, rowShape.last!])
                var first = 0
                for rows in dist.localQueryChunks {
                    try NPYFile.writeRows(path: tempPath, shape: rowShape, rows: rows, data: local.rows([first..<(first + rows.count)]))
                    first += rows.count
                }
            }
            guard written != nil else { abandon(tempPath) }
            guard try agreeOnRankZero(world, {
                do { try NPYFile.commit(temporaryPath: tempPath, to: path) } catch { throw CLIError("\(flag) \(error)") }
            }) else {
                abandon(tempPath)
            }
            committed.append(path)
        }
        if world.rank == 0 { printSummary(shape: shape, options: options, seconds: seconds, flops: flops, ranks: world.size) }
        try launch.finish()
    }

    /// Runs `body` on every rank and agrees on failure: if any rank failed, the lowest failing
    /// rank prints its message and every rank gets nil.
    private func agree<T>(_ world: Communicator, _ body: () throws -> T) throws -> T? {
        var value: T?
        var message: String?
        do { value = try body() } catch { message = "\(error)" }
        return try agreed(world, message) ? value : nil
    }

    /// Runs `body` on rank 0 only; every rank learns whether it succeeded (rank 0 prints the error).
    private func agreeOnRankZero(_ world: Communicator, _ body: () throws -> Void) throws -> Bool {
        var message: String?
        if world.rank == 0 {
            do { try body() } catch { message = "\(error)" }
        }
        return try agreed(world, message)
    }

    /// True when no rank has a message; otherwise the lowest failing rank prints its own.
    private func agreed(_ world: Communicator, _ message: String?) throws -> Bool {
        let firstFailure = try world.allReduce(message != nil ? world.rank : Int.max, operation: .min)
        if firstFailure == Int.max { return true }
        if firstFailure == world.rank, let message { printError(message) }
        return false
    }

    // MARK: - Checks and I/O

    private struct Headers { var q: NPYHeader; var k: NPYHeader; var v: NPYHeader }

    private func readHeaders() throws -> Headers {
        func header(_ flag: String, _ path: String) throws -> NPYHeader {
            do { return try NPYFile.readHeader(path: path) } catch { throw CLIError("\(flag) \(error)") }
        }
        return Headers(q: try header("--q", query), k: try header("--k", key), v: try header("--v", value))
    }

    /// A whole input file, errors prefixed with its flag (`--k K.npy: ...`).
    private func readFile(_ flag: String, _ path: String) throws -> Tensor {
        do { return try NPYFile.read(path: path) } catch { throw CLIError("\(flag) \(error)") }
    }

    /// The problem shape, with errors naming the flag and file.
    private func problemShape(_ h: Headers) throws -> AttentionShape {
        for (flag, path, header) in [("--q", query, h.q), ("--k", key, h.k), ("--v", value, h.v)] where !(2...4).contains(header.shape.count) {
            throw CLIError("\(flag) \(path): expected shape [n, d], [h, n, d] or [b, h, n, d], got \(header.shape)")
        }
        do {
            return try AttentionShape(query: h.q.shape, key: h.k.shape, value: h.v.shape)
        } catch let AttentionError.invalidArgument(argument, reason) {
            let flag = ["query": "--q \(query)", "key": "--k \(key)", "value": "--v \(value)"][argument] ?? argument
            throw CLIError("\(flag): \(reason)")
        }
    }

    /// Fails early (before computing) if an output cannot be created.
    private func checkOutputs() throws {
        for (flag, path) in [("--out", out)] + (lse.map { [("--lse", $0)] } ?? []) {
            do { try NPYFile.checkWritable(path: path) } catch let e as NPYError { throw CLIError("\(flag) \(e)") }
        }
    }

    /// Rows `rows` of the sequence axis of a file, as `[b, h, rows, d]`.
    private func readSlice(_ flag: String, _ path: String, rows: Range<Int>, as shape: [Int]) throws -> Tensor {
        do { return try NPYFile.readRows(path: path, rows: rows).reshaped(shape) } catch { throw CLIError("\(flag) \(error)") }
    }

    /// Fails on the first NaN or infinity, naming the file and the element's position: its flat
    /// (C-order) index in the file and its head, row and column. `t` holds rows
    /// `firstRow ..< firstRow + rowsPerHead` of each head of a file with `totalRows` rows per head.
    private func requireFinite(_ t: Tensor, flag: String, path: String, firstRow: Int, rowsPerHead: Int, totalRows: Int) throws {
        guard let bad = firstNonFiniteIndex(t) else { return }
        let d = t.shape.last!, row = bad / d, column = bad % d
        let head = row / max(rowsPerHead, 1), token = firstRow + row % max(rowsPerHead, 1)
        let flat = (head * totalRows + token) * d + column
        let value = t.withUnsafeBufferPointer { $0[bad] }
        throw CLIError("\(flag) \(path): non-finite value \(value) at flat index \(flat) (head \(head), row \(token), column \(column))")
    }

    private func printSummary(shape: AttentionShape, options: AttentionOptions, seconds: Double, flops: Double, ranks: Int) {
        let mode = effectiveMode.rawValue
        print("hyperattn run: \(shape), \(mode), \(options.causal ? "causal" : "non-causal"), \(ranks == 1 ? "1 process" : "\(ranks) ranks"), \(options.effectiveThreads) thread(s)\(ranks > 1 ? " per rank" : "")")
        print(String(format: "  time %.3f s, %.1f GFLOP/s", seconds, flops / max(seconds, 1e-9) / 1e9))
        print("  wrote \(out)" + (lse.map { " and \($0)" } ?? ""))
    }

    /// Runs `body`, turning any error into one `hyperattn: error:` line and exit status 1.
    private func failing<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
    }
}

/// A command-line error: its description is the whole message.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Prints `hyperattn: error: <message>` on stderr.
func printError(_ message: String) {
    FileHandle.standardError.write("hyperattn: error: \(message)\n".data(using: .utf8)!)
}

/// Whether two paths name the same file (or would, once created).
func samePath(_ a: String, _ b: String) -> Bool {
    let ua = URL(fileURLWithPath: a).standardizedFileURL.resolvingSymlinksInPath().path
    let ub = URL(fileURLWithPath: b).standardizedFileURL.resolvingSymlinksInPath().path
    return ua == ub
}

/// How this process was started: alone, or as one rank of an `mpirun` job (OpenMPI sets
/// `OMPI_COMM_WORLD_SIZE`; `HYPERATTN_MPI=1` forces MPI, e.g. for other launchers).
struct RunLaunch {
    var isMPI: Bool
    /// Ranks on this node (for the default threads per rank).
    var localRanks: Int

    static var current: RunLaunch {
        let env = ProcessInfo.processInfo.environment
        let isMPI = env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMIX_RANK"] != nil || env["HYPERATTN_MPI"] == "1"
        return RunLaunch(isMPI: isMPI, localRanks: Int(env["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1)
    }

    /// Cores shared out among the ranks of this node, at least one each.
    var threadsPerRank: Int { max(1, ProcessInfo.processInfo.activeProcessorCount / max(localRanks, 1)) }

    func start() throws { try MPIEnvironment.initialize(threadLevel: .funneled) }

    func finish() throws { try MPIEnvironment.finalize() }

    /// Ends this rank after an error every rank agreed on (the message is already printed).
    func exit(_ code: Int32) -> Never {
        try? MPIEnvironment.finalize()
        Foundation.exit(code)
    }
}
