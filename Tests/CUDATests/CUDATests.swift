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
    @Test("The kernel source compiles for sm_80 and sm_90 with an empty log",
          .enabled(if: NVRTCLocator.available, Comment(rawValue: NVRTCLocator.reason)))
    func compiles() throws {
        let nvrtc = try NVRTCLocator.loaded.get()
        for arch in ["sm_80", "sm_90"] {
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
