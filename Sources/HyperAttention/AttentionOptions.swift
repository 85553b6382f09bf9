/// Which attention algorithm to run.
public enum AttentionMode: String, Sendable, CaseIterable {
    /// Exact attention with FlashAttention-style tiles (never an n × n buffer).
    case exact
    /// HyperAttention: sortLSH blocks plus a sampled residual; exact below `minSeqLen`.
    case hyper
}

/// How the residual (the keys outside a query's LSH block) is estimated from the m sampled keys.
public enum ResidualEstimator: String, Sendable, CaseIterable {
    /// The paper's estimator: m positions drawn uniformly with replacement from all n_k sorted
    /// keys, the ones inside the query's block masked, each remaining logit weighted by n_k / m.
    case uniform
    /// Stratified sampling in sorted-key (LSH) order: the n_k sorted keys are cut into m equal
    /// strata and one key is drawn uniformly from each, weighted by its stratum's size; for a
    /// query, samples inside its own block are masked. No duplicates, and each stratum holds
    /// hash-similar keys, so the variance is lower than `uniform`. Unbiased. One sample set per
    /// recursion node, shared by all blocks (what the MPI layer allgathers).
    case stratified
    /// `stratified` plus a control variate on Σ V over the keys outside the query's block:
    /// R̂ + (Ẑ_R / N)(Σ_{k∉B} v_k − Σ_s w_s v_s), which cancels the sampling noise of V where the
    /// residual weights are nearly uniform. A ratio estimator, so biased at O(1/m) in principle;
    /// the 400-seed unbiasedness test does not detect it.
    case stratifiedControlVariate
}

/// The element type a GPU backend computes in: Q, K, V are rounded to it once, products
/// accumulate in fp32, softmax statistics and merges are fp32.
public enum DevicePrecision: String, Sendable, CaseIterable {
    case bfloat16 = "bf16"
    case float16 = "fp16"
}

/// Where attention runs. Plain data: the core never loads a GPU library. `.cuda` is served by
/// the `HyperAttentionCUDA` module (`cudaAttention(query:key:value:options:)`),
/// which loads the CUDA driver and NVRTC at run time; the core's `attention` refuses it.
public enum AttentionBackend: Sendable, Equatable {
    /// The SIMD CPU kernels (default).
    case cpu
    /// An NVIDIA GPU (0-based device index), inputs rounded to `precision`.
    case cuda(device: Int, precision: DevicePrecision = .bfloat16)
}

/// Options of an attention call. Defaults follow the HyperAttention paper's settings.
public struct AttentionOptions: Sendable, Equatable {
    /// Exact or HyperAttention. Default: `.hyper`.
    public var mode: AttentionMode = .hyper
    /// Causal masking (query i sees keys 0...i). Needs n_q == n_k. Default: `false`.
    public var causal: Bool = false
    /// Logit scale; `nil` means 1 / sqrt(d).
    public var scale: Float? = nil
    /// Number of random hyperplanes r of the sortLSH hash (2^r buckets), 1...16. Default: 7.
    public var lshBits: Int = 7
    /// Key block size b of the LSH block part, ≥ 1. Default: 256.
    public var blockSize: Int = 256
    /// Number of sampled keys m for the residual, ≥ 1. Default: 256.
    public var samples: Int = 256
    /// Below this query length HyperAttention falls back to exact attention; the causal
    /// recursion stops at leaves of at most this length. ≥ 1. Default: 2048.
    public var minSeqLen: Int = 2048
    /// Seed of every random choice (hash directions, samples). Default: 0.
    public var seed: UInt64 = 0
    /// Worker threads; `nil` means all available cores.
    public var threads: Int? = nil
    /// The residual estimator. Default: `.stratifiedControlVariate`, the lowest error measured on
    /// real transformer Q/K/V and on Gaussian inputs (README, "Accuracy").
    public var estimator: ResidualEstimator = .stratifiedControlVariate
    /// Where to run. Default: `.cpu`. The same options and seed give the same LSH order and
    /// samples on every backend.
    public var backend: AttentionBackend = .cpu

    public init(
        mode: AttentionMode = .hyper, causal: Bool = false, scale: Float? = nil, lshBits: Int = 7,
        blockSize: Int = 256, samples: Int = 256, minSeqLen: Int = 2048, seed: UInt64 = 0,
        threads: Int? = nil, estimator: ResidualEstimator = .stratifiedControlVariate, backend: AttentionBackend = .cpu
    ) {
        self.mode = mode
        self.causal = causal
        self.scale = scale
        self.lshBits = lshBits
        self.blockSize = blockSize
        self.samples = samples
        self.minSeqLen = minSeqLen
        self.seed = seed
        self.threads = threads
        self.estimator = estimator
        self.backend = backend
    }
}
