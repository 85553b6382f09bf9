import CMPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A group of MPI processes that talk to each other: owns an `MPI_Comm` handle.
///
/// `world` (all processes of the job) and `selfCommunicator` (this process alone) are
/// predefined and never freed. Communicators made by `split(color:key:)` and `duplicate()` are
/// freed (`MPI_Comm_free`) when the last reference goes away — unless MPI has been finalised by
/// then, in which case nothing is called. `rank` and `size` are read once, when the communicator
/// is made.
///
/// Collectives (`Communicator+Collectives.swift`, `+Gather.swift`, `+AllToAll.swift`) must be
/// called by every rank of the communicator in the same order; point-to-point calls are in
/// `Communicator+PointToPoint.swift`.
public final class Communicator: @unchecked Sendable, CustomStringConvertible {
    /// The C handle (`MPI_Comm`).
    let handle: MPI_Comm
    /// Whether this object frees `handle` when it goes away.
    private let ownsHandle: Bool

    /// This process's rank in the communicator, in `0..<size`.
    ///
    /// The corresponding MPI function is `MPI_Comm_rank`.
    public let rank: Int
    /// The number of processes in the communicator.
    ///
    /// The corresponding MPI function is `MPI_Comm_size`.
    public let size: Int

    /// Wraps `handle`, reading its rank and size.
    ///
    /// - Parameters:
    ///   - handle: A valid communicator handle (not `MPI_COMM_NULL`).
    ///   - ownsHandle: Whether to free it when this object goes away.
    init(handle: MPI_Comm, ownsHandle: Bool) throws {
        mpiPrecondition(MPIEnvironment.isActive, "MPI communicators need MPIEnvironment.initialize() first (and not after finalize())")
        var rank: Int32 = 0
        var size: Int32 = 0
        do {
            try mpiCheck("MPI_Comm_rank", MPI_Comm_rank(handle, &rank))
            try mpiCheck("MPI_Comm_size", MPI_Comm_size(handle, &size))
        } catch {
            if ownsHandle {
                var doomed: MPI_Comm? = handle
                _ = MPI_Comm_free(&doomed)
            }
            throw error
        }
        self.handle = handle
        self.ownsHandle = ownsHandle
        self.rank = Int(rank)
        self.size = Int(size)
    }

    deinit {
        if ownsHandle && !MPIEnvironment.isFinalized {
            var doomed: MPI_Comm? = handle
            _ = MPI_Comm_free(&doomed)
        }
    }

    private static let worldInstance: Communicator = {
        do { return try Communicator(handle: cmpi_comm_world(), ownsHandle: false) } catch {
            fatalError("Communicator.world: \(error)")
        }
    }()

    private static let selfInstance: Communicator = {
        do { return try Communicator(handle: cmpi_comm_self(), ownsHandle: false) } catch {
            fatalError("Communicator.selfCommunicator: \(error)")
        }
    }()

    /// All processes of the job (`MPI_COMM_WORLD`). Needs `MPIEnvironment.initialize()` first.
    public static var world: Communicator { worldInstance }

    /// This process alone (`MPI_COMM_SELF`). Needs `MPIEnvironment.initialize()` first.
    public static var selfCommunicator: Communicator { selfInstance }

    /// Partitions the communicator: ranks passing the same `color` form a new communicator, in
    /// which they are ordered by `key` (ties by their rank here).
    ///
    /// Collective: every rank must call it.
    ///
    /// - Parameters:
    ///   - color: A non-negative group label, or `nil` to join no group (`MPI_UNDEFINED`).
    ///   - key: The ordering key within the group. Default: this rank, which keeps the order.
    /// - Returns: The communicator of this rank's group, or `nil` when `color` is `nil`.
    /// - Throws: `MPIError` if the split fails.
    ///
    /// The corresponding MPI function is `MPI_Comm_split`.
    public func split(color: Int?, key: Int? = nil) throws -> Communicator? {
        if let color { mpiPrecondition(color >= 0 && color <= Int(Int32.max), "Communicator.split: color \(color) must be a non-negative Int32") }
        let cColor = color.map { Int32($0) } ?? cmpi_undefined()
        var newHandle: MPI_Comm? = nil
        try mpiCheck("MPI_Comm_split", MPI_Comm_split(handle, cColor, Int32(clamping: key ?? rank), &newHandle))
        guard let newHandle, newHandle != cmpi_comm_null() else { return nil }
        return try Communicator(handle: newHandle, ownsHandle: true)
    }

    /// A new communicator with the same processes and ranks, whose messages never match this
    /// one's: use it to isolate a library's traffic.
    ///
    /// Collective: every rank must call it.
    ///
    /// - Returns: The duplicate, freed when dropped.
    /// - Throws: `MPIError` if duplication fails.
    ///
    /// The corresponding MPI function is `MPI_Comm_dup`.
    public func duplicate() throws -> Communicator {
        var newHandle: MPI_Comm? = nil
        try mpiCheck("MPI_Comm_dup", MPI_Comm_dup(handle, &newHandle))
        guard let newHandle else { throw MPIError(code: cmpi_err_comm(), function: "MPI_Comm_dup") }
        return try Communicator(handle: newHandle, ownsHandle: true)
    }

    /// Terminates every process of this communicator's job (in practice all of them) with an
    /// error code; `mpirun` then exits non-zero.
    ///
    /// - Parameter code: The exit code to report. Default 1.
    ///
    /// The corresponding MPI function is `MPI_Abort`.
    public func abort(code: Int32 = 1) -> Never {
        _ = MPI_Abort(handle, code)
        exit(code == 0 ? 1 : code)
    }

    public var description: String { "Communicator(rank: \(rank), size: \(size))" }
}

// MARK: - Argument conversion shared by the wrappers

extension Communicator {
    /// `value` as an MPI `int`, trapping with `what` in the message when it does not fit.
    func cInt(_ value: Int, _ what: @autoclosure () -> String) -> Int32 {
        mpiPrecondition(value >= 0 && value <= Int(Int32.max), "\(what()) = \(value) does not fit an MPI count (0...\(Int32.max))")
        return Int32(value)
    }

    /// A rank or root as an MPI `int`. Out-of-range values are passed on (clamped) so that MPI
    /// reports them as `MPI_ERR_RANK` / `MPI_ERR_ROOT`.
    func cRank(_ value: Int) -> Int32 { Int32(clamping: value) }

    /// A tag as an MPI `int`; an invalid tag is passed on for MPI to report as `MPI_ERR_TAG`.
    func cTag(_ value: Int) -> Int32 { Int32(clamping: value) }
}
