import CMPI

/// An error returned by an MPI function: the C error code and the function that returned it.
///
/// `MPIEnvironment.initialize(threadLevel:)` installs `MPI_ERRORS_RETURN` on `MPI_COMM_WORLD`
/// and `MPI_COMM_SELF` (communicators derived from them inherit it), so a failing call returns
/// its code instead of aborting the job, and the wrapper throws this error. Misuse that the
/// wrapper can see before calling (a buffer too small for its counts) traps with a
/// precondition message instead.
///
/// ```swift
/// do { try comm.send([1.0], to: comm.size) }
/// catch let error as MPIError where error.errorClass == MPIError.Class.rank { … }
/// ```
public struct MPIError: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    /// The code the MPI function returned (never `MPI_SUCCESS`).
    public let code: Int32
    /// The name of the MPI function that returned `code`, e.g. `"MPI_Send"`.
    public let function: String
    /// The text `MPI_Error_string` gives for `code`, read when the error was made.
    public let message: String
    /// The error class of `code` (`MPI_Error_class`), e.g. `MPIError.Class.rank`.
    public let errorClass: Int32

    /// Makes an error for `code` returned by `function`, reading its class and message.
    ///
    /// - Parameters:
    ///   - code: The non-zero return code.
    ///   - function: The name of the MPI function that returned it.
    public init(code: Int32, function: String) {
        self.code = code
        self.function = function
        var errorClass: Int32 = code
        if MPI_Error_class(code, &errorClass) != MPI_SUCCESS { errorClass = code }
        self.errorClass = errorClass
        self.message = MPIError.errorString(code)
    }

    /// `"MPI_Send: MPI_ERR_RANK: invalid rank (code 6)"`.
    public var description: String { "\(function): \(message) (code \(code))" }

    private static func errorString(_ code: Int32) -> String {
        let capacity = Int(cmpi_max_error_string()) + 1
        var bytes = [CChar](repeating: 0, count: capacity)
        var length: Int32 = 0
        guard MPI_Error_string(code, &bytes, &length) == MPI_SUCCESS else { return "MPI error \(code)" }
        let count = max(0, min(Int(length), capacity - 1))
        return String(decoding: bytes[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Error classes a caller is likely to match `errorClass` against.
    public enum Class {
        /// `MPI_ERR_BUFFER`: invalid buffer pointer.
        public static var buffer: Int32 { cmpi_err_buffer() }
        /// `MPI_ERR_COUNT`: invalid count argument.
        public static var count: Int32 { cmpi_err_count() }
        /// `MPI_ERR_TYPE`: invalid datatype.
        public static var type: Int32 { cmpi_err_type() }
        /// `MPI_ERR_TAG`: invalid tag.
        public static var tag: Int32 { cmpi_err_tag() }
        /// `MPI_ERR_COMM`: invalid communicator.
        public static var communicator: Int32 { cmpi_err_comm() }
        /// `MPI_ERR_RANK`: invalid rank (for example a destination ≥ size).
        public static var rank: Int32 { cmpi_err_rank() }
        /// `MPI_ERR_ROOT`: invalid root.
        public static var root: Int32 { cmpi_err_root() }
        /// `MPI_ERR_TRUNCATE`: a message longer than the receive buffer.
        public static var truncate: Int32 { cmpi_err_truncate() }
        /// `MPI_ERR_ARG`: another invalid argument.
        public static var argument: Int32 { cmpi_err_arg() }
        /// `MPI_ERR_OTHER`: an error not in another class.
        public static var other: Int32 { cmpi_err_other() }
        /// `MPI_ERR_INTERN`: an internal MPI error.
        public static var `internal`: Int32 { cmpi_err_intern() }
    }
}

/// The one place where an MPI return code becomes a thrown error: every wrapper calls the C
/// function through this.
///
/// - Parameters:
///   - function: The MPI function's name, used in the error.
///   - code: What the function returned.
/// - Throws: `MPIError` when `code` is not `MPI_SUCCESS`.
func mpiCheck(_ function: StaticString, _ code: Int32) throws {
    if code != MPI_SUCCESS { throw MPIError(code: code, function: "\(function)") }
}

/// Traps with `message` unless `condition` holds, in every build configuration (Swift's
/// `precondition` drops its message in optimised builds). Used for programmer misuse that the
/// wrappers detect before calling MPI, such as a buffer shorter than its counts.
///
/// - Parameters:
///   - condition: What must hold.
///   - message: What went wrong, naming the wrapper.
func mpiPrecondition(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                     file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError(message(), file: file, line: line) }
}
