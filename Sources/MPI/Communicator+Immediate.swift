import CMPI

// MARK: - Non-blocking collectives

/// The count and displacement arrays of a non-blocking variable-count collective: MPI reads them
/// until the operation completes, so the request owns them.
final class CollectiveArguments {
    private var arrays: [UnsafeMutableBufferPointer<Int32>] = []

    /// A C copy of `values`, alive as long as this object.
    func keep(_ values: [Int32]) -> UnsafePointer<Int32> {
        let copy = UnsafeMutableBufferPointer<Int32>.allocate(capacity: max(values.count, 1))
        _ = copy.initialize(from: values)
        arrays.append(copy)
        return UnsafePointer(copy.baseAddress!)
    }

    deinit { for array in arrays { array.deallocate() } }
}

/// Send and receive storage of a non-blocking gather, plus its argument arrays.
final class GatherStorage<T: MPIDatatypeConvertible> {
    let send: MessageStorage<T>
    let receive: MessageStorage<T>
    let arguments = CollectiveArguments()

    init(sending values: [T], receiveCount: Int) {
        send = MessageStorage(copying: values)
        receive = MessageStorage(count: receiveCount)
    }
}

/// A non-blocking gather in flight (`MPI_Iallgather`, `MPI_Iallgatherv`): a `Request` whose
/// storage holds a copy of this rank's contribution and the concatenation being received.
public final class GatherRequest<Element: MPIDatatypeConvertible>: Request {
    private let storage: GatherStorage<Element>

    init(handle: MPI_Request?, storage: GatherStorage<Element>) {
        self.storage = storage
        super.init(handle: handle, storage: storage)
    }

    /// The concatenation of every rank's contribution, in rank order. Only valid once complete:
    /// traps otherwise.
    public var values: [Element] {
        guard isComplete else { fatalError("GatherRequest.values read before the gather completed: wait() first") }
        return Array(storage.receive.buffer)
    }

    /// Waits for the gather, then returns the concatenation.
    ///
    /// - Throws: `MPIError` on failure.
    public func waitForValues() throws -> [Element] {
        try wait()
        return values
    }
}

extension Communicator {
    /// Starts concatenating every rank's array, in rank order, on every rank, and returns at
    /// once; `values` of the request holds the result once it completes.
    ///
    /// Several non-blocking collectives may be in flight on one communicator; every rank must
    /// start them in the same order.
    ///
    /// - Parameter values: This rank's contribution (copied); the same count on every rank.
    /// - Returns: The request, whose `values` has `size · values.count` elements.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Iallgather`.
    public func immediateAllGather<T: MPIDatatypeConvertible>(_ values: [T]) throws -> GatherRequest<T> {
        let count = cInt(values.count, "immediateAllGather: values.count")
        let storage = GatherStorage(sending: values, receiveCount: size * values.count)
        let type = T.mpiDatatype.handle
        var request: MPI_Request? = nil
        try mpiCheck("MPI_Iallgather", MPI_Iallgather(storage.send.buffer.baseAddress, count, type,
                                                      storage.receive.buffer.baseAddress, count, type, handle, &request))
        return GatherRequest(handle: request, storage: storage)
    }

    /// Starts concatenating every rank's array, whatever its length, in rank order on every rank,
    /// when every rank already knows every rank's count; returns at once.
    ///
    /// - Parameters:
    ///   - values: This rank's contribution (copied): `counts[rank]` elements.
    ///   - counts: Every rank's count, the same on every rank.
    /// - Returns: The request, whose `values` holds the concatenation (rank 0's part first).
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Iallgatherv`.
    public func immediateAllGatherv<T: MPIDatatypeConvertible>(_ values: [T], counts: [Int]) throws -> GatherRequest<T> {
        let partition = BufferPartition(counts: counts)
        partition.validate(parts: size, bufferCount: partition.totalCount, disjoint: true, "immediateAllGatherv")
        mpiPrecondition(counts[rank] == values.count,
                        "immediateAllGatherv: rank \(rank) sends \(values.count) elements but its count is \(counts[rank])")
        let storage = GatherStorage(sending: values, receiveCount: partition.totalCount)
        let type = T.mpiDatatype.handle
        var request: MPI_Request? = nil
        try mpiCheck("MPI_Iallgatherv", MPI_Iallgatherv(storage.send.buffer.baseAddress, Int32(values.count), type,
                                                        storage.receive.buffer.baseAddress,
                                                        storage.arguments.keep(partition.cCounts),
                                                        storage.arguments.keep(partition.cDisplacements), type, handle, &request))
        return GatherRequest(handle: request, storage: storage)
    }

    /// Starts a personalised exchange with per-pair counts between caller-owned buffers, without
    /// copying them, and returns at once: the non-blocking `allToAllv(_:partition:into:partition:)`.
    ///
    /// The caller owns both buffers: `send` must stay allocated and unchanged, and `receive`
    /// allocated and untouched, until the request completes (`wait()`, a `test()` that returns a
    /// status, or `Request.waitAll(_:)`). The partitions are copied.
    ///
    /// - Parameters:
    ///   - send: The outgoing data, one part per destination rank.
    ///   - sendPartition: Where each destination's part lies in `send`.
    ///   - receive: The destination.
    ///   - receivePartition: One disjoint part of `receive` per source rank.
    /// - Returns: The request.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Ialltoallv`.
    public func immediateAllToAllv<T: MPIDatatypeConvertible>(borrowing send: UnsafeBufferPointer<T>, partition sendPartition: BufferPartition,
                                                              into receive: UnsafeMutableBufferPointer<T>,
                                                              partition receivePartition: BufferPartition) throws -> Request {
        sendPartition.validate(parts: size, bufferCount: send.count, disjoint: false, "immediateAllToAllv (send)")
        receivePartition.validate(parts: size, bufferCount: receive.count, disjoint: true, "immediateAllToAllv (receive)")
        let arguments = CollectiveArguments()
        let type = T.mpiDatatype.handle
        var request: MPI_Request? = nil
        try mpiCheck("MPI_Ialltoallv", MPI_Ialltoallv(send.baseAddress, arguments.keep(sendPartition.cCounts),
                                                      arguments.keep(sendPartition.cDisplacements), type,
                                                      receive.baseAddress, arguments.keep(receivePartition.cCounts),
                                                      arguments.keep(receivePartition.cDisplacements), type, handle, &request))
        return Request(handle: request, storage: arguments)
    }
}
