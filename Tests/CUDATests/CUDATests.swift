import CUDADriver
import Foundation
import HyperAttention
import HyperAttentionTestSupport
import Testing

@testable import HyperAttentionCUDA

/// Where NVRTC is on this machine, if anywhere: `$HYPERATTN_NVRTC`, the copy that
/// `scripts/build.sh --deps-only` installs from PyPI (`.build-deps/nvrtc`), then the loader path.
enum NVRTCLocator {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var candidates: [String] {
        var names: [String] = []
        if let env = ProcessInfo.processInfo.environment["HYPERATTN_NVRTC"], !env.isEmpty { names.append(env) }
        let wheel = repository.appendingPathComponent(".build-deps/nvrtc/nvidia")
        if let cuda = try? FileManager.default.contentsOfDirectory(atPath: wheel.path) {
            for dir in cuda.sorted().reversed() {
                let lib = wheel.appendingPathComponent(dir).appendingPathComponent("lib")
                for file in (try? FileManager.default.contentsOfDirectory(atPath: lib.path)) ?? []
                where file.hasPrefix("libnvrtc.so") {
                    names.append(lib.appendingPathComponent(file).path)
                }
            }
        }
        return names + ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]
    }

    static let loaded: Result<NVRTC, Error> = Result { try NVRTC(candidates: candidates) }
    static var available: Bool { (try? loaded.get()) != nil }
    static var reason: String {
        if case let .failure(e) = loaded { return "NVRTC not found, compile check skipped (run scripts/build.sh --deps-only to fetch it from PyPI): \(e)" }
        return ""
    }
}

enum GPU {
    static let probe: Result<Int, Error> = Result {
        let d = try CUDADriver.shared()
        let n = try d.deviceCount()
        if n == 0 { throw CUDAError.unavailable("no CUDA GPU") }
        return n
    }
    static var available: Bool { (try? probe.get()) != nil }
    static var reason: String {
        if case let .failure(e) = probe { return "no CUDA GPU here, GPU tests skipped: \(e)" }
        return ""
    }
}

@Suite("CUDA kernel source (NVRTC compile check)")
struct KernelSourceTests {
    @Test("The kernel source compiles for sm_80, sm_90 and sm_90a (wgmma) with an empty log",
          .enabled(if: NVRTCLocator.available, Comment(rawValue: NVRTCLocator.reason)))
    func compiles() throws {
        let nvrtc = try NVRTCLocator.loaded.get()
        for arch in ["sm_80", "sm_90", "sm_90a"] {
            let c = try nvrtc.compile(source: cudaKernelSource, name: "hyperattn.cu", architecture: arch)
            #expect(c.cubin.count > 1000)
            #expect(c.log.isEmpty, "NVRTC log for \(arch): \(c.log)")
        }
    }

    @Test("A compile error comes back as CUDAError.nvrtc with the compiler log",
          .enabled(if: NVRTCLocator.available, Comment(rawValue: NVRTCLocator.reason)))
    func compileErrorHasLog() throws {
        let nvrtc = try NVRTCLocator.loaded.get()
        #expect {
            _ = try nvrtc.compile(source: "extern \"C\" __global__ void k() { undeclared_name = 1; }", name: "bad.cu", architecture: "sm_90")
        } throws: { error in
            guard case let .nvrtc(call, _, _, log) = error as? CUDAError else { return false }
            return call.hasPrefix("nvrtcCompileProgram") && log.contains("undeclared_name")
        }
    }

    @Test("A missing NVRTC names the paths tried")
    func missingNVRTC() {
        #expect {
            _ = try NVRTC(candidates: ["/nonexistent/libnvrtc.so.99"])
        } throws: { error in
            guard case let .nvrtcUnavailable(m) = error as? CUDAError else { return false }
            return m.contains("/nonexistent/libnvrtc.so.99") && m.contains("HYPERATTN_NVRTC")
        }
    }

    @Test("Cache file names depend on the source and options")
    func cacheKey() {
        let a = KernelCache.hash("a", options: []), b = KernelCache.hash("b", options: []), c = KernelCache.hash("a", options: ["-x"])
        #expect(a.count == 16 && a != b && a != c)
    }
}

@Suite("CUDA backend without a GPU")
struct NoGPUTests {
    @Test("The core refuses .cuda and names the GPU module")
    func coreRefuses() {
        let t = TestData.gaussian([16, 64], seed: 1)
        #expect(throws: AttentionError.self) {
            _ = try attention(query: t, key: t, value: t, options: AttentionOptions(backend: .cuda(device: 0)))
        }
    }

    @Test("cudaAttention reports a missing driver or GPU in one sentence",
          .enabled(if: !GPU.available, "a GPU is present: this test is for machines without one"))
    func noDriver() {
        let t = TestData.gaussian([16, 64], seed: 1)
        #expect {
            _ = try cudaAttention(query: t, key: t, value: t, options: AttentionOptions(backend: .cuda(device: 0)))
        } throws: { error in
            guard case let .unavailable(m) = error as? CUDAError else { return false }
            return m.hasPrefix("no CUDA") || m.hasPrefix("no usable CUDA")
        }
    }

    @Test("The GPU plan covers every query row once per level, in the CPU plan's order",
          arguments: [(false, 5000), (true, 4099), (true, 777)])
    func planCoversRows(causal: Bool, n: Int) throws {
        let shape = AttentionShape(batch: 1, queryHeads: 4, keyHeads: 2, queryCount: n, keyCount: n, headDim: 64, valueDim: 64)
        let options = AttentionOptions(causal: causal, minSeqLen: 1024)
        let levels = HostLevel.levels(shape: shape, options: options)
        #expect(levels.count == AttentionPlan(shape: shape, options: options).levels(head: 0).count)
        for (i, level) in levels.enumerated() {
            var seen = [Int](repeating: 0, count: 4 * n)
            for t in 0..<level.tileCount {
                let f = Array(level.tiles[t * 16..<(t + 1) * 16]).map(Int.init)
                #expect(f[3] >= 1 && f[3] <= 128)
                if f[9] < 0 {
                    for r in f[2]..<(f[2] + f[3]) { seen[f[0] * n + r] += 1 }
                } else {
                    // Hyper tiles name sorted positions of the piece; count them by position.
                    for r in f[2]..<(f[2] + f[3]) { seen[f[0] * n + f[7] + r] += 1 }
                }
                #expect((f[13] & 1 == 1) == (i > 0), "only levels after the first merge")
            }
            #expect(seen.allSatisfy { $0 <= 1 })
            if i == 0 { #expect(seen.allSatisfy { $0 == 1 }) }
        }
    }
}

/// The tables of a rank's GPU work under MPI (`CUDAPieceAccelerator`), checked on the CPU.
@Suite("CUDA tables of distributed ranks")
struct DistributedTableTests {
    @Test("A shard's pieces, planned over its rows with its origin, get the whole problem's samples and shifted rows")
    func shardLevelMatchesGlobal() throws {
        let n = 8192, origin = 4096
        let global = AttentionShape(batch: 1, queryHeads: 2, keyHeads: 2, queryCount: n, keyCount: n, headDim: 64, valueDim: 64)
        let options = AttentionOptions(causal: true, blockSize: 128, samples: 64, minSeqLen: 1024, seed: 5)
        let plan = AttentionPlan(shape: global, options: options)
        let shard = AttentionShape(batch: 1, queryHeads: 2, keyHeads: 2, queryCount: n - origin, keyCount: n - origin, headDim: 64, valueDim: 64)
        var compared = 0
        for level in plan.levels(head: 1) {
            // The pieces inside the second half, in global and in shard coordinates.
            let inside = level.filter { $0.queries.lowerBound >= origin && $0.keys.lowerBound >= origin }
            guard !inside.isEmpty else { continue }
            let local = inside.map {
                var p = $0
                p.queries = ($0.queries.lowerBound - origin)..<($0.queries.upperBound - origin)
                p.keys = ($0.keys.lowerBound - origin)..<($0.keys.upperBound - origin)
                return p
            }
            let a = HostLevel(pieces: inside, shape: global, options: options)
            let b = HostLevel(pieces: local, shape: shard, options: options, origin: (origin, origin))
            #expect(a.samplePositions == b.samplePositions)
            #expect(a.sampleLog2Weights == b.sampleLog2Weights)
            #expect(a.evaluatedPairs == b.evaluatedPairs)
            #expect(a.tiles.count == b.tiles.count)
            for t in 0..<a.tileCount {
                let x = Array(a.tiles[t * 16..<(t + 1) * 16]), y = Array(b.tiles[t * 16..<(t + 1) * 16])
                // Row fields move by the origin: first query and key of exact tiles, query and key
                // bases of hyper tiles; sorted positions, counts, samples and flags do not.
                let shifted: Set<Int> = x[9] < 0 ? [2, 4] : [7, 8]
                for f in 0..<16 { #expect(x[f] == y[f] + (shifted.contains(f) ? Int32(origin) : 0), "tile \(t) field \(f)") }
            }
            compared += 1
        }
        #expect(compared >= 3)
    }

    @Test("A batch's samples sit at their rows' slots when inside its blocks, after the key slots otherwise")
    func localSamplePositions() {
        // Blocks 3 and 5 of a rectangle, keys at sorted positions 30..<40 and 50..<60, packed in
        // slots 0..<10 and 10..<20.
        let blocks = [BlockBatch.Block(index: 3, querySlots: 0..<8, keySlots: 0..<10, keys: 30..<40),
                      BlockBatch.Block(index: 5, querySlots: 8..<16, keySlots: 10..<20, keys: 50..<60)]
        var samples = SampleSet(estimator: .uniform, keyCount: 100, count: 4, random: CounterRandom(seed: 1, head: 0, node: 0, purpose: .samplePositions))
        samples.positions = [35, 45, 59, 30]
        let row = UnsafeMutablePointer<Float>.allocate(capacity: 1)
        defer { row.deallocate() }
        let batch = BlockBatch(headDim: 1, valueDim: 1, querySlotCount: 16, keySlotCount: 20, blocks: blocks, blockCount: 10, keyCount: 100,
                               samples: samples, queryRow: { _ in UnsafePointer(row) }, keyRow: { _ in UnsafePointer(row) },
                               valueRow: { _ in UnsafePointer(row) }, sampleKey: { _ in UnsafePointer(row) }, sampleValue: { _ in UnsafePointer(row) },
                               emit: { _, _, _ in })
        #expect(batch.localSamplePositions() == [5, 21, 19, 0])
        // Each tile masks exactly the samples of its own block.
        let t = BlockBatchTables(batch, options: AttentionOptions(blockSize: 10, samples: 4, estimator: .uniform))
        #expect(t.tileCount == 2 && t.keyRows == 24)
        for tile in 0..<2 {
            let f = Array(t.tiles[tile * 16..<(tile + 1) * 16]).map(Int.init)
            let masked = t.samplePositions.map { Int($0) }.filter { $0 >= f[4] && $0 < f[4] + f[5] }
            #expect(masked == (tile == 0 ? [5, 0] : [19]))
            #expect(f[14] == blocks[tile].index && f[15] == 90)
        }
    }
}

/// The sort kernels (`hash_rows_*`, `count_buckets`, `scan_counts`, `scatter_order`) emulated on the
/// CPU from the plan's tables, index for index (a warp's rows in order, so its rank by lane is the
/// row order), to check the host-side offsets without a GPU.
@Suite("CUDA plan: hash once, sort per level (CPU emulation of the tables)")
struct CUDASortTableTests {
    @Test("Every sorted segment gets SortLSH.sortedOrder of its rows, and each (query head, row) is hashed once",
          arguments: [
            (1, false, 4, 2, 3001, 3001, 7), (1, true, 4, 2, 5003, 5003, 7), (2, true, 2, 1, 4099, 4099, 5),
            (1, false, 6, 1, 2001, 5001, 7), (2, true, 3, 3, 2500, 2500, 9), (1, true, 2, 2, 1100, 1100, 7),
          ])
    func sortTables(batch: Int, causal: Bool, heads: Int, kvHeads: Int, nq: Int, nk: Int, bits: Int) throws {
        let d = 64
        let shape = AttentionShape(batch: batch, queryHeads: heads, keyHeads: kvHeads, queryCount: nq, keyCount: nk, headDim: d, valueDim: d)
        let options = AttentionOptions(causal: causal, lshBits: bits, blockSize: 128, samples: 64, minSeqLen: 512, seed: 3)
        let plan = HostPlan(shape: shape, options: options)
        let t = plan.tables
        let q = TestData.gaussian([batch, heads, nq, d], seed: 1).scalars
        let k = TestData.gaussian([batch, kvHeads, nk, d], seed: 2).scalars
        func kvHead(_ h: Int) -> Int { (h / heads) * kvHeads + (h % heads) / (heads / kvHeads) }
        // The query head whose directions hash a row, from its bucket offset (`HostLevel.bucketOffset`).
        func queryHead(tensor: Int, bucketOffset: Int, first: Int) -> Int {
            tensor == 0 ? (bucketOffset - first) / nq : (bucketOffset - first - batch * heads * nq) / nk
        }
        func hash(tensor: Int, queryHead h: Int, storedHead: Int, rows: Range<Int>) -> [UInt16] {
            let lsh = SortLSH(bits: bits, headDim: d, seed: options.seed, head: h)
            var out = [UInt16](repeating: 0, count: rows.count)
            let data = tensor == 0 ? q : k, n = tensor == 0 ? nq : nk
            data.withUnsafeBufferPointer { x in
                out.withUnsafeMutableBufferPointer { o in
                    lsh.hash(rows: x.baseAddress!, count: rows.count, buckets: o.baseAddress!) { storedHead * n + rows.lowerBound + $0 }
                }
            }
            return out
        }

        #expect(t.segmentCount > 0)
        #expect(t.bucketLength == batch * heads * (nq + nk))
        #expect(t.directions.count % (bits * d) == 0 && t.directions.count / (bits * d) <= batch * heads)
        // hash_rows: one warp per (hash segment, chunk); with ≤ 256 buckets a hash segment whose
        // rows are exactly one sort segment's also writes that segment's histogram.
        var buckets = [UInt16](repeating: 0, count: t.bucketLength)
        var hashed = [Int](repeating: 0, count: t.bucketLength)
        var counts = [Int](repeating: 0, count: t.countLength)
        let hf = HostLevel.hashSegmentFields
        for c in 0..<t.hashChunkCount {
            let sg = Int(t.hashChunks[2 * c]), ci = Int(t.hashChunks[2 * c + 1])
            let f = t.hashSegments[sg * hf..<(sg + 1) * hf].map(Int.init)
            let h = queryHead(tensor: f[0], bucketOffset: f[5], first: f[2])
            #expect(f[1] == (f[0] == 0 ? h : kvHead(h)), "K rows of the query head's kv head")
            #expect(Array(t.directions[f[4]..<(f[4] + bits * d)]) == SortLSH(bits: bits, headDim: d, seed: options.seed, head: h).directions)
            let lo = ci * f[6], hi = min(f[3], lo + f[6])
            #expect(lo < hi)
            for (r, b) in hash(tensor: f[0], queryHead: h, storedHead: f[1], rows: (f[2] + lo)..<(f[2] + hi)).enumerated() {
                buckets[f[5] + lo + r] = b
                hashed[f[5] + lo + r] += 1
                if f[7] >= 0 { counts[f[7] + Int(b) * f[8] + ci] += 1 }
            }
        }
        #expect(hashed.allSatisfy { $0 <= 1 }, "no row hashed twice")
        let countedByHash = (0..<t.hashSegmentCount).filter { t.hashSegments[$0 * hf + 7] >= 0 }.count
        if HostLevel.sortsInSharedMemory(lshBits: bits) {
            // Causal levels sort parts of the hashed ranges, so they mostly keep count_buckets.
            if !causal { #expect(countedByHash > 0 && t.countChunkCount == 0, "non-causal: every histogram fused into the hash") }
        } else {
            #expect(countedByHash == 0 && t.countChunks == t.chunks)
        }
        // count_buckets over the rest, then scan_counts, then scatter_order (every chunk).
        var read = [Bool](repeating: false, count: t.bucketLength)
        for c in 0..<t.countChunkCount {
            let sg = Int(t.countChunks[2 * c]), ci = Int(t.countChunks[2 * c + 1])
            let f = t.segments[sg * 9..<(sg + 1) * 9].map(Int.init)
            for i in (ci * f[8])..<min(f[3], (ci + 1) * f[8]) {
                #expect(hashed[f[4] + i] == 1, "bucket read before it was written")
                counts[f[6] + Int(buckets[f[4] + i]) * f[7] + ci] += 1
            }
        }
        for c in 0..<t.chunkCount {
            let sg = Int(t.chunks[2 * c]), ci = Int(t.chunks[2 * c + 1])
            let f = t.segments[sg * 9..<(sg + 1) * 9].map(Int.init)
            for i in (ci * f[8])..<min(f[3], (ci + 1) * f[8]) { read[f[4] + i] = true }
        }
        #expect(zip(hashed, read).allSatisfy { ($0 == 1) == $1 }, "every hashed row is sorted by some level")
        for sg in 0..<t.segmentCount {
            let f = t.segments[sg * 9..<(sg + 1) * 9].map(Int.init)
            var prefix = 0
            for j in f[6]..<(f[6] + (1 << bits) * f[7]) { (counts[j], prefix) = (prefix, prefix + counts[j]) }
            #expect(prefix == f[3])
        }
        let scanned = counts
        var order = [Int32](repeating: -1, count: t.orderLength)
        for c in 0..<t.chunkCount {
            let sg = Int(t.chunks[2 * c]), ci = Int(t.chunks[2 * c + 1])
            let f = t.segments[sg * 9..<(sg + 1) * 9].map(Int.init)
            for i in (ci * f[8])..<min(f[3], (ci + 1) * f[8]) {
                let slot = f[6] + Int(buckets[f[4] + i]) * f[7] + ci
                order[f[5] + counts[slot]] = Int32(i)
                counts[slot] += 1
            }
        }
        // scatter_order_local (≤ 256 buckets): each chunk's counts from the gaps of the scan, its rows
        // sorted chunk-locally, then written out by local position + (global − local) start.
        if HostLevel.sortsInSharedMemory(lshBits: bits) {
            var local = [Int32](repeating: -1, count: t.orderLength)
            for c in 0..<t.chunkCount {
                let sg = Int(t.chunks[2 * c]), ci = Int(t.chunks[2 * c + 1])
                let f = t.segments[sg * 9..<(sg + 1) * 9].map(Int.init)
                let lo = ci * f[8], hi = min(f[3], lo + f[8]), entries = (1 << bits) * f[7]
                #expect(hi - lo <= 2048, "a chunk fits the kernel's shared memory")
                var next = [Int](repeating: 0, count: 1 << bits), delta = next
                var running = 0
                for b in 0..<(1 << bits) {
                    let e = b * f[7] + ci
                    let count = (e + 1 < entries ? scanned[f[6] + e + 1] : f[3]) - scanned[f[6] + e]
                    (next[b], delta[b]) = (running, scanned[f[6] + e] - running)
                    running += count
                }
                #expect(running == hi - lo)
                var rows = [Int](repeating: -1, count: hi - lo), bucketOf = rows
                for i in lo..<hi {
                    let b = Int(buckets[f[4] + i])
                    (rows[next[b]], bucketOf[next[b]]) = (i - lo, b)
                    next[b] += 1
                }
                for p in 0..<(hi - lo) { local[f[5] + p + delta[bucketOf[p]]] = Int32(lo + rows[p]) }
            }
            #expect(local == order, "scatter_order_local = scatter_order")
        }
        // The CPU path's order of each segment: its rows hashed with the query head's hyperplanes.
        var rowsSorted = 0
        for sg in 0..<t.segmentCount {
            let f = t.segments[sg * 9..<(sg + 1) * 9].map(Int.init)
            let h = queryHead(tensor: f[0], bucketOffset: f[4], first: f[2])
            #expect(f[1] == (f[0] == 0 ? h : kvHead(h)))
            let b = hash(tensor: f[0], queryHead: h, storedHead: f[1], rows: f[2]..<(f[2] + f[3]))
            var expected = [Int32](repeating: 0, count: f[3])
            SortLSH.sortedOrder(buckets: b, count: f[3], bucketCount: 1 << bits, order: &expected)
            #expect(Array(order[f[5]..<(f[5] + f[3])]) == expected, "segment \(sg)")
            rowsSorted += f[3]
        }
        #expect(rowsSorted == t.orderLength)
        let rowsHashed = hashed.reduce(0, +)
        if causal && plan.levels.filter(\.hyper).count > 1 {
            #expect(rowsHashed < rowsSorted, "causal: each row hashed once, sorted at several levels")
        } else {
            #expect(rowsHashed == rowsSorted)
        }
        // The segments are the hyper pieces of the CPU plan, level by level, head by head.
        let cpu = AttentionPlan(shape: shape, options: options)
        var pieces: [[Piece]] = []
        for h in 0..<(batch * heads) {
            for (i, level) in cpu.levels(head: h).enumerated() {
                if pieces.count <= i { pieces.append([]) }
                pieces[i] += level.filter(\.hyper)
            }
        }
        let expected = pieces.joined().flatMap { p in
            [[0, p.head, p.queries.lowerBound, p.queries.count], [1, kvHead(p.head), p.keys.lowerBound, p.keys.count]]
        }
        #expect((0..<t.segmentCount).map { t.segments[$0 * 9..<$0 * 9 + 4].map(Int.init) } == expected)
    }
}

@Suite("CUDA backend vs CPU path", .enabled(if: GPU.available, Comment(rawValue: GPU.reason)))
struct GPUvsCPUTests {
    /// bf16-representable Gaussian inputs, so both paths hash the same values.
    static func bf16Gaussian(_ shape: [Int], seed: UInt64) -> Tensor {
        let t = TestData.gaussian(shape, seed: seed)
        return Tensor(shape: shape) { b in
            for (i, x) in t.scalars.enumerated() { b[i] = Float(bitPattern: (x.bitPattern &+ 0x7FFF &+ ((x.bitPattern >> 16) & 1)) & 0xFFFF_0000) }
        }
    }

    @Test("GPU matches CPU to bf16 rounding", arguments: [
        (false, false, 4, 4, 3001), (true, false, 4, 2, 5003), (false, true, 6, 2, 2049), (true, true, 2, 1, 9001), (false, true, 2, 2, 1),
    ])
    func matches(exact: Bool, causal: Bool, heads: Int, kvHeads: Int, n: Int) throws {
        let q = Self.bf16Gaussian([1, heads, n, 64], seed: 1), k = Self.bf16Gaussian([1, kvHeads, n, 64], seed: 2)
        let v = Self.bf16Gaussian([1, kvHeads, n, 64], seed: 3)
        var o = AttentionOptions(mode: exact ? .exact : .hyper, causal: causal, minSeqLen: 1024)
        let cpu = try attention(query: q, key: k, value: v, options: o)
        o.backend = .cuda(device: 0)
        let gpu = try cudaAttention(query: q, key: k, value: v, options: o)
        let err = ErrorMeasure.maxRelative(gpu.output.scalars, cpu.output.scalars.map(Double.init))
        #expect(err < 2e-2, "max relative difference \(err)")
    }
}
