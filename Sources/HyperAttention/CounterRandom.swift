import Foundation

/// Counter-based randomness: every random number is a pure function of
/// (seed, head, recursion node, purpose, index), never a draw from a stream. Results therefore do
/// not depend on thread count, rank count or the order in which work is done.
///
/// The mixing function is SplitMix64's finaliser applied along the key fields.
package struct CounterRandom: Sendable {
    /// What the randomness is for; part of the key so that purposes never share numbers.
    package enum Purpose: UInt64 {
        case hashDirections = 1
        case samplePositions = 2
    }

    package let key: UInt64

    /// - Parameters:
    ///   - head: global query-head index `batch · h_q + head`.
    ///   - node: identifies the recursion node (see `nodeID`).
    package init(seed: UInt64, head: Int, node: UInt64, purpose: Purpose) {
        var k = CounterRandom.mix(seed &+ 0x9E37_79B9_7F4A_7C15)
        k = CounterRandom.mix(k ^ UInt64(truncatingIfNeeded: head))
        k = CounterRandom.mix(k ^ node)
        k = CounterRandom.mix(k ^ purpose.rawValue)
        key = k
    }

    /// A recursion node named by its query and key ranges (fixed by n alone).
    package static func nodeID(queries: Range<Int>, keys: Range<Int>) -> UInt64 {
        var h = mix(UInt64(truncatingIfNeeded: queries.lowerBound) &+ 0x632B_E59B_D9B4_E019)
        h = mix(h ^ UInt64(truncatingIfNeeded: queries.upperBound))
        h = mix(h ^ UInt64(truncatingIfNeeded: keys.lowerBound))
        return mix(h ^ UInt64(truncatingIfNeeded: keys.upperBound))
    }

    @inline(__always) package static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// 64 random bits for `index`.
    @inline(__always) package func bits(_ index: Int) -> UInt64 {
        CounterRandom.mix(key ^ CounterRandom.mix(UInt64(truncatingIfNeeded: index)))
    }

    /// Uniform integer in 0..<bound (bound ≥ 1), by multiply-high.
    @inline(__always) package func integer(_ index: Int, below bound: Int) -> Int {
        Int(bits(index).multipliedFullWidth(by: UInt64(bound)).high)
    }

    /// Standard normal for `index` (Box–Muller on the two 32-bit halves).
    package func gaussian(_ index: Int) -> Double {
        let b = bits(index)
        let u1 = (Double(b >> 32) + 1) / 4_294_967_296.0  // (0, 1]
        let u2 = Double(b & 0xFFFF_FFFF) / 4_294_967_296.0  // [0, 1)
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }
}
