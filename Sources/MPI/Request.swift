import CMPI

/// What MPI reports about a received (or probed) message: its source, tag and length.
public struct MessageStatus: @unchecked Sendable, CustomStringConvertible {
    /// The C status (`MPI_Status`).
    var raw: MPI_Status

    init(_ raw: MPI_Status) { self.raw = raw }

    /// The rank that sent the message.
    public var source: Int { Int(raw.MPI_SOURCE) }
    /// The message's tag.
    public var tag: Int { Int(raw.MPI_TAG) }

    /// The number of `T` elements in the message, or `nil` if its byte length is not a whole
    /// number of them (`MPI_UNDEFINED`).
    ///
    /// - Parameter type: The element type the message is read as.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Get_count`.
    public func count<T: MPIDatatypeConvertible>(of type: T.Type) throws -> Int? {
        var status = raw
        var count: Int32 = 0
        try mpiCheck("MPI_Get_count", MPI_Get_count(&status, T.mpiDatatype.handle, &count))
        return count == cmpi_undefined() ? nil : Int(count)
    }

    public var description: String { "MessageStatus(source: \(source), tag: \(tag))" }
}

/// Storage for the message of a non-blocking call, owned by its `Request` so that it cannot be
/// freed or changed while MPI reads or writes it.
final class MessageStorage<T: MPIDatatypeConvertible> {
    let buffer: UnsafeMutableBufferPointer<T>

    /// Zero-filled storage for `count` elements.
    init(count: Int) {
        buffer = .allocate(capacity: count)
        UnsafeMutableRawBufferPointer(buffer).initializeMemory(as: UInt8.self, repeating: 0)
    }

    /// Storage holding a copy of `values`.
    init(copying values: some Collection<T>) {
        buffer = .allocate(capacity: values.count)
        _ = buffer.initialize(from: values)
    }

    deinit { buffer.deallocate() }
}

/// A non-blocking operation in flight (`MPI_Request`). It owns the message storage, so the
/// buffer stays alive and untouched until the operation completes.
///
/// Complete every request with `wait()`, a `test()` that returns a status, or
/// `Request.waitAll(_:)`. A request dropped while still pending is a programmer error: debug
/// builds trap; release builds free the MPI request and deliberately leak its storage, so
/// that MPI never writes into freed memory.
///
/// ```swift
/// let incoming = try comm.immediateReceive(Float.self, count: n, from: left)
/// let outgoing = try comm.immediateSend(block, to: right)
/// try Request.waitAll([incoming, outgoing])
/// let received = incoming.values
/// ```
public class Request {
    /// The C handle; `MPI_REQUEST_NULL` once complete.
    var handle: MPI_Request?
    /// The message storage, kept alive until completion.
    private let storage: AnyObject
    /// The completion status, once complete.
    public private(set) var status: MessageStatus?

    init(handle: MPI_Request?, storage: AnyObject) {
        self.handle = handle
        self.storage = storage
    }

    /// Whether the operation has completed (through `wait`, `test` or `waitAll`).
    public var isComplete: Bool { status != nil }

    /// Records completion with `raw`.
    fileprivate func complete(_ raw: MPI_Status) {
        status = MessageStatus(raw)
        handle = cmpi_request_null()
    }

    /// Blocks until the operation completes. Returns at once if it already has.
    ///
    /// - Returns: The completion status (for a receive: source, tag, length).
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Wait`.
    @discardableResult
    public func wait() throws -> MessageStatus {
        if let status { return status }
        var raw = MPI_Status()
        try mpiCheck("MPI_Wait", MPI_Wait(&handle, &raw))
        complete(raw)
        return status!
    }

    /// Checks, without blocking, whether the operation has completed.
    ///
    /// - Returns: The completion status if complete, else `nil`.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Test`.
    @discardableResult
    public func test() throws -> MessageStatus? {
        if let status { return status }
        var raw = MPI_Status()
        var flag: Int32 = 0
        try mpiCheck("MPI_Test", MPI_Test(&handle, &flag, &raw))
        if flag != 0 { complete(raw) }
        return status
    }

    /// Blocks until every request completes.
    ///
    /// - Parameter requests: Requests from this process; already completed ones are skipped.
    /// - Returns: Their statuses, in order.
    /// - Throws: `MPIError` on failure; for a per-request failure (`MPI_ERR_IN_STATUS`) the
    ///   error of the first failed request.
    ///
    /// The corresponding MPI function is `MPI_Waitall`.
    @discardableResult
    public static func waitAll(_ requests: [Request]) throws -> [MessageStatus] {
        let pending = requests.filter { !$0.isComplete }
        if !pending.isEmpty {
            var handles = pending.map { $0.handle }
            var raws = [MPI_Status](repeating: MPI_Status(), count: pending.count)
            let code = MPI_Waitall(Int32(pending.count), &handles, &raws)
            for (index, request) in pending.enumerated() where handles[index] == cmpi_request_null() {
                if code == MPI_SUCCESS || raws[index].MPI_ERROR == MPI_SUCCESS { request.complete(raws[index]) }
            }
            if code != MPI_SUCCESS {
                if let failed = raws.first(where: { $0.MPI_ERROR != MPI_SUCCESS && $0.MPI_ERROR != MPI_ERR_PENDING }) {
                    throw MPIError(code: failed.MPI_ERROR, function: "MPI_Waitall")
                }
                try mpiCheck("MPI_Waitall", code)
            }
        }
        return requests.map { $0.status! }
    }

    deinit {
        if status == nil, handle != nil, handle != cmpi_request_null(), !MPIEnvironment.isFinalized {
            assertionFailure("MPI Request dropped before completion: call wait(), test() or Request.waitAll(_:)")
            _ = MPI_Request_free(&handle)
            _ = Unmanaged.passRetained(storage)  // MPI may still use the buffer: never free it.
        }
    }
}

/// A non-blocking receive in flight: a `Request` whose storage holds the incoming elements.
public final class ReceiveRequest<Element: MPIDatatypeConvertible>: Request {
    private let message: MessageStorage<Element>

    init(handle: MPI_Request?, message: MessageStorage<Element>) {
        self.message = message
        super.init(handle: handle, storage: message)
    }

    /// The received elements (as many as the message held, at most the requested count).
    /// Only valid once complete: traps otherwise.
    public var values: [Element] {
        guard let status else { fatalError("ReceiveRequest.values read before the receive completed: wait() first") }
        let count = (try? status.count(of: Element.self)).flatMap { $0 } ?? message.buffer.count
        return Array(message.buffer.prefix(min(count, message.buffer.count)))
    }

    /// Waits for the receive, then returns the received elements.
    ///
    /// - Returns: The received elements.
    /// - Throws: `MPIError` on failure.
    ///
    /// The corresponding MPI function is `MPI_Wait`.
    public func waitForValues() throws -> [Element] {
        try wait()
        return values
    }
}
