import CMPI

// MARK: - Gather and scatter (equal counts)

extension Communicator {
    /// Concatenates every rank's buffer, in rank order, on `root`.
    ///
    /// ```
    /// receive[r·n ..< (r+1)·n] on root = send on rank r,     n = send.count (equal on all ranks)
    /// ```
    ///
    /// - Parameters:
    ///   - send: This rank's contribution; the same count on every rank.
    ///   - receive: On `root`, a buffer of `size · send.count` elements; ignored (may be `nil`)
    ///     elsewhere.
    ///   - root: The rank that receives.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Gather`.
    public func gather<T: MPIDatatypeConvertible>(_ send: UnsafeBufferPointer<T>, into receive: UnsafeMutableBufferPointer<T>?,
                                                  root: Int) throws {
        let count = cInt(send.count, "gather: send.count")
        if rank == root {
            mpiPrecondition(receive != nil && receive!.count == size * send.count,
                         "gather: the root needs a receive buffer of size·send.count = \(size * send.count) elements, got \(receive?.count ?? 0)")
        }
        let type = T.mpiDatatype.handle
        try mpiCheck("MPI_Gather", MPI_Gather(send.baseAddress, count, type, receive?.baseAddress, count, type, cRank(root), handle))
    }

    /// Concatenates every rank's array, in rank order, on `root`.
    ///
    /// - Parameters:
    ///   - values: This rank's contribution; the same count on every rank (else use `gatherv`).
    ///   - root: The rank that receives.
    /// - Returns: On `root` the `size · values.count` elements, elsewhere `nil`.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Gather`.
    public func gather<T: MPIDatatypeConvertible>(_ values: [T], root: Int) throws -> [T]? {
        var result = zeroed(T.self, count: rank == root ? size * values.count : 0)
        try values.withUnsafeBufferPointer { send in
            try result.withUnsafeMutableBufferPointer { try gather(send, into: rank == root ? $0 : nil, root: root) }
        }
        return rank == root ? result : nil
    }

    /// Collects one value per rank, in rank order, on `root`.
    ///
    /// - Parameters:
    ///   - value: This rank's value.
    ///   - root: The rank that receives.
    /// - Returns: On `root` the `size` values, elsewhere `nil`.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Gather`.
    public func gather<T: MPIDatatypeConvertible>(_ value: T, root: Int) throws -> [T]? {
        try gather([value], root: root)
    }

    /// Concatenates every rank's buffer, in rank order, on every rank.
    ///
    /// ```
    /// receive[r·n ..< (r+1)·n] = send on rank r,     n = send.count (equal on all ranks)
    /// ```
    ///
    /// - Parameters:
    ///   - send: This rank's contribution; the same count on every rank.
    ///   - receive: A buffer of `size · send.count` elements.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Allgather`.
    public func allGather<T: MPIDatatypeConvertible>(_ send: UnsafeBufferPointer<T>, into receive: UnsafeMutableBufferPointer<T>) throws {
        let count = cInt(send.count, "allGather: send.count")
        mpiPrecondition(receive.count == size * send.count,
                     "allGather: the receive buffer needs size·send.count = \(size * send.count) elements, got \(receive.count)")
        let type = T.mpiDatatype.handle
        try mpiCheck("MPI_Allgather", MPI_Allgather(send.baseAddress, count, type, receive.baseAddress, count, type, handle))
    }

    /// Concatenates every rank's array, in rank order, on every rank.
    ///
    /// - Parameter values: This rank's contribution; the same count on every rank (else use
    ///   `allGatherv`).
    /// - Returns: The `size · values.count` elements.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Allgather`.
    public func allGather<T: MPIDatatypeConvertible>(_ values: [T]) throws -> [T] {
        var result = zeroed(T.self, count: size * values.count)
        try values.withUnsafeBufferPointer { send in
            try result.withUnsafeMutableBufferPointer { try allGather(send, into: $0) }
        }
        return result
    }

    /// Collects one value per rank, in rank order, on every rank.
    ///
    /// - Parameter value: This rank's value.
    /// - Returns: The `size` values; element r is rank r's.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Allgather`.
    public func allGather<T: MPIDatatypeConvertible>(_ value: T) throws -> [T] {
        try allGather([value])
    }

    /// Deals `root`'s buffer out in rank order: rank r gets the r-th of `size` equal parts.
    ///
    /// ```
    /// receive on rank r = send[r·n ..< (r+1)·n] on root,     n = receive.count
    /// ```
    ///
    /// - Parameters:
    ///   - send: On `root`, `size · receive.count` elements; ignored (may be `nil`) elsewhere.
    ///   - receive: This rank's part; the same count on every rank.
    ///   - root: The rank that sends.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Scatter`.
    public func scatter<T: MPIDatatypeConvertible>(_ send: UnsafeBufferPointer<T>?, into receive: UnsafeMutableBufferPointer<T>,
                                                   root: Int) throws {
        let count = cInt(receive.count, "scatter: receive.count")
        if rank == root {
            mpiPrecondition(send != nil && send!.count == size * receive.count,
                         "scatter: the root needs a send buffer of size·receive.count = \(size * receive.count) elements, got \(send?.count ?? 0)")
        }
        let type = T.mpiDatatype.handle
        try mpiCheck("MPI_Scatter", MPI_Scatter(send?.baseAddress, count, type, receive.baseAddress, count, type, cRank(root), handle))
    }

    /// Deals `root`'s array out in rank order; the part length `values.count / size` is
    /// broadcast first, so the other ranks need not know it.
    ///
    /// - Parameters:
    ///   - values: On `root`, a multiple of `size` elements; ignored elsewhere (pass `[]`).
    ///   - root: The rank that sends.
    /// - Returns: This rank's part: elements `r·n ..< (r+1)·n` of root's `values`.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Scatter` (after an `MPI_Bcast` of the length).
    public func scatter<T: MPIDatatypeConvertible>(_ values: [T], root: Int) throws -> [T] {
        if rank == root {
            mpiPrecondition(values.count % size == 0, "scatter: the root's \(values.count) values do not split into \(size) equal parts")
        }
        let partCount = try broadcast(rank == root ? values.count / size : 0, root: root)
        var result = zeroed(T.self, count: partCount)
        try values.withUnsafeBufferPointer { send in
            try result.withUnsafeMutableBufferPointer { try scatter(rank == root ? send : nil, into: $0, root: root) }
        }
        return result
    }
}

// MARK: - Gather with per-rank counts

extension Communicator {
    /// Collects every rank's buffer on `root`, each into its part of a partition.
    ///
    /// ```
    /// receive[partition.range(of: r)] on root = send on rank r,     send.count = partition.counts[r]
    /// ```
    ///
    /// - Parameters:
    ///   - send: This rank's contribution (any count, `partition.counts[rank]` on root).
    ///   - receive: On `root`, the destination; ignored (may be `nil`) elsewhere.
    ///   - partition: On `root`, one disjoint part per rank within `receive`; ignored (may be
    ///     `nil`) elsewhere.
    ///   - root: The rank that receives.
    /// - Throws: `MPIError` on failure (a rank sending more than its count: `MPI_ERR_TRUNCATE`).
    ///
    /// The corresponding MPI function is `MPI_Gatherv`.
    public func gatherv<T: MPIDatatypeConvertible>(_ send: UnsafeBufferPointer<T>, into receive: UnsafeMutableBufferPointer<T>?,
                                                   partition: BufferPartition?, root: Int) throws {
        let count = cInt(send.count, "gatherv: send.count")
        let type = T.mpiDatatype.handle
        if rank == root {
            guard let receive, let partition else {
                fatalError("gatherv: the root needs a receive buffer and a partition")
            }
            partition.validate(parts: size, bufferCount: receive.count, disjoint: true, "gatherv")
            mpiPrecondition(partition.counts[rank] == send.count,
                         "gatherv: the root sends \(send.count) elements but its partition count is \(partition.counts[rank])")
            try mpiCheck("MPI_Gatherv", MPI_Gatherv(send.baseAddress, count, type, receive.baseAddress, partition.cCounts,
                                                    partition.cDisplacements, type, cRank(root), handle))
        } else {
            try mpiCheck("MPI_Gatherv", MPI_Gatherv(send.baseAddress, count, type, nil, nil, nil, type, cRank(root), handle))
        }
    }

    /// Concatenates every rank's array, whatever its length, in rank order on `root`. The
    /// counts are gathered first (`MPI_Gather`), so callers need not know them.
    ///
    /// - Parameters:
    ///   - values: This rank's contribution.
    ///   - root: The rank that receives.
    /// - Returns: On `root` the concatenation and each rank's count, elsewhere `nil`.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Gatherv`.
    public func gatherv<T: MPIDatatypeConvertible>(_ values: [T], root: Int) throws -> (values: [T], counts: [Int])? {
        let counts = try gather(values.count, root: root)
        let partition = counts.map(BufferPartition.init(counts:))
        var result = zeroed(T.self, count: partition?.totalCount ?? 0)
        try values.withUnsafeBufferPointer { send in
            try result.withUnsafeMutableBufferPointer { try gatherv(send, into: $0, partition: partition, root: root) }
        }
        guard let counts else { return nil }
        return (result, counts)
    }

    /// Collects every rank's buffer on every rank, each into its part of a partition.
    ///
    /// ```
    /// receive[partition.range(of: r)] = send on rank r,     send.count = partition.counts[r]
    /// ```
    ///
    /// - Parameters:
    ///   - send: This rank's contribution: `partition.counts[rank]` elements.
    ///   - receive: The destination.
    ///   - partition: One disjoint part per rank within `receive`; the same on every rank.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Allgatherv`.
    public func allGatherv<T: MPIDatatypeConvertible>(_ send: UnsafeBufferPointer<T>, into receive: UnsafeMutableBufferPointer<T>,
                                                      partition: BufferPartition) throws {
        partition.validate(parts: size, bufferCount: receive.count, disjoint: true, "allGatherv")
        mpiPrecondition(partition.counts[rank] == send.count,
                     "allGatherv: rank \(rank) sends \(send.count) elements but its partition count is \(partition.counts[rank])")
        let type = T.mpiDatatype.handle
        try mpiCheck("MPI_Allgatherv", MPI_Allgatherv(send.baseAddress, Int32(send.count), type, receive.baseAddress,
                                                      partition.cCounts, partition.cDisplacements, type, handle))
    }

    /// Concatenates every rank's array, whatever its length, in rank order on every rank. The
    /// counts are exchanged first (`MPI_Allgather`), so callers need not know them.
    ///
    /// - Parameter values: This rank's contribution.
    /// - Returns: The concatenation and each rank's count.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Allgatherv`.
    public func allGatherv<T: MPIDatatypeConvertible>(_ values: [T]) throws -> (values: [T], counts: [Int]) {
        let counts = try allGather(values.count)
        let partition = BufferPartition(counts: counts)
        var result = zeroed(T.self, count: partition.totalCount)
        try values.withUnsafeBufferPointer { send in
            try result.withUnsafeMutableBufferPointer { try allGatherv(send, into: $0, partition: partition) }
        }
        return (result, counts)
    }
}

/// An array of `count` all-zero-bits elements, used as a receive buffer.
func zeroed<T: MPIDatatypeConvertible>(_ type: T.Type, count: Int) -> [T] {
    [T](unsafeUninitializedCapacity: count) { buffer, initialized in
        UnsafeMutableRawBufferPointer(buffer).initializeMemory(as: UInt8.self, repeating: 0)
        initialized = count
    }
}
