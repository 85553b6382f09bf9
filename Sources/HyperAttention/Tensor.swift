#if canImport(Glibc)
import Glibc
#endif

/// A dense, contiguous fp32 tensor in row-major (C) order.
///
/// Attention tensors use PyTorch's `scaled_dot_product_attention` layout `[batch, heads, n, d]`;
/// `[n, d]` and `[heads, n, d]` are accepted and read as batch 1 / heads 1.
///
/// Storage is shared between copies and copied on write. It may be owned memory or memory owned
/// by someone else (a memory-mapped `.npy` file, say), released by the deallocator given at init.
public struct Tensor: @unchecked Sendable {
    /// The dimensions, outermost first (1 to 4 of them, each ≥ 0).
    public let shape: [Int]
    @usableFromInline var storage: TensorStorage

    /// The number of scalars: the product of `shape`.
    public var count: Int { storage.count }

    /// A tensor of the given shape filled with `value`.
    public init(shape: [Int], repeating value: Float = 0) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.storage = TensorStorage(count: shape.reduce(1, *))
        storage.pointer.initialize(repeating: value, count: storage.count)
    }

    /// A tensor of the given shape holding `scalars` (row-major).
    /// - Throws: `AttentionError.invalidArgument` when the count does not match the shape.
    public init(shape: [Int], scalars: [Float]) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw AttentionError.invalidArgument("shape", "dimensions must be non-negative, got \(shape)")
        }
        let count = shape.reduce(1, *)
        guard count == scalars.count else {
            throw AttentionError.invalidArgument(
                "scalars", "shape \(shape) needs \(count) values, got \(scalars.count)")
        }
        self.shape = shape
        self.storage = TensorStorage(count: count)
        scalars.withUnsafeBufferPointer { storage.pointer.update(from: $0.baseAddress!, count: count) }
    }

    /// A tensor whose scalars are written by `initializer`, which must write all `count` of them.
    public init(shape: [Int], initializingWith initializer: (UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.storage = TensorStorage(count: shape.reduce(1, *))
        try initializer(UnsafeMutableBufferPointer(start: storage.pointer, count: storage.count))
    }

    /// A tensor over memory owned elsewhere (e.g. a memory-mapped file), released by `deallocator`
    /// when the last copy of the tensor goes away. The memory must stay valid until then.
    public init(shape: [Int], adopting pointer: UnsafeMutablePointer<Float>, deallocator: @escaping @Sendable () -> Void) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.storage = TensorStorage(adopting: pointer, count: shape.reduce(1, *), deallocator: deallocator)
    }

    /// The scalars, copied into an array.
    public var scalars: [Float] {
        withUnsafeBufferPointer { Array($0) }
    }

    /// Calls `body` with the scalars.
    @inlinable
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.pointer, count: storage.count))
    }

    /// Calls `body` with mutable scalars, copying the storage first if it is shared.
    @inlinable
    public mutating func withUnsafeMutableBufferPointer<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
        return try body(UnsafeMutableBufferPointer(start: storage.pointer, count: storage.count))
    }

    /// Whether no other copy of this tensor shares its storage (so writing to it copies nothing).
    package mutating func hasUniqueStorage() -> Bool { isKnownUniquelyReferenced(&storage) }

    /// The tensor with a new shape of the same element count (no copy).
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        guard newShape.allSatisfy({ $0 >= 0 }), newShape.reduce(1, *) == count else {
            throw AttentionError.invalidArgument("shape", "cannot reshape \(shape) to \(newShape)")
        }
        var t = self
        t = Tensor(shape: newShape, storage: storage)
        return t
    }

    @usableFromInline init(shape: [Int], storage: TensorStorage) {
        self.shape = shape
        self.storage = storage
    }
}

// MARK: - Rows along the sequence axis

extension Tensor {
    /// The rows `chunks` of the second-to-last axis, one chunk after the other, for every index of
    /// the leading axes: `[..., n, w]` → `[..., Σ chunk lengths, w]` (a rank's shard made of
    /// several token chunks, e.g. ring attention's zigzag layout).
    public func rows(_ chunks: [Range<Int>]) -> Tensor {
        precondition(shape.count >= 2, "rows(_:) needs a tensor of rank ≥ 2, got shape \(shape)")
        let width = shape[shape.count - 1], total = shape[shape.count - 2]
        let outer = shape.dropLast(2).reduce(1, *), picked = chunks.reduce(0) { $0 + $1.count }
        precondition(chunks.allSatisfy { $0.lowerBound >= 0 && $0.upperBound <= total }, "rows \(chunks) outside 0..<\(total)")
        if chunks.count == 1 && chunks[0] == 0..<total { return self }
        return Tensor(shape: Array(shape.dropLast(2)) + [picked, width]) { out in
            withUnsafeBufferPointer { src in
                var dst = out.baseAddress!
                for i in 0..<outer {
                    for rows in chunks {
                        dst.update(from: src.baseAddress! + (i * total + rows.lowerBound) * width, count: rows.count * width)
                        dst += rows.count * width
                    }
                }
            }
        }
    }

    /// Tensors `[..., n_i, w]` with the same leading axes and `w`, joined along the rows axis:
    /// `[..., Σ n_i, w]`. The inverse of `rows(_:)` for the pieces of a shard.
    public static func joiningRows(_ parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty && parts[0].shape.count >= 2, "joiningRows needs tensors of rank ≥ 2")
        let lead = Array(parts[0].shape.dropLast(2)), width = parts[0].shape.last!
        precondition(parts.allSatisfy { Array($0.shape.dropLast(2)) == lead && $0.shape.last! == width },
                     "joiningRows: shapes \(parts.map(\.shape)) differ outside the rows axis")
        if parts.count == 1 { return parts[0] }
        let counts = parts.map { $0.shape[$0.shape.count - 2] }, total = counts.reduce(0, +), outer = lead.reduce(1, *)
        return Tensor(shape: lead + [total, width]) { out in
            var first = 0
            for (part, count) in zip(parts, counts) {
                part.withUnsafeBufferPointer { src in
                    for i in 0..<outer {
                        (out.baseAddress! + (i * total + first) * width).update(from: src.baseAddress! + i * count * width, count: count * width)
                    }
                }
                first += count
            }
        }
    }

    /// The first scalar of the storage, for buffers whose address must outlive one closure (ring
    /// attention's per-chunk rows and messages, the distributed exchange buffers). Valid while
    /// this tensor lives; write through it only while the storage is not shared with a copy.
    package var unsafeStoragePointer: UnsafeMutablePointer<Float> { storage.pointer }
}

/// Reference-counted scalar storage: owned (allocated here) or adopted (released by a closure).
@usableFromInline
final class TensorStorage: @unchecked Sendable {
    @usableFromInline let pointer: UnsafeMutablePointer<Float>
    @usableFromInline let count: Int
    private let deallocator: (@Sendable () -> Void)?

    init(count: Int) {
        // At least one element so that `pointer` is always a valid address, even for empty
        // tensors; cache-line aligned for the kernels' 16-lane loads. Large tensors are aligned to
        // 2 MiB and offered to transparent huge pages: HyperAttention gathers rows from random
        // places, and with 4 KiB pages every gather is a TLB miss (dearer still in a VM).
        let bytes = max(count, 1) * 4
        let huge = 2 << 20
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: bytes >= huge ? huge : 64)
        #if os(Linux)
        if bytes >= huge { _ = madvise(raw, (bytes + huge - 1) / huge * huge, MADV_HUGEPAGE) }
        #endif
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        self.count = count
        deallocator = nil
    }

    init(adopting pointer: UnsafeMutablePointer<Float>, count: Int, deallocator: @escaping @Sendable () -> Void) {
        self.pointer = pointer
        self.count = count
        self.deallocator = deallocator
    }

    @usableFromInline func copy() -> TensorStorage {
        let c = TensorStorage(count: count)
        c.pointer.update(from: pointer, count: count)
        return c
    }

    deinit {
        if let deallocator { deallocator() } else { UnsafeMutableRawPointer(pointer).deallocate() }
    }
}
