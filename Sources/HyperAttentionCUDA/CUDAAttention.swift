import CUDADriver
import Foundation
import HyperAttention

/// The kernels of `cudaKernelSource`, compiled for one device (NVRTC, cached on disk per
/// architecture) and loaded once per process and device.
final class CUDAKernels: @unchecked Sendable {
    let device: CUDADevice
    let module: CUDAModule
    private var functions: [String: CUDAFunction] = [:]

    nonisolated(unsafe) private static var loaded: [Int: CUDAKernels] = [:]
    private static let lock = NSLock()

    static func forDevice(_ index: Int) throws -> CUDAKernels {
        lock.lock()
        defer { lock.unlock() }
        if let k = loaded[index] { return k }
        let device = try CUDADevice(index: index)
        guard device.computeCapability.major >= 8 else {
            throw CUDAError.unsupported(
                "CUDA device \(index) (\(device.name)) has compute capability \(device.computeCapability.major).\(device.computeCapability.minor); the kernels need 8.0 or newer (bf16 mma.sync, cp.async)")
        }
        // Compute capability 9.0 compiles for sm_90a, whose wgmma kernels the arch-neutral sm_90 lacks.
        let wgmma = device.computeCapability.major == 9 && device.computeCapability.minor == 0
        let cubin = try KernelCache.cubin(source: cudaKernelSource, name: "hyperattn.cu",
                                          architecture: device.architecture + (wgmma ? "a" : ""))
        let k = CUDAKernels(device: device, module: try device.loadModule(cubin: cubin), wgmma: wgmma)
        loaded[index] = k
        return k
    }

    private init(device: CUDADevice, module: CUDAModule, wgmma: Bool) {
        self.device = device
        self.module = module
        usesWGMMA = wgmma && ProcessInfo.processInfo.environment["HYPERATTN_GPU_MMA"] != "sync"
    }

    /// Whether the d = 64 tile kernels run on `wgmma` (sm_90a devices, unless the environment
    /// variable `HYPERATTN_GPU_MMA` is `sync`) or on `mma.sync`. The same results up to the order
    /// of fp32 sums; wgmma measured 1.2× faster on the H100 (docs/results/gpu/wgmma-h100).
    let usesWGMMA: Bool

    /// The tile kernel of exact or HyperAttention levels and its threads per CTA (128 query rows).
    /// d = 64 with wgmma: 2 warpgroups of 64 rows. d = 64 with mma.sync: exact levels 4 warps of
    /// 32 rows (each K/V fragment read from shared memory feeds two MMAs), HyperAttention levels
    /// 8 warps of 16 rows (their tiles are short, and more warps hide the gathers and the
    /// epilogue; measured faster on the H100). d = 128: 8 warps of 16 rows, mma.sync.
    func tileKernel(p16: String, dim: Int, hyper: Bool) -> (name: String, threads: Int) {
        guard dim == 64 else { return ("attn_\(p16)_d\(dim)", 256) }
        if usesWGMMA { return (hyper ? "attn_\(p16)_d64_hw" : "attn_\(p16)_d64_w", 256) }
        return hyper ? ("attn_\(p16)_d64_h", 256) : ("attn_\(p16)_d64", 128)
    }

    func function(_ name: String) throws -> CUDAFunction {
        if let f = functions[name] { return f }
        let f = try module.function(name)
        functions[name] = f
        return f
    }

    /// Launches the tiles of one level (one CTA per tile) on `tileKernel`'s kernel.
    func launchTiles(on stream: CUDAStream, p16: String, dim: Int, hyper: Bool, tileCount: Int, _ a: TileArguments) throws {
        let kernel = tileKernel(p16: p16, dim: dim, hyper: hyper)
        try stream.launch(try function(kernel.name), grid: (tileCount, 1, 1), block: (kernel.threads, 1, 1), arguments: [
            .pointer(a.query), .pointer(a.key), .pointer(a.value), .pointer(a.output), .pointer(a.logSumExp),
            .int(a.queryCount), .int(a.keyCount), .pointer(a.tiles), .pointer(a.order), .pointer(a.order),
            .pointer(a.samplePositions), .pointer(a.sampleLog2Weights), .pointer(a.correction), .float(a.scaleLog2),
        ])
    }
}

/// The arguments of the tile kernels: 16-bit Q, K, V rows, fp32 outputs and lse, the tiles'
/// fields, the sorted orders (one array for Q and K), the samples and the control variate's
/// corrections (0 where unused), the scale in log2 units.
struct TileArguments {
    var query, key, value, output, logSumExp: DevicePointer
    var queryCount, keyCount: Int
    var tiles, order, samplePositions, sampleLog2Weights, correction: DevicePointer
    var scaleLog2: Float

    /// The options' softmax scale in log2 units (the kernels exponentiate with exp2).
    static func scaleLog2(_ options: AttentionOptions, headDim: Int) -> Float {
        options.effectiveScale(headDim: headDim) * 1.442_695_040_888_963_4
    }
}

extension DevicePrecision {
    /// The suffix of the kernels that read inputs of this precision (`attn_bf16_…`, `cv_finish_f16`).
    var kernelSuffix: String { self == .bfloat16 ? "bf16" : "f16" }
}

/// Checks that the GPU backend can serve a problem shape.
package func checkCUDAShape(_ shape: AttentionShape) throws {
    guard shape.headDim == shape.valueDim, shape.headDim == 64 || shape.headDim == 128 else {
        throw CUDAError.unsupported(
            "the CUDA backend supports head dims d = d_v = 64 or 128; got d = \(shape.headDim), d_v = \(shape.valueDim)")
    }
    let rows = shape.batch * shape.queryHeads * max(shape.queryCount, shape.keyCount)
    guard rows < Int(Int32.max) / 2 else {
        throw CUDAError.unsupported("the CUDA backend indexes rows with 32-bit integers; b·h·n = \(rows) is too large")
    }
}

/// One attention problem resident on a GPU: its plan (all tables uploaded), its inputs in 16-bit,
/// and fp32 outputs. `enqueue()` runs every kernel of the call on the session's stream, so a
/// benchmark can time repeated calls on device-resident inputs with CUDA events.
public final class CUDAAttentionSession: @unchecked Sendable {
    public let shape: AttentionShape
    public let options: AttentionOptions
    public let precision: DevicePrecision
    public var device: CUDADevice { kernels.device }
    let kernels: CUDAKernels
    let stream: CUDAStream
    /// Every level's tables in one set (`HostPlan`) and their device copies.
    let plan: HostPlan
    let tables: DeviceLevel
    let query16: DeviceBuffer, key16: DeviceBuffer, value16: DeviceBuffer
    /// fp32 copies of Q and K when the inputs came as fp32 and some value of Q or K is not a value
    /// of the session's 16-bit precision: the hash reads them, so that the LSH order is the CPU
    /// path's bit for bit (when every value is, the hash reads the 16-bit copies: the same values).
    var queryHash: DeviceBuffer?, keyHash: DeviceBuffer?
    public let output: DeviceBuffer, logSumExp: DeviceBuffer

    /// Plans the call and allocates its device memory on CUDA device `device`.
    public convenience init(shape: AttentionShape, options: AttentionOptions, device index: Int, precision: DevicePrecision) throws {
        try options.validate(for: shape)
        try checkCUDAShape(shape)
        try self.init(shape: shape, options: options, kernels: try CUDAKernels.forDevice(index), precision: precision,
                  plan: HostPlan(shape: shape, options: options))
    }

    /// A session running `plan` (built for `shape`, whose options were checked by the caller).
    init(shape: AttentionShape, options: AttentionOptions, kernels: CUDAKernels, precision: DevicePrecision, plan: HostPlan) throws {
        self.shape = shape
        self.options = options
        self.precision = precision
        self.kernels = kernels
        try kernels.device.makeCurrent()
        stream = try CUDAStream(device: kernels.device)
        let d = kernels.device
        let qCount = shape.batch * shape.queryHeads * shape.queryCount
        let kCount = shape.batch * shape.keyHeads * shape.keyCount
        query16 = try DeviceBuffer(device: d, byteCount: qCount * shape.headDim * 2)
        key16 = try DeviceBuffer(device: d, byteCount: kCount * shape.headDim * 2)
        value16 = try DeviceBuffer(device: d, byteCount: kCount * shape.valueDim * 2)
        output = try DeviceBuffer(device: d, byteCount: qCount * shape.valueDim * 4)
        logSumExp = try DeviceBuffer(device: d, byteCount: qCount * 4)
        self.plan = plan
        tables = try DeviceLevel(device: d, host: plan.tables, valueDim: shape.valueDim)
    }

    /// Whether any level hashes (HyperAttention pieces).
    var hashes: Bool { plan.tables.segmentCount > 0 }

    /// Uploads fp32 inputs (layout `[b, h, n, d]`), rounding them to the session's precision on
    /// the device; Q and K stay in fp32 too when the call hashes.
    public func upload(query: Tensor, key: Tensor, value: Tensor) throws {
        try query.withUnsafeBufferPointer { q in
            try key.withUnsafeBufferPointer { k in
                try value.withUnsafeBufferPointer { v in try upload(query: q, key: k, value: v) }
            }
        }
    }

    /// Uploads fp32 rows (`[b, h, n, d]`, as many as the session's shape has).
    func upload(query: UnsafeBufferPointer<Float>, key: UnsafeBufferPointer<Float>, value: UnsafeBufferPointer<Float>) throws {
        try device.makeCurrent()
        let convert = try kernels.function(precision == .bfloat16 ? "convert_f32_bf16" : "convert_f32_f16")
        // The fp32 copy is kept for hashing only when some value is not exactly a 16-bit value of
        // the session's precision (when all are, the 16-bit copy hashes to the same bits).
        let flag = try DeviceBuffer(device: device, byteCount: 4)
        func send(_ t: UnsafeBufferPointer<Float>, to target: DeviceBuffer, keep: Bool) throws -> (copy: DeviceBuffer, inexact: Bool)? {
            precondition(t.count * 2 == target.byteCount, "upload: \(t.count) values for a buffer of \(target.byteCount / 2)")
            let staging = try DeviceBuffer(device: device, byteCount: t.count * 4)
            try staging.upload(UnsafeRawBufferPointer(t))
            try stream.memset(flag.pointer, 0, bytes: 4)
            try stream.launch(convert, grid: (min(65535, (t.count + 255) / 256), 1, 1), block: (256, 1, 1),
                              arguments: [.pointer(staging.pointer), .pointer(target.pointer), .int64(Int64(t.count)),
                                          .pointer(keep ? flag.pointer : 0)])
            try stream.synchronize()
            guard keep else { return nil }
            return (staging, try flag.download(Int32.self, count: 1)[0] != 0)
        }
        let q = try send(query, to: query16, keep: hashes), k = try send(key, to: key16, keep: hashes)
        let fp32 = (q?.inexact ?? false) || (k?.inexact ?? false)
        queryHash = fp32 ? q?.copy : nil
        keyHash = fp32 ? k?.copy : nil
        _ = try send(value, to: value16, keep: false)
    }

    /// Fills Q, K and V on the device with N(0, 1) values rounded to the session's precision
    /// (benchmark inputs; a counter hash of (seed, tensor, index)).
    public func fillNormal(seed: UInt64) throws {
        try device.makeCurrent()
        let fill = try kernels.function("fill_normal_16")
        for (i, b) in [query16, key16, value16].enumerated() {
            let n = b.byteCount / 2
            try stream.launch(fill, grid: (min(65535, (n + 255) / 256), 1, 1), block: (256, 1, 1), arguments: [
                .pointer(b.pointer), .int64(Int64(n)), .int64(Int64(bitPattern: seed &* 3 &+ UInt64(i) &+ 0x5EED)),
                .int32(precision == .bfloat16 ? 1 : 2),
            ])
        }
        queryHash = nil
        keyHash = nil
        try stream.synchronize()
    }

    /// Enqueues the whole call (every level: hash, sort, control variate, attention tiles).
    /// `mark`, when given, is called after each phase with its name (for `profile()`).
    public func enqueue(mark: ((String) throws -> Void)? = nil) throws {
        try enqueuePreparation(mark: mark)
        // The tiles, level by level (a level lse-merges into rows that earlier levels wrote).
        for level in plan.levels where level.tileCount > 0 {
            try enqueueTiles(first: level.firstTile, count: level.tileCount, hyper: level.hyper)
            try mark?(level.hyper ? "attention (hyper levels)" : "attention (exact levels)")
        }
    }

    /// Hashing (each row once per query head, for every level), sort and control variate of
    /// every level: one launch each.
    private func enqueuePreparation(mark: ((String) throws -> Void)?) throws {
        let host = plan.tables, dev = tables, s = shape
        guard host.segmentCount > 0 else { return }
        let p16 = precision.kernelSuffix
        let hashKind = queryHash != nil ? "f32" : p16
        let hq = (queryHash ?? query16).pointer, hk = (keyHash ?? key16).pointer
        let sharedMemorySort = HostLevel.sortsInSharedMemory(lshBits: options.lshBits)
        // Global-memory counts are added with atomics: they start at zero.
        if !sharedMemorySort { try stream.memset(dev.counts!.pointer, 0, bytes: dev.counts!.byteCount) }
        try stream.launch(try kernels.function("hash_rows_\(hashKind)_d\(s.headDim)"), grid: ((host.hashChunkCount + 3) / 4, 1, 1),
                          block: (128, 1, 1), arguments: [
            .pointer(hq), .pointer(hk), .int(s.queryCount), .int(s.keyCount), .pointer(dev.hashSegments!.pointer),
            .pointer(dev.hashChunks!.pointer), .int(host.hashChunkCount),
            .pointer(dev.directions!.pointer), .int(options.lshBits), .pointer(dev.buckets!.pointer), .pointer(dev.counts!.pointer),
        ])
        try mark?("hash")
        // The histograms the hash kernel did not write (non-causal: none).
        if host.countChunkCount > 0 {
            try stream.launch(try kernels.function("count_buckets"), grid: ((host.countChunkCount + 3) / 4, 1, 1), block: (128, 1, 1), arguments: [
                .pointer(dev.segments!.pointer), .pointer(dev.countChunks!.pointer), .int(host.countChunkCount),
                .pointer(dev.buckets!.pointer), .pointer(dev.counts!.pointer), .int(options.lshBits),
            ])
            try mark?("count")
        }
        try stream.launch(try kernels.function("scan_counts"), grid: (host.segmentCount, 1, 1), block: (1024, 1, 1), arguments: [
            .pointer(dev.counts!.pointer), .pointer(dev.segments!.pointer), .int(options.lshBits),
        ])
        try mark?("scan")
        try stream.launch(try kernels.function(sharedMemorySort ? "scatter_order_local" : "scatter_order"),
                          grid: ((host.chunkCount + 3) / 4, 1, 1), block: (128, 1, 1), arguments: [
            .pointer(dev.segments!.pointer), .pointer(dev.chunks!.pointer), .int(host.chunkCount),
            .pointer(dev.buckets!.pointer), .pointer(dev.counts!.pointer), .pointer(dev.order!.pointer), .int(options.lshBits),
        ])
        try mark?("scatter")
        guard host.controlBlockCount > 0 && options.estimator == .stratifiedControlVariate else { return }
        try stream.launch(try kernels.function("cv_block_sums_\(p16)"), grid: (host.controlBlockCount, 1, 1),
                          block: (HostLevel.controlBlockThreads, 1, 1), arguments: [
            .pointer(value16.pointer), .int(s.keyCount), .int(s.valueDim), .pointer(dev.controlBlocks!.pointer),
            .pointer(dev.order!.pointer), .pointer(dev.samplePositions!.pointer), .pointer(dev.sampleWeights!.pointer),
            .pointer(dev.blockSum!.pointer), .pointer(dev.inBlock!.pointer),
        ])
        try mark?("control variate (block sums)")
        // Few pieces (non-causal: one per head): each piece's corrections are written by up
        // to 8 CTAs (measured at n = 131072, h = 24, with 256 threads per CTA: 0.087 ms with
        // 8, 0.147 ms with 1); many pieces (causal rectangles): one CTA each (0.143 ms,
        // against 0.536 ms with 8). With 1024 threads: 0.030 and 0.105 ms.
        let split = min(8, max(1, 264 / host.controlPieceCount))
        try stream.launch(try kernels.function("cv_finish_\(p16)"), grid: (host.controlPieceCount, split, 1),
                          block: (HostLevel.controlFinishThreads, 1, 1), arguments: [
            .pointer(value16.pointer), .int(s.keyCount), .int(s.valueDim), .pointer(dev.controlPieces!.pointer),
            .pointer(dev.order!.pointer), .pointer(dev.samplePositions!.pointer), .pointer(dev.sampleWeights!.pointer),
            .pointer(dev.blockSum!.pointer), .pointer(dev.inBlock!.pointer), .pointer(dev.correction!.pointer),
        ])
        try mark?("control variate (finish)")
    }

    /// Tiles `first ..< first + count` of the plan (one level's).
    private func enqueueTiles(first: Int, count: Int, hyper: Bool) throws {
        guard count > 0 else { return }
        let s = shape, dev = tables
        try kernels.launchTiles(on: stream, p16: precision.kernelSuffix, dim: s.headDim, hyper: hyper, tileCount: count, TileArguments(
            query: query16.pointer, key: key16.pointer, value: value16.pointer, output: output.pointer, logSumExp: logSumExp.pointer,
            queryCount: s.queryCount, keyCount: s.keyCount, tiles: dev.tiles.pointer + UInt64(first * HostLevel.tileFields * 4),
            order: dev.order?.pointer ?? 0, samplePositions: dev.samplePositions?.pointer ?? 0,
            sampleLog2Weights: dev.sampleLog2Weights?.pointer ?? 0, correction: dev.correction?.pointer ?? 0,
            scaleLog2: TileArguments.scaleLog2(options, headDim: s.headDim)))
    }

    /// Milliseconds per phase of one call, summed over levels (CUDA events between phases).
    public func profile() throws -> [(phase: String, milliseconds: Double)] {
        try run()
        var events: [(String, CUDAEvent)] = []
        let start = try CUDAEvent(device: device)
        try start.record(on: stream)
        try enqueue { name in
            let e = try CUDAEvent(device: self.device)
            try e.record(on: self.stream)
            events.append((name, e))
        }
        var totals: [(String, Double)] = []
        var previous = start
        for (name, e) in events {
            let ms = try e.milliseconds(since: previous)
            if let i = totals.firstIndex(where: { $0.0 == name }) { totals[i].1 += ms } else { totals.append((name, ms)) }
            previous = e
        }
        return totals.map { (phase: $0.0, milliseconds: $0.1) }
    }

    /// Runs the call and waits for it.
    public func run() throws {
        try device.makeCurrent()
        try enqueue()
        try stream.synchronize()
    }

    /// Milliseconds of each of `repeats` calls, timed with CUDA events on the session's stream
    /// (after one untimed warm-up call).
    public func time(repeats: Int) throws -> [Double] {
        try run()
        let start = try CUDAEvent(device: device), end = try CUDAEvent(device: device)
        var times: [Double] = []
        for _ in 0..<max(1, repeats) {
            try start.record(on: stream)
            try enqueue()
            try end.record(on: stream)
            times.append(try end.milliseconds(since: start))
        }
        return times
    }

    /// Query–key pairs the call evaluates and its useful FLOPs (as `AttentionStats`).
    public var stats: AttentionStats {
        var st = AttentionStats()
        st.evaluatedPairs = plan.tables.evaluatedPairs
        st.flops = Double(st.evaluatedPairs) * 2 * Double(shape.headDim + shape.valueDim)
        return st
    }

    /// Uploads the inputs, runs the call once and downloads (O, lse) in the query's shape (last
    /// dimension d_v) and the query's shape without its last dimension. The inputs stay on the
    /// device, for `time(repeats:)`.
    public func attention(query: Tensor, key: Tensor, value: Tensor) throws -> AttentionResult {
        try upload(query: query, key: key, value: value)
        try run()
        var outShape = query.shape
        outShape[outShape.count - 1] = shape.valueDim
        return try result(outputShape: outShape, logSumExpShape: Array(query.shape.dropLast()))
    }

    /// Downloads (O, lse) into tensors of the given shapes.
    public func result(outputShape: [Int], logSumExpShape: [Int]) throws -> AttentionResult {
        try stream.synchronize()
        let o = try Tensor(shape: outputShape) { try output.download(into: UnsafeMutableRawBufferPointer($0)) }
        let l = try Tensor(shape: logSumExpShape) { try logSumExp.download(into: UnsafeMutableRawBufferPointer($0)) }
        return AttentionResult(output: o, logSumExp: l, stats: stats)
    }
}

/// Device tables of one level (see `HostLevel`) and its scratch arrays.
final class DeviceLevel {
    let segments, chunks, countChunks, hashSegments, hashChunks, directions: DeviceBuffer?
    let buckets, order, counts: DeviceBuffer?
    let tiles: DeviceBuffer
    let samplePositions, sampleLog2Weights, sampleWeights: DeviceBuffer?
    let controlBlocks, controlPieces, blockSum, inBlock, correction: DeviceBuffer?

    init(device d: CUDADevice, host: HostLevel, valueDim: Int) throws {
        func table<T: BitwiseCopyable>(_ values: [T]) throws -> DeviceBuffer? {
            values.isEmpty ? nil : try DeviceBuffer(device: d, copying: values)
        }
        segments = try table(host.segments)
        chunks = try table(host.chunks)
        countChunks = try table(host.countChunks)
        hashSegments = try table(host.hashSegments)
        hashChunks = try table(host.hashChunks)
        directions = try table(host.directions)
        let hashed = host.orderLength > 0
        // One bucket per row and query head (`HostLevel.bucketOffset`), written once per call.
        buckets = hashed ? try DeviceBuffer(device: d, byteCount: host.bucketLength * 2) : nil
        order = hashed ? try DeviceBuffer(device: d, byteCount: host.orderLength * 4) : nil
        counts = hashed ? try DeviceBuffer(device: d, byteCount: host.countLength * 4) : nil
        tiles = try DeviceBuffer(device: d, copying: host.tiles)
        samplePositions = try table(host.samplePositions)
        sampleLog2Weights = try table(host.sampleLog2Weights)
        sampleWeights = try table(host.sampleWeights)
        controlBlocks = try table(host.controlBlocks)
        controlPieces = try table(host.controlPieces)
        let rows = host.controlBlockCount * valueDim
        blockSum = rows > 0 ? try DeviceBuffer(device: d, byteCount: rows * 8) : nil
        inBlock = rows > 0 ? try DeviceBuffer(device: d, byteCount: rows * 8) : nil
        correction = rows > 0 ? try DeviceBuffer(device: d, byteCount: rows * 4) : nil
    }
}

/// Attention on an NVIDIA GPU: the same pieces, LSH order, samples and merge order as the CPU
/// path (`HyperAttention.attention`) for the same options and seed; inputs are rounded to
/// `precision` on the device, products accumulate in fp32, outputs and lse are fp32.
///
///     O = softmax(Q Kᵀ · scale) V,   lse_i = log Σ_k exp(scale · q_i·k_k)
///
/// - Parameters:
///   - options: as for the CPU path; `options.backend` must be `.cuda(device:precision:)`
///     (`.cpu` runs `HyperAttention.attention`).
/// - Throws: `AttentionError` for invalid arguments, `CUDAError` when there is no driver, no
///   such GPU, an unsupported shape, or a CUDA failure.
public func cudaAttention(query: Tensor, key: Tensor, value: Tensor, options: AttentionOptions) throws -> AttentionResult {
    guard case let .cuda(index, precision) = options.backend else {
        return try attention(query: query, key: key, value: value, options: options)
    }
    let shape = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
    let session = try CUDAAttentionSession(shape: shape, options: options, device: index, precision: precision)
    return try session.attention(query: query, key: key, value: value)
}

/// The GPU of one rank: `--device` if given, else under mpirun the rank's local rank
/// (`OMPI_COMM_WORLD_LOCAL_RANK`, `MPI_LOCALRANKID`, `SLURM_LOCALID`), else 0.
public func defaultCUDADevice(explicit: Int?) -> Int {
    if let explicit { return explicit }
    let env = ProcessInfo.processInfo.environment
    for name in ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"] {
        if let v = env[name], let i = Int(v), i >= 0 { return i }
    }
    return 0
}

/// A description of CUDA device `index` and the tile kernels' tensor-core path ("NVIDIA H100
/// 80GB HBM3, sm_90, 132 SMs, driver 13.0, wgmma"); compiles (or loads) the kernels.
public func cudaDeviceDescription(_ index: Int) throws -> String {
    let k = try CUDAKernels.forDevice(index)
    let d = k.device
    let v = d.driver.version
    return "\(d.name), \(d.architecture), \(d.multiprocessors) SMs, driver \(v / 1000).\(v % 1000 / 10), \(k.usesWGMMA ? "wgmma" : "mma.sync")"
}
