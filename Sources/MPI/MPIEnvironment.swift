import CMPI

/// The level of thread support asked of and provided by the MPI library, in increasing order.
public enum ThreadLevel: Int, Comparable, CaseIterable, Sendable, CustomStringConvertible {
    /// Only one thread will execute (`MPI_THREAD_SINGLE`).
    case single
    /// Many threads, but only the main thread makes MPI calls (`MPI_THREAD_FUNNELED`).
    case funneled
    /// Many threads make MPI calls, one at a time (`MPI_THREAD_SERIALIZED`).
    case serialized
    /// Many threads make MPI calls with no restriction (`MPI_THREAD_MULTIPLE`).
    case multiple

    /// The C constant of this level.
    var cValue: Int32 {
        switch self {
        case .single: return cmpi_thread_single()
        case .funneled: return cmpi_thread_funneled()
        case .serialized: return cmpi_thread_serialized()
        case .multiple: return cmpi_thread_multiple()
        }
    }

    /// The level whose C constant is `cValue`; `.single` for an unknown value.
    init(cValue: Int32) {
        self = ThreadLevel.allCases.first { $0.cValue == cValue } ?? .single
    }

    public static func < (lhs: ThreadLevel, rhs: ThreadLevel) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        switch self {
        case .single: return "MPI_THREAD_SINGLE"
        case .funneled: return "MPI_THREAD_FUNNELED"
        case .serialized: return "MPI_THREAD_SERIALIZED"
        case .multiple: return "MPI_THREAD_MULTIPLE"
        }
    }
}

/// Start-up, shut-down and process-wide queries of the MPI library.
///
/// ```swift
/// let provided = try MPIEnvironment.initialize(threadLevel: .funneled)
/// defer { try? MPIEnvironment.finalize() }
/// let world = Communicator.world
/// ```
public enum MPIEnvironment {
    /// Initialises MPI, asking for a level of thread support, and makes every later failure
    /// return an error instead of aborting the job.
    ///
    /// After `MPI_Init_thread` it installs `MPI_ERRORS_RETURN` on `MPI_COMM_WORLD` and
    /// `MPI_COMM_SELF`; communicators split or duplicated from them inherit it. If MPI is already
    /// initialised this only returns the level provided then (`MPI_Query_thread`).
    ///
    /// - Parameter threadLevel: The level asked for. Default `.single`.
    /// - Returns: The level provided, which may be lower than asked.
    /// - Throws: `MPIError` if initialisation or installing the error handler fails.
    ///
    /// The corresponding MPI function is `MPI_Init_thread`.
    @discardableResult
    public static func initialize(threadLevel: ThreadLevel = .single) throws -> ThreadLevel {
        mpiPrecondition(!isFinalized, "MPIEnvironment.initialize: MPI cannot be initialised again after MPI_Finalize")
        if isInitialized {
            var provided: Int32 = 0
            try mpiCheck("MPI_Query_thread", MPI_Query_thread(&provided))
            return ThreadLevel(cValue: provided)
        }
        var provided: Int32 = 0
        try mpiCheck("MPI_Init_thread", MPI_Init_thread(nil, nil, threadLevel.cValue, &provided))
        try mpiCheck("MPI_Comm_set_errhandler", MPI_Comm_set_errhandler(cmpi_comm_world(), cmpi_errors_return()))
        try mpiCheck("MPI_Comm_set_errhandler", MPI_Comm_set_errhandler(cmpi_comm_self(), cmpi_errors_return()))
        return ThreadLevel(cValue: provided)
    }

    /// Shuts MPI down. Communicators still alive afterwards are not freed (MPI already released
    /// them); no other MPI call may follow.
    ///
    /// - Throws: `MPIError` if the shut-down fails.
    ///
    /// The corresponding MPI function is `MPI_Finalize`.
    public static func finalize() throws {
        mpiPrecondition(isInitialized && !isFinalized, "MPIEnvironment.finalize: MPI is not initialised or already finalised")
        try mpiCheck("MPI_Finalize", MPI_Finalize())
    }

    /// Whether `MPI_Init_thread` has been called (stays `true` after finalisation).
    ///
    /// The corresponding MPI function is `MPI_Initialized`.
    public static var isInitialized: Bool {
        var flag: Int32 = 0
        _ = MPI_Initialized(&flag)
        return flag != 0
    }

    /// Whether `MPI_Finalize` has been called. Safe to ask at any time.
    ///
    /// The corresponding MPI function is `MPI_Finalized`.
    public static var isFinalized: Bool {
        var flag: Int32 = 0
        _ = MPI_Finalized(&flag)
        return flag != 0
    }

    /// Whether MPI is usable now: initialised and not yet finalised.
    public static var isActive: Bool { isInitialized && !isFinalized }

    /// The level of thread support MPI provides.
    ///
    /// - Throws: `MPIError` if MPI is not initialised.
    ///
    /// The corresponding MPI function is `MPI_Query_thread`.
    public static func providedThreadLevel() throws -> ThreadLevel {
        var provided: Int32 = 0
        try mpiCheck("MPI_Query_thread", MPI_Query_thread(&provided))
        return ThreadLevel(cValue: provided)
    }

    /// Elapsed wall-clock time in seconds since an arbitrary origin in the past, for timing.
    ///
    /// The corresponding MPI function is `MPI_Wtime`.
    public static var wallTime: Double { MPI_Wtime() }

    /// The resolution of `wallTime` in seconds.
    ///
    /// The corresponding MPI function is `MPI_Wtick`.
    public static var wallTimeResolution: Double { MPI_Wtick() }

    /// The name of the processor (host) this process runs on.
    ///
    /// - Throws: `MPIError` if the name cannot be read.
    ///
    /// The corresponding MPI function is `MPI_Get_processor_name`.
    public static func processorName() throws -> String {
        let capacity = Int(cmpi_max_processor_name()) + 1
        var bytes = [CChar](repeating: 0, count: capacity)
        var length: Int32 = 0
        try mpiCheck("MPI_Get_processor_name", MPI_Get_processor_name(&bytes, &length))
        let count = max(0, min(Int(length), capacity - 1))
        return String(decoding: bytes[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
