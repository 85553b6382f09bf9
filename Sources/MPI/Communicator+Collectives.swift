import CMPI

// MARK: - Barrier and broadcast

extension Communicator {
    /// Blocks until every rank of the communicator has called it.
    ///
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Barrier`.
    public func barrier() throws {
        try mpiCheck("MPI_Barrier", MPI_Barrier(handle))
    }

    /// Copies `root`'s buffer into every other rank's buffer.
    ///
    /// ```
    /// buffer[i] on every rank ← buffer[i] on root,   i in 0..<buffer.count
    /// ```
    ///
    /// - Parameters:
    ///   - buffer: The data on `root`, the destination elsewhere; the same count on every rank.
    ///   - root: The rank whose data is sent.
    /// - Throws: `MPIError` on failure (an invalid root: `MPI_ERR_ROOT`).
    ///
    /// The corresponding MPI function is `MPI_Bcast`.
    public func broadcast<T: MPIDatatypeConvertible>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws {
        let count = cInt(buffer.count, "broadcast: buffer.count")
        try mpiCheck("MPI_Bcast", MPI_Bcast(buffer.baseAddress, count, T.mpiDatatype.handle, cRank(root), handle))
    }

    /// Copies `root`'s array into every other rank's array, which must have the same count.
    ///
    /// - Parameters:
    ///   - array: The data on `root`, overwritten elsewhere.
    ///   - root: The rank whose data is sent.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Bcast`.
    public func broadcast<T: MPIDatatypeConvertible>(_ array: inout [T], root: Int) throws {
        try array.withUnsafeMutableBufferPointer { try broadcast($0, root: root) }
    }

    /// Returns `root`'s value on every rank.
    ///
    /// - Parameters:
    ///   - value: The value on `root`; ignored elsewhere.
    ///   - root: The rank whose value is sent.
    /// - Returns: `root`'s `value`.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Bcast`.
    public func broadcast<T: MPIDatatypeConvertible>(_ value: T, root: Int) throws -> T {
        var array = [value]
        try broadcast(&array, root: root)
        return array[0]
    }

    /// Returns `root`'s array on every rank; the other ranks need not know its length (it is
    /// broadcast first, so this makes two `MPI_Bcast` calls).
    ///
    /// - Parameters:
    ///   - values: The data on `root`; ignored elsewhere.
    ///   - root: The rank whose data is sent.
    /// - Returns: `root`'s `values`.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Bcast`.
    public func broadcast<T: MPIDatatypeConvertible>(_ values: [T], root: Int) throws -> [T] {
        let count = try broadcast(values.count, root: root)
        var result = rank == root ? values : [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            UnsafeMutableRawBufferPointer(buffer).initializeMemory(as: UInt8.self, repeating: 0)
            initialized = count
        }
        try broadcast(&result, root: root)
        return result
    }
}

// MARK: - Reductions

extension Communicator {
    /// Combines the ranks' buffers element-wise on `root`.
    ///
    /// ```
    /// receive[i] = send[i] on rank 0 ⊕ send[i] on rank 1 ⊕ … ⊕ send[i] on rank size−1
    /// ```
    ///
    /// - Parameters:
    ///   - send: This rank's operands; the same count on every rank.
    ///   - receive: On `root`, a buffer of `send.count` elements for the result; ignored (may be
    ///     `nil`) elsewhere.
    ///   - operation: The reduction ⊕.
    ///   - root: The rank that receives the result.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Reduce`.
    public func reduce<T: MPIReducible>(_ send: UnsafeBufferPointer<T>, into receive: UnsafeMutableBufferPointer<T>?,
                                        operation: ReductionOperation, root: Int) throws {
        let count = cInt(send.count, "reduce: send.count")
        if rank == root {
            mpiPrecondition(receive != nil && receive!.count == send.count,
                         "reduce: the root needs a receive buffer of \(send.count) elements, got \(receive?.count ?? 0)")
        }
        try mpiCheck("MPI_Reduce", MPI_Reduce(send.baseAddress, receive?.baseAddress, count, T.mpiDatatype.handle,
                                              operation.handle, cRank(root), handle))
    }

    /// Combines the ranks' arrays element-wise on `root`.
    ///
    /// - Parameters:
    ///   - values: This rank's operands; the same count on every rank.
    ///   - operation: The reduction.
    ///   - root: The rank that receives the result.
    /// - Returns: On `root` the element-wise reduction, elsewhere `nil`.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Reduce`.
    public func reduce<T: MPIReducible>(_ values: [T], operation: ReductionOperation, root: Int) throws -> [T]? {
        var result = [T](repeating: .zero, count: rank == root ? values.count : 0)
        try values.withUnsafeBufferPointer { send in
            try result.withUnsafeMutableBufferPointer { receive in
                try reduce(send, into: rank == root ? receive : nil, operation: operation, root: root)
            }
        }
        return rank == root ? result : nil
    }

    /// Combines one value per rank on `root`.
    ///
    /// - Parameters:
    ///   - value: This rank's operand.
    ///   - operation: The reduction.
    ///   - root: The rank that receives the result.
    /// - Returns: On `root` the reduction over all ranks, elsewhere `nil`.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Reduce`.
    public func reduce<T: MPIReducible>(_ value: T, operation: ReductionOperation, root: Int) throws -> T? {
        try reduce([value], operation: operation, root: root)?[0]
    }

    /// Combines the ranks' buffers element-wise and gives the result to every rank.
    ///
    /// ```
    /// receive[i] = send[i] on rank 0 ⊕ … ⊕ send[i] on rank size−1      (on every rank)
    /// ```
    ///
    /// - Parameters:
    ///   - send: This rank's operands; the same count on every rank.
    ///   - receive: A buffer of `send.count` elements for the result (not overlapping `send`).
    ///   - operation: The reduction ⊕.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Allreduce`.
    public func allReduce<T: MPIReducible>(_ send: UnsafeBufferPointer<T>, into receive: UnsafeMutableBufferPointer<T>,
                                           operation: ReductionOperation) throws {
        mpiPrecondition(receive.count == send.count,
                     "allReduce: the receive buffer has \(receive.count) elements, the send buffer \(send.count)")
        let count = cInt(send.count, "allReduce: send.count")
        try mpiCheck("MPI_Allreduce", MPI_Allreduce(send.baseAddress, receive.baseAddress, count, T.mpiDatatype.handle,
                                                    operation.handle, handle))
    }

    /// Replaces each rank's buffer by the element-wise reduction over all ranks.
    ///
    /// - Parameters:
    ///   - buffer: This rank's operands, overwritten by the result; the same count on every rank.
    ///   - operation: The reduction.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Allreduce` with `MPI_IN_PLACE`.
    public func allReduce<T: MPIReducible>(inPlace buffer: UnsafeMutableBufferPointer<T>, operation: ReductionOperation) throws {
        let count = cInt(buffer.count, "allReduce(inPlace:): buffer.count")
        try mpiCheck("MPI_Allreduce", MPI_Allreduce(cmpi_in_place(), buffer.baseAddress, count, T.mpiDatatype.handle,
                                                    operation.handle, handle))
    }

    /// Replaces each rank's array by the element-wise reduction over all ranks.
    ///
    /// - Parameters:
    ///   - array: This rank's operands, overwritten by the result; the same count on every rank.
    ///   - operation: The reduction.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Allreduce` with `MPI_IN_PLACE`.
    public func allReduce<T: MPIReducible>(inPlace array: inout [T], operation: ReductionOperation) throws {
        try array.withUnsafeMutableBufferPointer { try allReduce(inPlace: $0, operation: operation) }
    }

    /// The element-wise reduction of the ranks' arrays, on every rank.
    ///
    /// - Parameters:
    ///   - values: This rank's operands; the same count on every rank.
    ///   - operation: The reduction.
    /// - Returns: The reduction over all ranks.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Allreduce`.
    public func allReduce<T: MPIReducible>(_ values: [T], operation: ReductionOperation) throws -> [T] {
        var result = values
        try allReduce(inPlace: &result, operation: operation)
        return result
    }

    /// The reduction of one value per rank, on every rank: `allReduce(rank + 1, .sum)` is
    /// `size·(size+1)/2`.
    ///
    /// - Parameters:
    ///   - value: This rank's operand.
    ///   - operation: The reduction.
    /// - Returns: The reduction over all ranks.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Allreduce`.
    public func allReduce<T: MPIReducible>(_ value: T, operation: ReductionOperation) throws -> T {
        try allReduce([value], operation: operation)[0]
    }
}

// MARK: - Prefix reductions

extension Communicator {
    /// The inclusive prefix reduction: rank r gets the reduction over ranks 0…r.
    ///
    /// ```
    /// receive[i] on rank r = send[i] on rank 0 ⊕ … ⊕ send[i] on rank r
    /// ```
    ///
    /// - Parameters:
    ///   - send: This rank's operands; the same count on every rank.
    ///   - receive: A buffer of `send.count` elements for the result.
    ///   - operation: The reduction ⊕.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Scan`.
    public func scan<T: MPIReducible>(_ send: UnsafeBufferPointer<T>, into receive: UnsafeMutableBufferPointer<T>,
                                      operation: ReductionOperation) throws {
        mpiPrecondition(receive.count == send.count,
                     "scan: the receive buffer has \(receive.count) elements, the send buffer \(send.count)")
        let count = cInt(send.count, "scan: send.count")
        try mpiCheck("MPI_Scan", MPI_Scan(send.baseAddress, receive.baseAddress, count, T.mpiDatatype.handle,
                                          operation.handle, handle))
    }

    /// The inclusive prefix reduction of the ranks' arrays.
    ///
    /// - Parameters:
    ///   - values: This rank's operands; the same count on every rank.
    ///   - operation: The reduction.
    /// - Returns: On rank r, the element-wise reduction over ranks 0…r.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Scan`.
    public func scan<T: MPIReducible>(_ values: [T], operation: ReductionOperation) throws -> [T] {
        var result = [T](repeating: .zero, count: values.count)
        try values.withUnsafeBufferPointer { send in
            try result.withUnsafeMutableBufferPointer { try scan(send, into: $0, operation: operation) }
        }
        return result
    }

    /// The inclusive prefix reduction of one value per rank.
    ///
    /// - Parameters:
    ///   - value: This rank's operand.
    ///   - operation: The reduction.
    /// - Returns: On rank r, the reduction over ranks 0…r.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Scan`.
    public func scan<T: MPIReducible>(_ value: T, operation: ReductionOperation) throws -> T {
        try scan([value], operation: operation)[0]
    }

    /// The exclusive prefix reduction: rank r gets the reduction over ranks 0…r−1, and rank 0
    /// gets the identity of the operation (0 for sum, 1 for product, −∞/`.min` for max,
    /// +∞/`.max` for min), which MPI leaves undefined.
    ///
    /// ```
    /// receive[i] on rank r = send[i] on rank 0 ⊕ … ⊕ send[i] on rank r−1     (identity on rank 0)
    /// ```
    ///
    /// With `.sum` over per-rank counts this gives each rank its offset in the concatenation.
    ///
    /// - Parameters:
    ///   - send: This rank's operands; the same count on every rank.
    ///   - receive: A buffer of `send.count` elements for the result.
    ///   - operation: The reduction ⊕.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Exscan`.
    public func exclusiveScan<T: MPIReducible>(_ send: UnsafeBufferPointer<T>, into receive: UnsafeMutableBufferPointer<T>,
                                               operation: ReductionOperation) throws {
        mpiPrecondition(receive.count == send.count,
                     "exclusiveScan: the receive buffer has \(receive.count) elements, the send buffer \(send.count)")
        let count = cInt(send.count, "exclusiveScan: send.count")
        try mpiCheck("MPI_Exscan", MPI_Exscan(send.baseAddress, receive.baseAddress, count, T.mpiDatatype.handle,
                                              operation.handle, handle))
        if rank == 0 {
            let identity: T = operation.identity()
            for i in receive.indices { receive[i] = identity }
        }
    }

    /// The exclusive prefix reduction of the ranks' arrays (identity on rank 0).
    ///
    /// - Parameters:
    ///   - values: This rank's operands; the same count on every rank.
    ///   - operation: The reduction.
    /// - Returns: On rank r > 0, the element-wise reduction over ranks 0…r−1; on rank 0, the
    ///   identity of `operation`.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Exscan`.
    public func exclusiveScan<T: MPIReducible>(_ values: [T], operation: ReductionOperation) throws -> [T] {
        var result = [T](repeating: .zero, count: values.count)
        try values.withUnsafeBufferPointer { send in
            try result.withUnsafeMutableBufferPointer { try exclusiveScan(send, into: $0, operation: operation) }
        }
        return result
    }

    /// The exclusive prefix reduction of one value per rank: `exclusiveScan(count, .sum)` is
    /// this rank's offset in the concatenation of all ranks' items (0 on rank 0).
    ///
    /// - Parameters:
    ///   - value: This rank's operand.
    ///   - operation: The reduction.
    /// - Returns: On rank r > 0, the reduction over ranks 0…r−1; on rank 0, the identity.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Exscan`.
    public func exclusiveScan<T: MPIReducible>(_ value: T, operation: ReductionOperation) throws -> T {
        try exclusiveScan([value], operation: operation)[0]
    }
}
