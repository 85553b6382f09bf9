import Dispatch
import Foundation
import HyperAttention

/// The machine's fp32 fused-multiply-add peak, measured by running an FMA-only loop on a given
/// number of threads at once.
///
///     peak = threads · iterations · 12 accumulators · 8 lanes · 2 FLOPs / wall seconds
///
/// Each thread runs `fmaKernel`: 12 independent `SIMD8<Float>` accumulators, each updated by
/// `acc = c + acc · m` (one `vfmadd…ps ymm` per accumulator and iteration when built with
/// `-Xswiftc -target-cpu -Xswiftc haswell`). Twelve chains hide the FMA latency (4 cycles × 2 ports
/// needs ≥ 8 in flight), and 12 + 2 constants fit in the 16 ymm registers. This is the AVX2 peak:
/// the level the kernels are compiled for, even on a CPU that also has AVX-512.
///
/// All threads are started, wait at a barrier, and are released together; the time runs from the
/// release to the last thread's finish. The best of `trials` runs is the peak.
struct PeakFLOPS: Codable, Sendable {
    /// Best measured rate, GFLOP/s.
    var gflops: Double
    /// Threads that ran the loop concurrently.
    var threads: Int
    /// Every trial's rate, GFLOP/s.
    var trialGflops: [Double]
    /// Seconds of one trial (approximately).
    var trialSeconds: Double
    /// How it was measured, in words.
    var method: String

    /// FLOPs of one call of `fmaKernel` per iteration: 12 accumulators × 8 lanes × 2.
    static let flopsPerIteration = 12 * 8 * 2

    /// Measures the peak on `threads` threads.
    /// - Parameters:
    ///   - threads: threads run concurrently, ≥ 1 (the attention call's thread count).
    ///   - trialSeconds: length of one trial. Default 0.2.
    ///   - trials: number of trials; the best counts. Default 3.
    static func measure(threads: Int, trialSeconds: Double = 0.2, trials: Int = 3) -> PeakFLOPS {
        precondition(threads >= 1 && trials >= 1)
        // Calibrate on one thread: iterations per second of the kernel.
        var calibrationIterations = 1 << 16
        var rate = 0.0
        while true {
            let t0 = monotonicSeconds()
            sink(fmaKernel(iterations: calibrationIterations, seed: 1))
            let dt = monotonicSeconds() - t0
            if dt > 0.02 || calibrationIterations >= 1 << 30 {
                rate = Double(calibrationIterations) / max(dt, 1e-9)
                break
            }
            calibrationIterations *= 4
        }
        let iterations = max(1, Int(rate * trialSeconds))
        var results: [Double] = []
        for _ in 0..<trials {
            let seconds = runConcurrently(threads: threads, iterations: iterations)
            results.append(Double(threads) * Double(iterations) * Double(flopsPerIteration) / seconds / 1e9)
        }
        return PeakFLOPS(
            gflops: results.max()!, threads: threads, trialGflops: results, trialSeconds: trialSeconds,
            method: "SIMD8<Float> FMA loop, 12 independent accumulators, \(threads) thread(s) at once, best of \(trials)")
    }

    /// Runs `fmaKernel` on `threads` threads released together; returns the wall seconds.
    private static func runConcurrently(threads: Int, iterations: Int) -> Double {
        let ready = DispatchSemaphore(value: 0)
        let go = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        for index in 0..<threads {
            let thread = Thread {
                ready.signal()
                go.wait()
                sink(fmaKernel(iterations: iterations, seed: Float(index + 1)))
                done.signal()
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        for _ in 0..<threads { ready.wait() }
        let t0 = monotonicSeconds()
        for _ in 0..<threads { go.signal() }
        for _ in 0..<threads { done.wait() }
        return monotonicSeconds() - t0
    }
}

/// Keeps a value alive so that the loop producing it is not removed.
@inline(never)
func sink(_ value: Float) {
    if value == 0x1p100 { print("", terminator: "") }
}

/// `iterations` rounds of 12 independent `acc = c + acc · m` updates on `SIMD8<Float>` lanes
/// (96 FMAs, 192 FLOPs per round). The accumulators converge to c / (1 − m): no overflow.
@inline(never)
func fmaKernel(iterations: Int, seed: Float) -> Float {
    let m = SIMD8<Float>(repeating: 0.999_999)
    let c = SIMD8<Float>(repeating: 1e-7 * seed)
    var a0 = SIMD8<Float>(repeating: seed), a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3
    var a4 = a0 + 4, a5 = a0 + 5, a6 = a0 + 6, a7 = a0 + 7
    var a8 = a0 + 8, a9 = a0 + 9, a10 = a0 + 10, a11 = a0 + 11
    for _ in 0..<iterations {
        a0 = c.addingProduct(a0, m); a1 = c.addingProduct(a1, m)
        a2 = c.addingProduct(a2, m); a3 = c.addingProduct(a3, m)
        a4 = c.addingProduct(a4, m); a5 = c.addingProduct(a5, m)
        a6 = c.addingProduct(a6, m); a7 = c.addingProduct(a7, m)
        a8 = c.addingProduct(a8, m); a9 = c.addingProduct(a9, m)
        a10 = c.addingProduct(a10, m); a11 = c.addingProduct(a11, m)
    }
    let s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11))
    return s.sum()
}

/// Seconds on a monotonic clock (the core's `monotonicNanoseconds`).
func monotonicSeconds() -> Double {
    Double(monotonicNanoseconds()) / 1e9
}
