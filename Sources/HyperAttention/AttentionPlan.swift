// TEMPORARY: float64 reference behind the API until the SIMD kernels land (same session).
struct AttentionPlan {
    var shape: AttentionShape
    var options: AttentionOptions
    func run(query: Tensor, key: Tensor, value: Tensor, progress: (@Sendable (Double) -> Void)?) -> AttentionResult {
        let r = try! referenceAttention(query: query, key: key, value: value, causal: options.causal, scale: options.scale)
        var outShape = query.shape; outShape[outShape.count - 1] = shape.valueDim
        let o = try! Tensor(shape: outShape, scalars: r.output.map(Float.init))
        let l = try! Tensor(shape: Array(query.shape.dropLast()), scalars: r.logSumExp.map(Float.init))
        return AttentionResult(output: o, logSumExp: l, stats: AttentionStats())
    }
}
