import CUDADriver
import HyperAttention

/// The GPU half of a rank's work under MPI (`PieceAccelerator`): the pieces inside its shard run
/// as a `CUDAAttentionSession` over the shard's rows, and the LSH blocks it is dealt from
/// rectangles spanning ranks run through the same tile kernel, on their gathered rows. Rows,
/// exchanges and merges stay on the host (the MPI library is not assumed to be CUDA-aware).
///
/// Same seed and options → the same pieces, sorted orders and samples as one GPU running the
/// whole problem, and each block's tiles hold the same query rows and read the same keys and
/// samples in the same order: non-causal, the output equals the single-GPU run's bit for bit;
/// causal, the rectangles spanning ranks are merged on the host (fp32 rounding of the merge).
package final class CUDAPieceAccelerator: PieceAccelerator {
    let kernels: CUDAKernels
    let precision: DevicePrecision
    let stream: CUDAStream
    /// Device buffers of `runBlocks`, kept from call to call (grown when too small).
    private var buffers: [String: DeviceBuffer] = [:]
    package let deviceDescription: String

    /// - Throws: `CUDAError` when there is no driver or no such device, or it is older than sm_80.
    package init(device index: Int, precision: DevicePrecision) throws {
        kernels = try CUDAKernels.forDevice(index)
        self.precision = precision
        try kernels.device.makeCurrent()
        stream = try CUDAStream(device: kernels.device)
        deviceDescription = try cudaDeviceDescription(index)
    }

    /// The last shard job's session (plan, tables, device memory), reused when the next job is
    /// the same problem (repeated calls of one `DistributedAttention`).
    private var lastSession: (shape: AttentionShape, origin: [Int], levels: [[Piece]], options: AttentionOptions, session: CUDAAttentionSession)?

    package func runPieces(_ job: ShardPieces, options: AttentionOptions) throws -> Int {
        try checkCUDAShape(job.shape)
        let session: CUDAAttentionSession
        let origin = [job.queryOrigin, job.keyOrigin]
        if let last = lastSession, last.shape == job.shape, last.origin == origin, last.options == options, last.levels == job.levels {
            session = last.session
        } else {
            lastSession = nil  // its device memory first
            let levels = job.localLevels.map {
                HostLevel(pieces: $0, shape: job.shape, options: options, origin: (job.queryOrigin, job.keyOrigin))
            }
            let plan = HostPlan(levels: levels, shape: job.shape, options: options)
            session = try CUDAAttentionSession(shape: job.shape, options: options, kernels: kernels, precision: precision, plan: plan)
            lastSession = (job.shape, origin, job.levels, options, session)
        }
        try session.upload(query: job.query, key: job.key, value: job.value)
        // Rows that no piece writes keep their values (and a row's first piece sees lse −inf).
        try session.output.upload(UnsafeRawBufferPointer(job.output))
        try session.logSumExp.upload(UnsafeRawBufferPointer(job.logSumExp))
        try session.run()
        try session.output.download(into: UnsafeMutableRawBufferPointer(job.output))
        try session.logSumExp.download(into: UnsafeMutableRawBufferPointer(job.logSumExp))
        return session.plan.tables.evaluatedPairs
    }

    /// A device buffer of at least `bytes` bytes kept under `name`.
    private func buffer(_ name: String, bytes: Int) throws -> DeviceBuffer {
        if let b = buffers[name], b.byteCount >= bytes { return b }
        buffers[name] = nil
        let b = try DeviceBuffer(device: kernels.device, byteCount: max(bytes, 16))
        buffers[name] = b
        return b
    }

    private func table<T: BitwiseCopyable>(_ name: String, _ values: [T]) throws -> DeviceBuffer {
        let b = try buffer(name, bytes: values.count * MemoryLayout<T>.stride)
        try b.upload(values)
        return b
    }

    /// Host staging buffers of `runBlocks` (packed rows, results), kept and grown like `buffers`:
    /// fresh pages would be zeroed by the kernel at first touch on every rectangle.
    private var staging: [String: UnsafeMutableBufferPointer<Float>] = [:]
    /// How many entries the identity order on the device holds.
    private var identityLength = 0

    deinit { for b in staging.values { b.deallocate() } }

    private func host(_ name: String, count: Int) -> UnsafeMutableBufferPointer<Float> {
        if let b = staging[name], b.count >= count { return b }
        staging[name]?.deallocate()
        let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(count, 1))
        staging[name] = b
        return b
    }

    package func runBlocks(_ batch: BlockBatch, options: AttentionOptions, exchangeBlockSums: ([Double]) throws -> [Double]) throws {
        guard !batch.blocks.isEmpty else {
            if options.estimator == .stratifiedControlVariate { _ = try exchangeBlockSums([]) }
            return
        }
        let device = kernels.device
        try device.makeCurrent()
        let t = BlockBatchTables(batch, options: options)
        let d = batch.headDim, dv = batch.valueDim, threads = options.effectiveThreads
        let p16 = precision.kernelSuffix
        let convert = try kernels.function(precision == .bfloat16 ? "convert_f32_bf16" : "convert_f32_f16")
        // Rows: packed on the host (in parallel), fp32 up, 16-bit on the device (the rounding the
        // single-GPU upload does).
        let packed = [("q", t.queryRows * d), ("k", t.keyRows * d), ("v", t.keyRows * dv)].map { (name: $0.0, rows: host($0.0, count: $0.1), count: $0.1) }
        BlockBatchTables.packRows(batch, query: packed[0].rows.baseAddress!, key: packed[1].rows.baseAddress!,
                                  value: packed[2].rows.baseAddress!, threads: threads)
        var rows16: [DeviceBuffer] = []
        for p in packed {
            let up = try buffer(p.name + "32", bytes: p.count * 4)
            try up.upload(UnsafeRawBufferPointer(start: p.rows.baseAddress!, count: p.count * 4))
            let target = try buffer(p.name + "16", bytes: p.count * 2)
            try stream.launch(convert, grid: (min(65535, (p.count + 255) / 256), 1, 1), block: (256, 1, 1),
                              arguments: [.pointer(up.pointer), .pointer(target.pointer), .int64(Int64(p.count)), .pointer(0)])
            rows16.append(target)
        }
        if identityLength < t.keyRows {
            identityLength = max(t.keyRows, 2 * identityLength)
            _ = try table("order", (0..<Int32(identityLength)).map { $0 })
        }
        let order = buffers["order"]!
        let samplePositions = try table("samplePositions", t.samplePositions)
        let sampleLog2Weights = try table("sampleLog2Weights", t.sampleLog2Weights)
        let sampleWeights = try table("sampleWeights", t.sampleWeights)
        let tiles = try table("tiles", t.tiles)
        var correction: DevicePointer = 0
        if t.controlVariate {
            let blockSums = try kernels.function("cv_block_sums_\(p16)"), finish = try kernels.function("cv_finish_\(p16)")
            let nb = batch.blockCount, mine = batch.blocks.count
            let controlBlocks = try table("controlBlocks", t.controlBlocks)
            let localSum = try buffer("blockSum", bytes: mine * dv * 8), localIn = try buffer("inBlock", bytes: mine * dv * 8)
            try stream.launch(blockSums, grid: (mine, 1, 1), block: (HostLevel.controlBlockThreads, 1, 1), arguments: [
                .pointer(rows16[2].pointer), .int(t.keyRows), .int(dv), .pointer(controlBlocks.pointer), .pointer(order.pointer),
                .pointer(samplePositions.pointer), .pointer(sampleWeights.pointer), .pointer(localSum.pointer), .pointer(localIn.pointer),
            ])
            try stream.synchronize()
            let sums = try localSum.download(Double.self, count: mine * dv)
            let inside = try localIn.download(Double.self, count: mine * dv)
            let all = try exchangeBlockSums(sums)
            precondition(all.count == nb * dv, "exchangeBlockSums returned \(all.count) values for \(nb) blocks")
            // Only this batch's blocks' corrections are read, so only their in-block sample sums
            // need to be in place.
            var insideAll = [Double](repeating: 0, count: nb * dv)
            for (i, block) in batch.blocks.enumerated() {
                for c in 0..<dv { insideAll[block.index * dv + c] = inside[i * dv + c] }
            }
            let fullSum = try table("blockSumAll", all), fullIn = try table("inBlockAll", insideAll)
            let piece = try table("controlPiece", t.controlPiece)
            let corrections = try buffer("correction", bytes: nb * dv * 4)
            try stream.launch(finish, grid: (1, 8, 1), block: (HostLevel.controlFinishThreads, 1, 1), arguments: [
                .pointer(rows16[2].pointer), .int(t.keyRows), .int(dv), .pointer(piece.pointer), .pointer(order.pointer),
                .pointer(samplePositions.pointer), .pointer(sampleWeights.pointer), .pointer(fullSum.pointer), .pointer(fullIn.pointer),
                .pointer(corrections.pointer),
            ])
            correction = corrections.pointer
        }
        let out = try buffer("out", bytes: t.queryRows * dv * 4), lse = try buffer("lse", bytes: t.queryRows * 4)
        try kernels.launchTiles(on: stream, p16: p16, dim: d, hyper: true, tileCount: t.tileCount, TileArguments(
            query: rows16[0].pointer, key: rows16[1].pointer, value: rows16[2].pointer, output: out.pointer, logSumExp: lse.pointer,
            queryCount: t.queryRows, keyCount: t.keyRows, tiles: tiles.pointer, order: order.pointer, samplePositions: samplePositions.pointer,
            sampleLog2Weights: sampleLog2Weights.pointer, correction: correction, scaleLog2: TileArguments.scaleLog2(options, headDim: d)))
        try stream.synchronize()
        let o = host("out", count: t.queryRows * dv), l = host("lse", count: t.queryRows)
        try out.download(into: UnsafeMutableRawBufferPointer(start: o.baseAddress!, count: t.queryRows * dv * 4))
        try lse.download(into: UnsafeMutableRawBufferPointer(start: l.baseAddress!, count: t.queryRows * 4))
        // Each slot's result to where it goes (disjoint rows: in parallel).
        let results = Results(batch: batch, output: o.baseAddress!, logSumExp: l.baseAddress!)
        let chunk = 2048
        parallelFor((t.queryRows + chunk - 1) / chunk, threads: threads) { job, _ in
            for slot in (job * chunk)..<min(t.queryRows, (job + 1) * chunk) {
                results.batch.emit(slot, results.output + slot * dv, results.logSumExp[slot])
            }
        }
    }
}

/// A batch's results on the host, handed to `emit` by several threads (each its own slots).
private struct Results: @unchecked Sendable {
    let batch: BlockBatch
    let output: UnsafeMutablePointer<Float>, logSumExp: UnsafeMutablePointer<Float>
}

/// The host tables of one `BlockBatch` for the tile kernel: the tiles (128 query rows of a block
/// each, as the single-GPU plan cuts them) over the packed rows (`packRows`: query slots; key
/// slots then the samples' rows), the samples at their positions in that key layout
/// (`BlockBatch.localSamplePositions`), and the control-variate records.
struct BlockBatchTables {
    var queryRows = 0, keyRows = 0
    var tiles: [Int32] = []
    var samplePositions: [Int32] = []
    var sampleLog2Weights: [Float] = []
    var sampleWeights: [Float] = []
    var controlVariate = false
    /// Control variate: one record per block of the batch (its key slots), one for the rectangle.
    var controlBlocks: [Int32] = []
    var controlPiece: [Int32] = []
    var tileCount: Int { tiles.count / HostLevel.tileFields }

    init(_ batch: BlockBatch, options: AttentionOptions) {
        let m = batch.samples.positions.count
        queryRows = batch.querySlotCount
        keyRows = batch.keySlotCount + m
        samplePositions = batch.localSamplePositions()
        sampleLog2Weights = batch.samples.logWeights
        sampleWeights = batch.samples.weights.map { Float($0) }
        controlVariate = options.estimator == .stratifiedControlVariate
        let flags = controlVariate ? HostLevel.flagControlVariate : 0
        for block in batch.blocks {
            var t0 = block.querySlots.lowerBound
            while t0 < block.querySlots.upperBound {
                let t1 = min(t0 + HostLevel.tileRows, block.querySlots.upperBound)
                // head, kv head, first query (no order: slots), rows, first key slot, keys, not
                // causal, query base, key base, no query order, key order (the identity: the
                // kernel finds sampled rows through it), samples, flags, control-variate row
                // (the block's index in the rectangle), keys outside the block.
                tiles += [
                    0, 0, Int32(t0), Int32(t1 - t0), Int32(block.keySlots.lowerBound), Int32(block.keySlots.count), 0,
                    0, 0, -1, 0, 0, Int32(m), flags, Int32(block.index), Int32(batch.keyCount - block.keys.count),
                ]
                t0 = t1
            }
            controlBlocks += [0, 0, 0, Int32(block.keySlots.lowerBound), Int32(block.keySlots.count), 0, Int32(m)]
        }
        controlPiece = [0, Int32(batch.blockCount), 0, 0, 0, 0, Int32(m)]
    }

    /// Copies the batch's rows side by side: `query` gets the query slots' rows (d floats each),
    /// `key` and `value` the key slots' rows then the samples' (`keyRows` rows), in parallel.
    static func packRows(_ batch: BlockBatch, query: UnsafeMutablePointer<Float>, key: UnsafeMutablePointer<Float>,
                         value: UnsafeMutablePointer<Float>, threads: Int) {
        let sink = RowSink(batch: batch, query: query, key: key, value: value)
        let queries = batch.querySlotCount, keys = batch.keySlotCount, all = keys + batch.samples.positions.count
        let chunk = 2048
        let queryJobs = (queries + chunk - 1) / chunk, keyJobs = (all + chunk - 1) / chunk
        parallelFor(queryJobs + keyJobs, threads: threads) { job, _ in
            let b = sink.batch, d = b.headDim, dv = b.valueDim
            if job < queryJobs {
                for s in (job * chunk)..<min(queries, (job + 1) * chunk) {
                    (sink.query + s * d).update(from: b.queryRow(s), count: d)
                }
            } else {
                let first = (job - queryJobs) * chunk
                for r in first..<min(all, first + chunk) {
                    (sink.key + r * d).update(from: r < keys ? b.keyRow(r) : b.sampleKey(r - keys), count: d)
                    (sink.value + r * dv).update(from: r < keys ? b.valueRow(r) : b.sampleValue(r - keys), count: dv)
                }
            }
        }
    }
}

/// A batch and the packed-row buffers its rows are copied into, shared by the copying threads
/// (each writes its own rows).
private struct RowSink: @unchecked Sendable {
    let batch: BlockBatch
    let query: UnsafeMutablePointer<Float>, key: UnsafeMutablePointer<Float>, value: UnsafeMutablePointer<Float>
}
