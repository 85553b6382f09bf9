/// The m sampled key positions (in sorted-key order) of one HyperAttention node, shared by all of
/// its blocks, with each sample's weight as a base-2 logit bias.
///
/// For a query in block B, samples that fall inside B are masked (those keys are already counted
/// exactly); every other sample s adds w_s · exp(q·k_s) to the softmax sums, so that
/// Σ_s w_s exp(q·k_s) v_s is an unbiased estimate of Σ_{k∉B} exp(q·k) v_k.
package struct SampleSet: Sendable, Equatable {
    /// Sorted-key positions, ascending for `stratified`, in draw order for `uniform`.
    package var positions: [Int32]
    /// log2(w_s).
    package var logWeights: [Float]
    /// w_s (kept exactly, for the control variate).
    package var weights: [Double]

    /// - Parameters:
    ///   - keyCount: n_k of the node.
    ///   - count: m, the number of samples asked for.
    package init(estimator: ResidualEstimator, keyCount nk: Int, count m: Int, random: CounterRandom) {
        positions = []
        weights = []
        switch estimator {
        case .uniform:
            // m draws with replacement from all n_k positions, weight n_k / m.
            let w = Double(nk) / Double(m)
            for s in 0..<m {
                positions.append(Int32(random.integer(s, below: nk)))
                weights.append(w)
            }
        case .stratified, .stratifiedControlVariate:
            // m' = min(m, n_k) equal strata of the sorted keys, one draw each, weight = stratum size.
            let strata = min(m, nk)
            for s in 0..<strata {
                let lo = s * nk / strata, hi = (s + 1) * nk / strata
                positions.append(Int32(lo + random.integer(s, below: hi - lo)))
                weights.append(Double(hi - lo))
            }
        }
        logWeights = weights.map { Float(log2($0)) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
