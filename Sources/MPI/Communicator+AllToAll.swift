import CMPI

extension Communicator {
    /// Personalised exchange with equal parts: rank r's j-th part goes to rank j, where it
    /// becomes the r-th part.
    ///
    /// ```
    /// receive[r·n ..< (r+1)·n] on rank j = send[j·n ..< (j+1)·n] on rank r,     n = send.count / size
    /// ```
    ///
    /// - Parameters:
    ///   - send: `size` equal parts, one per destination rank.
    ///   - receive: A buffer of `send.count` elements.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Alltoall`.
    public func allToAll<T: MPIDatatypeConvertible>(_ send: UnsafeBufferPointer<T>, into receive: UnsafeMutableBufferPointer<T>) throws {
        mpiPrecondition(send.count % size == 0, "allToAll: send.count \(send.count) is not a multiple of the size \(size)")
        mpiPrecondition(receive.count == send.count, "allToAll: the receive buffer has \(receive.count) elements, the send buffer \(send.count)")
        let count = cInt(send.count / size, "allToAll: send.count / size")
        let type = T.mpiDatatype.handle
        try mpiCheck("MPI_Alltoall", MPI_Alltoall(send.baseAddress, count, type, receive.baseAddress, count, type, handle))
    }

    /// Personalised exchange with equal parts: element block j of `values` goes to rank j.
    ///
    /// - Parameter values: `size` equal parts, one per destination rank.
    /// - Returns: `size` parts; part r came from rank r.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Alltoall`.
    public func allToAll<T: MPIDatatypeConvertible>(_ values: [T]) throws -> [T] {
        var result = zeroed(T.self, count: values.count)
        try values.withUnsafeBufferPointer { send in
            try result.withUnsafeMutableBufferPointer { try allToAll(send, into: $0) }
        }
        return result
    }

    /// Personalised exchange with per-pair counts: the part of `send` for rank j goes to rank j,
    /// into the part of its `receive` reserved for this rank.
    ///
    /// ```
    /// receive[receivePartition.range(of: r)] on rank j = send[sendPartition.range(of: j)] on rank r
    /// receivePartition.counts[r] on rank j == sendPartition.counts[j] on rank r
    /// ```
    ///
    /// Both partitions are checked against their buffers before the call (traps on misuse);
    /// mismatched counts between ranks are reported by MPI (`MPI_ERR_TRUNCATE`) or undefined.
    ///
    /// - Parameters:
    ///   - send: The outgoing data.
    ///   - sendPartition: One part of `send` per destination rank.
    ///   - receive: The destination.
    ///   - receivePartition: One disjoint part of `receive` per source rank.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Alltoallv`.
    public func allToAllv<T: MPIDatatypeConvertible>(_ send: UnsafeBufferPointer<T>, partition sendPartition: BufferPartition,
                                                     into receive: UnsafeMutableBufferPointer<T>,
                                                     partition receivePartition: BufferPartition) throws {
        sendPartition.validate(parts: size, bufferCount: send.count, disjoint: false, "allToAllv (send)")
        receivePartition.validate(parts: size, bufferCount: receive.count, disjoint: true, "allToAllv (receive)")
        let type = T.mpiDatatype.handle
        try mpiCheck("MPI_Alltoallv", MPI_Alltoallv(send.baseAddress, sendPartition.cCounts, sendPartition.cDisplacements, type,
                                                    receive.baseAddress, receivePartition.cCounts, receivePartition.cDisplacements,
                                                    type, handle))
    }

    /// Personalised exchange with per-pair counts, parts back to back, when each rank already
    /// knows how much it receives from each other rank.
    ///
    /// - Parameters:
    ///   - values: The outgoing data: `sendCounts[0]` elements for rank 0, then `sendCounts[1]`
    ///     for rank 1, …
    ///   - sendCounts: How many elements go to each rank (`size` entries summing to
    ///     `values.count`).
    ///   - receiveCounts: How many elements come from each rank (`size` entries).
    /// - Returns: The incoming data, rank 0's part first.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Alltoallv`.
    public func allToAllv<T: MPIDatatypeConvertible>(_ values: [T], sendCounts: [Int], receiveCounts: [Int]) throws -> [T] {
        let sendPartition = BufferPartition(counts: sendCounts)
        mpiPrecondition(sendPartition.totalCount == values.count,
                     "allToAllv: the send counts \(sendCounts) sum to \(sendPartition.totalCount), not values.count = \(values.count)")
        let receivePartition = BufferPartition(counts: receiveCounts)
        var result = zeroed(T.self, count: receivePartition.totalCount)
        try values.withUnsafeBufferPointer { send in
            try result.withUnsafeMutableBufferPointer {
                try allToAllv(send, partition: sendPartition, into: $0, partition: receivePartition)
            }
        }
        return result
    }

    /// Personalised exchange with per-pair counts, parts back to back; the counts are exchanged
    /// first (`MPI_Alltoall`), so no rank needs to know what it will receive.
    ///
    /// - Parameters:
    ///   - values: The outgoing data: `sendCounts[0]` elements for rank 0, then `sendCounts[1]`
    ///     for rank 1, …
    ///   - sendCounts: How many elements go to each rank (`size` entries summing to
    ///     `values.count`).
    /// - Returns: The incoming data (rank 0's part first) and how many elements came from each
    ///   rank.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Alltoallv`.
    public func allToAllv<T: MPIDatatypeConvertible>(_ values: [T], sendCounts: [Int]) throws -> (values: [T], counts: [Int]) {
        mpiPrecondition(sendCounts.count == size, "allToAllv: \(sendCounts.count) send counts for \(size) ranks")
        let receiveCounts = try allToAll(sendCounts)
        return (try allToAllv(values, sendCounts: sendCounts, receiveCounts: receiveCounts), receiveCounts)
    }
}
