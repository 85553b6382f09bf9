import Dispatch
import Foundation
import HyperAttention

/// Deterministic synthetic Q, K, V with cluster structure, so that attention is far from uniform.
///
/// For every key/value head there are `clusterCount` = 16 clusters. Cluster j has a centre
/// μ_j ~ N(0, σ²·I_d) shared by the queries and keys of that head (σ² = 0.5), and a value centre
/// ν_j ~ N(0, I_dv). Every query row and key row draws its own cluster uniformly, and
///
///     q = μ_z(q) + ε,   k = μ_z(k) + ε',   v = ν_z(k) + ε'',   ε, ε', ε'' ~ N(0, I)
///
/// With the default scale 1/√d a query's logit against a key of its own cluster is raised by
/// σ²·√d on average (4 for d = 64), so about 3/4 of each row's softmax mass falls on the 1/16 of
/// the keys in its cluster, and the output is dominated by that cluster's value centre: neither
/// uniform (where the plain mean of V would do) nor one-hot. Real model activations are harder
/// still (DESIGN.md §1); this only keeps Gaussian inputs from hiding everything.
///
/// Every number is a pure function of (seed, tensor, index): a SplitMix64 hash of the counter gives
/// two uniforms and Box–Muller two normals (`fillGaussian`). The tensors are filled in parallel and are identical
/// whatever the thread count.
struct SyntheticProblem {
    static let clusterCount = 16
    static let centreVariance: Float = 0.5

    var query: Tensor
    var key: Tensor
    var value: Tensor

    /// Shapes: Q `[batch, heads, n, d]`, K `[batch, kvHeads, n, d]`, V `[batch, kvHeads, n, dv]`;
    /// `heads` must be a multiple of `kvHeads`.
    init(batch: Int, heads: Int, kvHeads: Int, n: Int, d: Int, dv: Int, seed: UInt64, threads: Int) {
        let c = Self.clusterCount
        let kvCount = batch * kvHeads
        let group = heads / kvHeads
        // Centres: [kvCount][c][d] for Q/K and [kvCount][c][dv] for V.
        var centres = [Float](repeating: 0, count: kvCount * c * d)
        centres.withUnsafeMutableBufferPointer {
            fillGaussian($0, seed: seed, stream: 1, threads: 1, scale: Self.centreVariance.squareRoot())
        }
        var valueCentres = [Float](repeating: 0, count: kvCount * c * dv)
        valueCentres.withUnsafeMutableBufferPointer { fillGaussian($0, seed: seed, stream: 2, threads: 1) }

        // Streams: 10/11/12 are the noise of K/Q/V; keys and values of a row share the cluster
        // drawn from stream 10, queries draw theirs from stream 11.
        key = Self.rows(
            shape: [batch, kvHeads, n, d], seed: seed, noiseStream: 10, clusterStream: 10, centres: centres,
            threads: threads) { $0 }
        value = Self.rows(
            shape: [batch, kvHeads, n, dv], seed: seed, noiseStream: 12, clusterStream: 10, centres: valueCentres,
            threads: threads) { $0 }
        query = Self.rows(
            shape: [batch, heads, n, d], seed: seed, noiseStream: 11, clusterStream: 11, centres: centres,
            threads: threads
        ) { qHead in (qHead / heads) * kvHeads + (qHead % heads) / group }  // b·heads + h → b·kvHeads + h/group
    }

    /// A tensor of N(0, 1) noise (stream `noiseStream`) plus, on each row, the centre of the cluster
    /// that `clusterStream` draws for the row; `centreHead` maps the row's (batch·heads) index to
    /// the key/value head whose centres it uses.
    private static func rows(
        shape: [Int], seed: UInt64, noiseStream: UInt64, clusterStream: UInt64, centres: [Float], threads: Int,
        centreHead: (Int) -> Int
    ) -> Tensor {
        let rowLength = shape[3], rowsPerHead = shape[2], c = clusterCount
        return Tensor(shape: shape) { buffer in
            fillGaussian(buffer, seed: seed, stream: noiseStream, threads: threads)
            guard rowLength > 0, let base = buffer.baseAddress else { return }
            centres.withUnsafeBufferPointer { cs in
                parallelFor(buffer.count / rowLength, threads: threads) { range in
                    for row in range {
                        let cluster = Int(mix(seed, clusterStream &+ 100, UInt64(row)) % UInt64(c))
                        let centre = cs.baseAddress! + (centreHead(row / rowsPerHead) * c + cluster) * rowLength
                        let out = base + row * rowLength
                        for i in 0..<rowLength { out[i] += centre[i] }
                    }
                }
            }
        }
    }
}

/// SplitMix64 finaliser.
@inline(__always)
func splitMix64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// A 64-bit hash of (seed, stream, counter): the counter-based random source of this file.
@inline(__always)
func mix(_ seed: UInt64, _ stream: UInt64, _ counter: UInt64) -> UInt64 {
    splitMix64(splitMix64(seed ^ splitMix64(stream)) &+ counter)
}

/// Fills `buffer` with N(0, scale²) values. Elements 16j ..< 16j + 8 and 16j + 8 ..< 16j + 16 are
/// the two Box–Muller halves (r·cos θ, r·sin θ) of counters 8j ..< 8j + 8 of (seed, stream), each
/// counter hashed (32-bit lowbias32 rounds keyed by SplitMix64 of seed and stream) into a 23-bit
/// uniform u for r = sqrt(−2 ln u) and 24 bits for θ.
/// Eight pairs at a time on `SIMD8<Float>` with polynomial log and sin/cos (Cephes), in parallel
/// over `threads`; the values do not depend on the thread count.
func fillGaussian(_ buffer: UnsafeMutableBufferPointer<Float>, seed: UInt64, stream: UInt64, threads: Int, scale: Float = 1) {
    let count = buffer.count
    guard count > 0, let base = buffer.baseAddress else { return }
    let key = splitMix64(seed ^ splitMix64(stream))
    let blocks = (count + 15) / 16
    let factor = SIMD8<Float>(repeating: scale)
    parallelFor(blocks, threads: threads) { range in
        for block in range {
            let (x, y) = gaussianBlock(key: key, block: block)
            let start = block * 16
            if start + 16 <= count {
                UnsafeMutableRawPointer(base + start).storeBytes(of: x * factor, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(base + start + 8).storeBytes(of: y * factor, as: SIMD8<Float>.self)
            } else {
                for i in 0..<8 where start + i < count { base[start + i] = x[i] * scale }
                for i in 0..<8 where start + 8 + i < count { base[start + 8 + i] = y[i] * scale }
            }
        }
    }
}

/// Sixteen N(0, 1) values from counters 8·block ..< 8·block + 8 (Box–Muller).
@inline(__always)
func gaussianBlock(key: UInt64, block: Int) -> (SIMD8<Float>, SIMD8<Float>) {
    // Two 32-bit hashes of each of the 8 counters (lowbias32 rounds keyed by the two halves of
    // `key`): 32-bit lanes throughout, so that the whole block stays in ymm registers.
    let counter = SIMD8<UInt32>(repeating: UInt32(truncatingIfNeeded: block &* 8)) &+ SIMD8(0, 1, 2, 3, 4, 5, 6, 7)
    let keyLow = SIMD8<UInt32>(repeating: UInt32(truncatingIfNeeded: key))
    let keyHigh = SIMD8<UInt32>(repeating: UInt32(truncatingIfNeeded: key >> 32))
    let first = lowBias32(lowBias32(counter ^ keyLow) ^ keyHigh)
    let second = lowBias32(first ^ keyLow ^ SIMD8(repeating: 0x9E37_79B9))
    // Uniforms built from mantissa bits (no int → float conversion): 1 + k·2⁻²³ ∈ [1, 2).
    let radiusBits = first &>> 9  // 23 bits
    let angleBits = second &>> 8  // 24 bits
    let u = 2 - unsafeBitCast(radiusBits | 0x3F80_0000, to: SIMD8<Float>.self)  // (0, 1]
    let radius = (SIMD8<Float>(repeating: -2) * logApproximation(u)).squareRoot()
    // θ uniform on the circle: φ = π/4 + t ∈ [0, π/2) from the low 22 angle bits, reflected into
    // one of the four quadrants by the signs of cos and sin (the top 2 bits). No selects: they
    // would be scalarised.
    let fraction: SIMD8<Float> = unsafeBitCast(((angleBits & 0x3F_FFFF) &<< 1) | 0x3F80_0000, to: SIMD8<Float>.self)
    let t: SIMD8<Float> = (fraction - SIMD8(repeating: 1.5)) * SIMD8(repeating: Float.pi / 2)  // [−π/4, π/4)
    let z: SIMD8<Float> = t * t
    var sinT = SIMD8<Float>(repeating: -1.951_529_589_1e-4)
    sinT = sinT * z + SIMD8(repeating: 8.332_160_873_6e-3)
    sinT = sinT * z + SIMD8(repeating: -1.666_665_461_1e-1)
    sinT = sinT * z * t + t
    var cosT = SIMD8<Float>(repeating: 2.443_315_711_809_948e-5)
    cosT = cosT * z + SIMD8(repeating: -1.388_731_625_493_765e-3)
    cosT = cosT * z + SIMD8(repeating: 4.166_664_568_298_827e-2)
    cosT = cosT * z * z - SIMD8(repeating: 0.5) * z + SIMD8(repeating: 1)
    let half = SIMD8<Float>(repeating: 0.707_106_781_186_547_5)
    let x = (cosT - sinT) * half, y = (cosT + sinT) * half  // cos φ, sin φ
    let xSign = (angleBits &>> 22) &<< 31, ySign = (angleBits &>> 23) &<< 31
    let cosine = unsafeBitCast(unsafeBitCast(radius * x, to: SIMD8<UInt32>.self) ^ xSign, to: SIMD8<Float>.self)
    let sine = unsafeBitCast(unsafeBitCast(radius * y, to: SIMD8<UInt32>.self) ^ ySign, to: SIMD8<Float>.self)
    return (cosine, sine)
}

/// The "lowbias32" integer hash (C. Wellons), lane-wise.
@inline(__always)
func lowBias32(_ v: SIMD8<UInt32>) -> SIMD8<UInt32> {
    var x = v ^ (v &>> 16)
    x = x &* SIMD8(repeating: 0x7FEB_352D)
    x = x ^ (x &>> 15)
    x = x &* SIMD8(repeating: 0x846C_A68B)
    return x ^ (x &>> 16)
}

/// Natural logarithm of positive normal floats (Cephes `logf`: v = m·2^e with m ∈ [√½, √2), then
/// a degree-9 polynomial in m − 1); relative error about 1e-7. Branch- and select-free.
@inline(__always)
func logApproximation(_ v: SIMD8<Float>) -> SIMD8<Float> {
    let sqrtHalfBits: Int32 = 0x3F35_04F3  // √½
    let shifted = unsafeBitCast(v, to: SIMD8<Int32>.self) &- sqrtHalfBits
    // e as a float: 2²³ + (e + 128) read from its bits, minus 2²³ + 128.
    let exponent = unsafeBitCast(((shifted &>> 23) &+ 128) | 0x4B00_0000, to: SIMD8<Float>.self)
        - SIMD8(repeating: 8_388_736)
    let x = unsafeBitCast((shifted & 0x007F_FFFF) &+ sqrtHalfBits, to: SIMD8<Float>.self) - SIMD8(repeating: 1)
    let z = x * x
    var y = SIMD8<Float>(repeating: 7.037_683_629_2e-2)
    y = y * x + SIMD8(repeating: -1.151_461_031_0e-1)
    y = y * x + SIMD8(repeating: 1.167_699_874_0e-1)
    y = y * x + SIMD8(repeating: -1.242_014_084_6e-1)
    y = y * x + SIMD8(repeating: 1.424_932_278_7e-1)
    y = y * x + SIMD8(repeating: -1.666_805_766_5e-1)
    y = y * x + SIMD8(repeating: 2.000_071_476_5e-1)
    y = y * x + SIMD8(repeating: -2.499_999_399_3e-1)
    y = y * x + SIMD8(repeating: 3.333_333_117_4e-1)
    y = y * x * z + exponent * SIMD8(repeating: -2.121_944_40e-4) - SIMD8(repeating: 0.5) * z
    return x + y + exponent * SIMD8(repeating: 0.693_359_375)
}

/// Runs `body` over `0..<count` cut into contiguous chunks on up to `threads` threads.
func parallelFor(_ count: Int, threads: Int, _ body: (Range<Int>) -> Void) {
    guard count > 0 else { return }
    let chunks = min(count, max(1, threads) * 4)
    if chunks == 1 || threads <= 1 {
        body(0..<count)
        return
    }
    withoutActuallyEscaping(body) { body in
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            body((chunk * count / chunks)..<((chunk + 1) * count / chunks))
        }
    }
}
