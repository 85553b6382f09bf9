/// 16 fp32 lanes: two AVX2 registers, the width of every micro-kernel column block.
typealias Vec16 = SIMD16<Float>

extension UnsafePointer where Pointee == Float {
    /// Loads 16 consecutive floats (no alignment needed).
    @inline(__always) func loadVec16(_ offset: Int) -> Vec16 {
        UnsafeRawPointer(self + offset).loadUnaligned(as: Vec16.self)
    }
}

extension UnsafeMutablePointer where Pointee == Float {
    @inline(__always) func loadVec16(_ offset: Int) -> Vec16 {
        UnsafeRawPointer(self + offset).loadUnaligned(as: Vec16.self)
    }
    /// Stores 16 consecutive floats (no alignment needed).
    @inline(__always) func storeVec16(_ v: Vec16, _ offset: Int) {
        UnsafeMutableRawPointer(self + offset).storeBytes(of: v, as: Vec16.self)
    }
}

/// Sum of the 16 lanes as a tree (4 dependent adds, not 15 as `.sum()` lowers to).
@inline(__always) func horizontalSum(_ v: Vec16) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf
    let c = b.lowHalf + b.highHalf
    return c[0] + c[1]
}

/// Lane-wise maximum. (The standard library's `pointwiseMax` and `clamped` are lowered lane by
/// lane because of their NaN rules; a compare and blend is one instruction pair.)
@inline(__always) func maxVec16(_ a: Vec16, _ b: Vec16) -> Vec16 { a.replacing(with: b, where: a .< b) }

/// 2^x for 16 lanes with x ≤ 0 (softmax arguments x = s − max), relative error below 2e-7 for
/// x ≥ −126, exactly 0 for x ≤ −127 and for −inf; NaN stays NaN.
///
///     2^x = 2^n · 2^f,   n = round(x),  f = x − n ∈ [−½, ½],   2^f ≈ P(f)  (degree 6, Cephes exp2f)
///
/// Rounding uses the 1.5·2^23 trick, so n is read off the float's low bits; clamping at −127
/// makes the exponent field 0, so 2^n is +0 there.
@inline(__always) func exp2NonPositive(_ x: Vec16) -> Vec16 {
    let magic: Float = 12_582_912  // 1.5 · 2^23
    let lo = Vec16(repeating: -127)
    let xc = x.replacing(with: lo, where: x .< lo)
    let t = xc + magic
    let f = xc - (t - magic)
    // Horner's rule with fused multiply-adds.
    var p = Vec16(repeating: 1.339_887_4e-3).addingProduct(Vec16(repeating: 1.535_336_2e-4), f)
    p = Vec16(repeating: 9.618_437_4e-3).addingProduct(p, f)
    p = Vec16(repeating: 5.550_332_5e-2).addingProduct(p, f)
    p = Vec16(repeating: 2.402_264_8e-1).addingProduct(p, f)
    p = Vec16(repeating: 6.931_472_0e-1).addingProduct(p, f)
    p = Vec16(repeating: 1).addingProduct(p, f)
    // bits(t) = bits(magic) + n, so (n + 127) << 23 = (bits(t) − bits(magic) + 127) << 23.
    let offset = SIMD16<Int32>(repeating: 127 &- Int32(bitPattern: magic.bitPattern))
    let scale = unsafeBitCast((unsafeBitCast(t, to: SIMD16<Int32>.self) &+ offset) &<< 23, to: Vec16.self)
    return p * scale
}

/// log2(e): logits are kept in base 2 so the softmax uses `exp2`.
let log2e: Float = 1.442_695_040_888_963_4
/// ln(2): converts a base-2 log-sum-exp back to natural log.
let ln2: Float = 0.693_147_180_559_945_3
