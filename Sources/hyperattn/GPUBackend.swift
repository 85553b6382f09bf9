import ArgumentParser
import CUDADriver
import Foundation
import HyperAttention
import HyperAttentionCUDA

/// `--backend cpu|cuda`, `--device`, `--gpu-precision`, `--gpu-repeat`: where `run` and `bench`
/// compute. The CUDA backend loads the driver and NVRTC at run time; without them it fails with
/// one `hyperattn: error: --backend cuda: …` line.
struct BackendOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Where to compute: cpu or cuda (an NVIDIA GPU, loaded at run time).", valueName: "cpu|cuda"))
    var backend: String = "cpu"

    @Option(help: "CUDA device index (≥ 0). Default: under mpirun the rank's local rank, else 0.")
    var device: Int?

    @Option(help: ArgumentHelp("GPU input precision: bf16 or fp16 (fp32 accumulation either way).", valueName: "bf16|fp16"))
    var gpuPrecision: String = "bf16"

    @Option(help: "With --backend cuda on run: also time this many calls on the device-resident inputs with CUDA events (after one warm-up) and print the median; 0 skips.")
    var gpuRepeat: Int = 0

    func validate() throws { try MPILaunch.validating(check) }

    private func check() throws {
        guard ["cpu", "cuda"].contains(backend.lowercased()) else {
            throw ValidationError("--backend must be cpu or cuda, got '\(backend)'")
        }
        if let device, device < 0 { throw ValidationError("--device must be ≥ 0, got \(device)") }
        guard DevicePrecision(rawValue: gpuPrecision.lowercased()) != nil else {
            throw ValidationError("--gpu-precision must be bf16 or fp16, got '\(gpuPrecision)'")
        }
        guard gpuRepeat >= 0 else { throw ValidationError("--gpu-repeat must be ≥ 0, got \(gpuRepeat)") }
    }

    var isCUDA: Bool { backend.lowercased() == "cuda" }
    var deviceIndex: Int { defaultCUDADevice(explicit: device) }
    var precision: DevicePrecision { DevicePrecision(rawValue: gpuPrecision.lowercased()) ?? .bfloat16 }

    /// `options` with this backend.
    func applied(to options: AttentionOptions) -> AttentionOptions {
        var o = options
        o.backend = isCUDA ? .cuda(device: deviceIndex, precision: precision) : .cpu
        return o
    }

    /// Attention on the selected backend. On CUDA, prints the device and, with `--gpu-repeat`,
    /// the kernel time; every CUDA failure becomes `--backend cuda: <message>`.
    func attention(query: Tensor, key: Tensor, value: Tensor, options: AttentionOptions) throws -> AttentionResult {
        guard isCUDA else { return try HyperAttention.attention(query: query, key: key, value: value, options: options) }
        do {
            let shape = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
            let session = try CUDAAttentionSession(shape: shape, options: options, device: deviceIndex, precision: precision)
            let result = try session.attention(query: query, key: key, value: value)
            print("  gpu: \(try cudaDeviceDescription(deviceIndex)), \(precision.rawValue) inputs")
            if gpuRepeat > 0 {
                let times = try session.time(repeats: gpuRepeat).sorted()
                let median = times[times.count / 2]
                print(String(format: "  gpu kernels: median %.4f ms (min %.4f, %d calls, CUDA events), %.1f TFLOP/s",
                             median, times[0], times.count, result.stats.flops / (median * 1e-3) / 1e12))
            }
            return result
        } catch let e as CUDAError {
            throw CLIError("--backend cuda: \(e)")
        }
    }
}

/// `body`, with a CUDA failure on this MPI rank reported as `--backend cuda: rank r: <message>`.
func namingCUDAFailure<T>(rank: Int, _ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as CUDAError { throw CLIError("--backend cuda: rank \(rank): \(e)") }
}

extension Bench {
    /// `bench --backend cuda`: N(0, 1) inputs generated on the GPU, each row timed with CUDA
    /// events over `--repeats` calls (median), TFLOP/s of the evaluated pairs.
    func runGPUBench(_ gpu: BackendOptions) throws {
        struct Row: Codable {
            var n: Int, mode: String, causal: Bool, medianMs: Double, minMs: Double, tflops: Double, evaluatedPairs: Int
        }
        struct Report: Codable {
            var device: String, precision: String, batch: Int, heads: Int, kvHeads: Int, d: Int, rows: [Row]
        }
        var rows: [Row] = []
        do {
            let desc = try cudaDeviceDescription(gpu.deviceIndex)
            print("hyperattn bench --backend cuda: \(desc), \(gpu.precision.rawValue), b=\(batch) h=\(heads) h_kv=\(kvHeads ?? heads) d=\(d)")
            print("       n  mode   causal   median ms     min ms   TFLOP/s")
            for n in self.n.values {
                for mode in modes.values where mode != .ring {
                    for c in [false, true] where causal == .both || (causal == .yes) == c {
                        let options = gpu.applied(to: algorithm.attentionOptions(mode: mode.attentionMode, causal: c))
                        let shape = AttentionShape(batch: batch, queryHeads: heads, keyHeads: kvHeads ?? heads, queryCount: n, keyCount: n, headDim: d, valueDim: dv ?? d)
                        let session = try CUDAAttentionSession(shape: shape, options: options, device: gpu.deviceIndex, precision: gpu.precision)
                        try session.fillNormal(seed: algorithm.seed)
                        let times = try session.time(repeats: max(1, repeats)).sorted()
                        let median = times[times.count / 2]
                        let tflops = session.stats.flops / (median * 1e-3) / 1e12
                        rows.append(Row(n: n, mode: mode.rawValue, causal: c, medianMs: median, minMs: times[0], tflops: tflops, evaluatedPairs: session.stats.evaluatedPairs))
                        print(String(format: "%8d  ", n) + mode.rawValue.padding(toLength: 5, withPad: " ", startingAt: 0) + "  "
                              + (c ? "yes   " : "no    ") + String(format: " %11.3f %10.3f %9.1f", median, times[0], tflops))
                        if ProcessInfo.processInfo.environment["HYPERATTN_GPU_PROFILE"] == "1" {
                            let phases = try session.profile().map { $0.phase + String(format: " %.3f ms", $0.milliseconds) }
                            print("          phases: " + phases.joined(separator: ", "))
                        }
                        fflush(stdout)
                    }
                }
            }
            if let json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                let report = Report(device: desc, precision: gpu.precision.rawValue, batch: batch, heads: heads, kvHeads: kvHeads ?? heads, d: d, rows: rows)
                try enc.encode(report).write(to: URL(fileURLWithPath: json))
            }
        } catch let e as CUDAError {
            printError("--backend cuda: \(e)")
            throw ExitCode(1)
        }
    }
}
