import CMPI

// MARK: - Blocking

extension Communicator {
    /// Sends a buffer to one rank; returns when the buffer may be reused.
    ///
    /// - Parameters:
    ///   - buffer: The data.
    ///   - destination: The receiving rank, in `0..<size` (else `MPI_ERR_RANK` is thrown).
    ///   - tag: A non-negative message tag. Default 0.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Send`.
    public func send<T: MPIDatatypeConvertible>(_ buffer: UnsafeBufferPointer<T>, to destination: Int, tag: Int = 0) throws {
        let count = cInt(buffer.count, "send: buffer.count")
        try mpiCheck("MPI_Send", MPI_Send(buffer.baseAddress, count, T.mpiDatatype.handle, cRank(destination), cTag(tag), handle))
    }

    /// Sends an array to one rank.
    ///
    /// - Parameters:
    ///   - values: The data.
    ///   - destination: The receiving rank, in `0..<size` (else `MPI_ERR_RANK` is thrown).
    ///   - tag: A non-negative message tag. Default 0.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Send`.
    public func send<T: MPIDatatypeConvertible>(_ values: [T], to destination: Int, tag: Int = 0) throws {
        try values.withUnsafeBufferPointer { try send($0, to: destination, tag: tag) }
    }

    /// Sends one value to one rank.
    ///
    /// - Parameters:
    ///   - value: The value.
    ///   - destination: The receiving rank, in `0..<size` (else `MPI_ERR_RANK` is thrown).
    ///   - tag: A non-negative message tag. Default 0.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Send`.
    public func send<T: MPIDatatypeConvertible>(_ value: T, to destination: Int, tag: Int = 0) throws {
        try send([value], to: destination, tag: tag)
    }

    /// Receives a message into a buffer, blocking until it arrives.
    ///
    /// - Parameters:
    ///   - buffer: The destination; at least as long as the message (else `MPI_ERR_TRUNCATE`).
    ///   - source: The sending rank, or `nil` for any (`MPI_ANY_SOURCE`). Default `nil`.
    ///   - tag: The tag to match, or `nil` for any (`MPI_ANY_TAG`). Default `nil`.
    /// - Returns: The message's status: source, tag and `count(of:)`.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Recv`.
    @discardableResult
    public func receive<T: MPIDatatypeConvertible>(into buffer: UnsafeMutableBufferPointer<T>, from source: Int? = nil,
                                                   tag: Int? = nil) throws -> MessageStatus {
        let count = cInt(buffer.count, "receive: buffer.count")
        var raw = MPI_Status()
        try mpiCheck("MPI_Recv", MPI_Recv(buffer.baseAddress, count, T.mpiDatatype.handle, cSource(source), cTagOrAny(tag), handle, &raw))
        return MessageStatus(raw)
    }

    /// Receives a whole message of unknown length: probes it, then receives exactly it (a
    /// matched probe, so another thread cannot take the message in between).
    ///
    /// - Parameters:
    ///   - type: The element type.
    ///   - source: The sending rank, or `nil` for any. Default `nil`.
    ///   - tag: The tag to match, or `nil` for any. Default `nil`.
    /// - Returns: The elements and the message's status.
    /// - Throws: `MPIError` on failure (also when the message is not a whole number of `T`).
    ///
    /// The corresponding MPI functions are `MPI_Mprobe` and `MPI_Mrecv`.
    public func receive<T: MPIDatatypeConvertible>(_ type: T.Type, from source: Int? = nil,
                                                   tag: Int? = nil) throws -> (values: [T], status: MessageStatus) {
        var message: MPI_Message? = nil
        var raw = MPI_Status()
        try mpiCheck("MPI_Mprobe", MPI_Mprobe(cSource(source), cTagOrAny(tag), handle, &message, &raw))
        var count: Int32 = 0
        try mpiCheck("MPI_Get_count", MPI_Get_count(&raw, T.mpiDatatype.handle, &count))
        if count == cmpi_undefined() { count = 0 }  // MPI_Mrecv below then reports MPI_ERR_TRUNCATE.
        var values = zeroed(T.self, count: Int(count))
        try values.withUnsafeMutableBufferPointer { buffer in
            try mpiCheck("MPI_Mrecv", MPI_Mrecv(buffer.baseAddress, count, T.mpiDatatype.handle, &message, &raw))
        }
        return (values, MessageStatus(raw))
    }

    /// Blocks until a matching message is available, without receiving it.
    ///
    /// - Parameters:
    ///   - source: The sending rank, or `nil` for any. Default `nil`.
    ///   - tag: The tag to match, or `nil` for any. Default `nil`.
    /// - Returns: The pending message's status (use `count(of:)` to size a buffer).
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Probe`.
    public func probe(from source: Int? = nil, tag: Int? = nil) throws -> MessageStatus {
        var raw = MPI_Status()
        try mpiCheck("MPI_Probe", MPI_Probe(cSource(source), cTagOrAny(tag), handle, &raw))
        return MessageStatus(raw)
    }

    /// Checks, without blocking, whether a matching message is available.
    ///
    /// - Parameters:
    ///   - source: The sending rank, or `nil` for any. Default `nil`.
    ///   - tag: The tag to match, or `nil` for any. Default `nil`.
    /// - Returns: The pending message's status, or `nil` if none is available yet.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Iprobe`.
    public func probeIfAvailable(from source: Int? = nil, tag: Int? = nil) throws -> MessageStatus? {
        var raw = MPI_Status()
        var flag: Int32 = 0
        try mpiCheck("MPI_Iprobe", MPI_Iprobe(cSource(source), cTagOrAny(tag), handle, &flag, &raw))
        return flag != 0 ? MessageStatus(raw) : nil
    }

    /// Sends one buffer and receives another in one deadlock-free step (a ring shift).
    ///
    /// - Parameters:
    ///   - send: The outgoing data.
    ///   - destination: The rank it goes to.
    ///   - sendTag: The outgoing tag. Default 0.
    ///   - receive: The destination of the incoming message.
    ///   - source: The rank it comes from, or `nil` for any. Default `nil`.
    ///   - receiveTag: The incoming tag, or `nil` for any. Default `nil`.
    /// - Returns: The incoming message's status.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Sendrecv`.
    @discardableResult
    public func sendReceive<T: MPIDatatypeConvertible>(_ send: UnsafeBufferPointer<T>, to destination: Int, sendTag: Int = 0,
                                                       into receive: UnsafeMutableBufferPointer<T>, from source: Int? = nil,
                                                       receiveTag: Int? = nil) throws -> MessageStatus {
        let sendCount = cInt(send.count, "sendReceive: send.count")
        let receiveCount = cInt(receive.count, "sendReceive: receive.count")
        let type = T.mpiDatatype.handle
        var raw = MPI_Status()
        try mpiCheck("MPI_Sendrecv", MPI_Sendrecv(send.baseAddress, sendCount, type, cRank(destination), cTag(sendTag),
                                                  receive.baseAddress, receiveCount, type, cSource(source),
                                                  cTagOrAny(receiveTag), handle, &raw))
        return MessageStatus(raw)
    }

    /// Sends an array and receives one of `receiveCount` elements in one deadlock-free step.
    ///
    /// - Parameters:
    ///   - values: The outgoing data.
    ///   - destination: The rank it goes to.
    ///   - source: The rank the incoming message comes from.
    ///   - receiveCount: The incoming length (at most). Default `values.count`.
    ///   - tag: The tag of both messages. Default 0.
    /// - Returns: The incoming elements (as many as arrived).
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Sendrecv`.
    public func sendReceive<T: MPIDatatypeConvertible>(_ values: [T], to destination: Int, from source: Int,
                                                       receiveCount: Int? = nil, tag: Int = 0) throws -> [T] {
        var result = zeroed(T.self, count: receiveCount ?? values.count)
        let status = try values.withUnsafeBufferPointer { send in
            try result.withUnsafeMutableBufferPointer {
                try sendReceive(send, to: destination, sendTag: tag, into: $0, from: source, receiveTag: tag)
            }
        }
        if let count = try status.count(of: T.self), count < result.count { result.removeLast(result.count - count) }
        return result
    }
}

// MARK: - Non-blocking

extension Communicator {
    /// Starts sending a copy of `values` and returns at once. The request owns the copy, so the
    /// caller may change or drop `values` immediately.
    ///
    /// - Parameters:
    ///   - values: The data (copied).
    ///   - destination: The receiving rank, in `0..<size`.
    ///   - tag: A non-negative message tag. Default 0.
    /// - Returns: The request; complete it with `wait()`, `test()` or `Request.waitAll(_:)`.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Isend`.
    public func immediateSend<T: MPIDatatypeConvertible>(_ values: some Collection<T>, to destination: Int,
                                                         tag: Int = 0) throws -> Request {
        let storage = MessageStorage<T>(copying: values)
        let count = cInt(storage.buffer.count, "immediateSend: values.count")
        var request: MPI_Request? = nil
        try mpiCheck("MPI_Isend", MPI_Isend(storage.buffer.baseAddress, count, T.mpiDatatype.handle, cRank(destination),
                                            cTag(tag), handle, &request))
        return Request(handle: request, storage: storage)
    }

    /// Starts receiving up to `count` elements into storage the request owns, and returns at once.
    ///
    /// - Parameters:
    ///   - type: The element type.
    ///   - count: The largest message accepted (a longer one fails with `MPI_ERR_TRUNCATE`).
    ///   - source: The sending rank, or `nil` for any. Default `nil`.
    ///   - tag: The tag to match, or `nil` for any. Default `nil`.
    /// - Returns: The request; after completion its `values` are the received elements.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Irecv`.
    public func immediateReceive<T: MPIDatatypeConvertible>(_ type: T.Type, count: Int, from source: Int? = nil,
                                                            tag: Int? = nil) throws -> ReceiveRequest<T> {
        let storage = MessageStorage<T>(count: count)
        let cCount = cInt(count, "immediateReceive: count")
        var request: MPI_Request? = nil
        try mpiCheck("MPI_Irecv", MPI_Irecv(storage.buffer.baseAddress, cCount, T.mpiDatatype.handle, cSource(source),
                                            cTagOrAny(tag), handle, &request))
        return ReceiveRequest(handle: request, message: storage)
    }
}

// MARK: - Non-blocking on caller-owned buffers

/// Placeholder storage of a request whose buffer the caller owns.
private final class BorrowedBuffer {}

extension Communicator {
    /// Starts sending `buffer` without copying it, and returns at once.
    ///
    /// The caller owns the memory: it must stay allocated and unchanged until the request
    /// completes (`wait()`, a `test()` that returns a status, or `Request.waitAll(_:)`). Use this
    /// for large messages sent every step (ring attention), where `immediateSend(_:to:tag:)`
    /// would copy each one.
    ///
    /// - Parameters:
    ///   - buffer: The data, read by MPI until completion.
    ///   - destination: The receiving rank, in `0..<size`.
    ///   - tag: A non-negative message tag. Default 0.
    /// - Returns: The request.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Isend`.
    public func immediateSend<T: MPIDatatypeConvertible>(borrowing buffer: UnsafeBufferPointer<T>, to destination: Int,
                                                         tag: Int = 0) throws -> Request {
        let count = cInt(buffer.count, "immediateSend: buffer.count")
        var request: MPI_Request? = nil
        try mpiCheck("MPI_Isend", MPI_Isend(buffer.baseAddress, count, T.mpiDatatype.handle, cRank(destination),
                                            cTag(tag), handle, &request))
        return Request(handle: request, storage: BorrowedBuffer())
    }

    /// Starts receiving into `buffer`, which the caller owns, and returns at once.
    ///
    /// The memory must stay allocated, and must not be read or written, until the request
    /// completes; then `status` gives the received length.
    ///
    /// - Parameters:
    ///   - buffer: The destination; at least as long as the message (else `MPI_ERR_TRUNCATE`).
    ///   - source: The sending rank, or `nil` for any. Default `nil`.
    ///   - tag: The tag to match, or `nil` for any. Default `nil`.
    /// - Returns: The request.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Irecv`.
    public func immediateReceive<T: MPIDatatypeConvertible>(into buffer: UnsafeMutableBufferPointer<T>, from source: Int? = nil,
                                                            tag: Int? = nil) throws -> Request {
        let count = cInt(buffer.count, "immediateReceive: buffer.count")
        var request: MPI_Request? = nil
        try mpiCheck("MPI_Irecv", MPI_Irecv(buffer.baseAddress, count, T.mpiDatatype.handle, cSource(source),
                                            cTagOrAny(tag), handle, &request))
        return Request(handle: request, storage: BorrowedBuffer())
    }
}

extension Communicator {
    /// A source rank, `nil` meaning `MPI_ANY_SOURCE`.
    func cSource(_ source: Int?) -> Int32 { source.map(cRank) ?? cmpi_any_source() }
    /// A tag, `nil` meaning `MPI_ANY_TAG`.
    func cTagOrAny(_ tag: Int?) -> Int32 { tag.map(cTag) ?? cmpi_any_tag() }
}
