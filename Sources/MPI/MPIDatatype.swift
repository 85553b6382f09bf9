import CMPI

/// A predefined MPI datatype: the element type MPI is told a buffer holds.
///
/// Swift code rarely names one: buffer element types pick theirs through
/// `MPIDatatypeConvertible`.
public struct MPIDatatype: @unchecked Sendable, Equatable, CustomStringConvertible {
    /// The C handle (`MPI_Datatype`).
    let handle: MPI_Datatype
    /// The MPI name, for descriptions.
    public let name: String

    init(_ handle: MPI_Datatype, name: String) {
        self.handle = handle
        self.name = name
    }

    public static func == (lhs: MPIDatatype, rhs: MPIDatatype) -> Bool { lhs.handle == rhs.handle }
    public var description: String { name }

    /// `MPI_BYTE`: untyped bytes.
    public static var byte: MPIDatatype { MPIDatatype(cmpi_byte(), name: "MPI_BYTE") }
    /// `MPI_FLOAT`.
    public static var float: MPIDatatype { MPIDatatype(cmpi_float(), name: "MPI_FLOAT") }
    /// `MPI_DOUBLE`.
    public static var double: MPIDatatype { MPIDatatype(cmpi_double(), name: "MPI_DOUBLE") }
    /// `MPI_INT8_T`.
    public static var int8: MPIDatatype { MPIDatatype(cmpi_int8_t(), name: "MPI_INT8_T") }
    /// `MPI_INT16_T`.
    public static var int16: MPIDatatype { MPIDatatype(cmpi_int16_t(), name: "MPI_INT16_T") }
    /// `MPI_INT32_T`.
    public static var int32: MPIDatatype { MPIDatatype(cmpi_int32_t(), name: "MPI_INT32_T") }
    /// `MPI_INT64_T`.
    public static var int64: MPIDatatype { MPIDatatype(cmpi_int64_t(), name: "MPI_INT64_T") }
    /// `MPI_UINT8_T`.
    public static var uint8: MPIDatatype { MPIDatatype(cmpi_uint8_t(), name: "MPI_UINT8_T") }
    /// `MPI_UINT16_T`.
    public static var uint16: MPIDatatype { MPIDatatype(cmpi_uint16_t(), name: "MPI_UINT16_T") }
    /// `MPI_UINT32_T`.
    public static var uint32: MPIDatatype { MPIDatatype(cmpi_uint32_t(), name: "MPI_UINT32_T") }
    /// `MPI_UINT64_T`.
    public static var uint64: MPIDatatype { MPIDatatype(cmpi_uint64_t(), name: "MPI_UINT64_T") }

    /// The size in bytes of one element.
    ///
    /// - Throws: `MPIError` if MPI is not initialised.
    ///
    /// The corresponding MPI function is `MPI_Type_size`.
    public func size() throws -> Int {
        var bytes: Int32 = 0
        try mpiCheck("MPI_Type_size", MPI_Type_size(handle, &bytes))
        return Int(bytes)
    }
}

/// A Swift type whose values MPI can move: a trivially copyable type with the same memory layout
/// as a predefined MPI datatype.
///
/// Float, Double, Int8, Int16, Int32, Int64, Int, UInt8, UInt16, UInt32, UInt64 and UInt
/// conform. Conform another type only if its layout is exactly `mpiDatatype`'s (for example a
/// `RawRepresentable` wrapper over `Int32`).
public protocol MPIDatatypeConvertible: BitwiseCopyable {
    /// The MPI datatype with this type's layout.
    static var mpiDatatype: MPIDatatype { get }
}

/// An `MPIDatatypeConvertible` number that the predefined reductions (`MPI_SUM`, `MPI_PROD`,
/// `MPI_MAX`, `MPI_MIN`) accept, with the identities of those reductions.
public protocol MPIReducible: MPIDatatypeConvertible, Numeric, Comparable {
    /// The identity of `max`: the least value (−∞ for floating point, `.min` for integers).
    static var reductionLeast: Self { get }
    /// The identity of `min`: the greatest value (+∞ for floating point, `.max` for integers).
    static var reductionGreatest: Self { get }
}

extension Float: MPIReducible {
    public static var mpiDatatype: MPIDatatype { .float }
    public static var reductionLeast: Float { -.infinity }
    public static var reductionGreatest: Float { .infinity }
}

extension Double: MPIReducible {
    public static var mpiDatatype: MPIDatatype { .double }
    public static var reductionLeast: Double { -.infinity }
    public static var reductionGreatest: Double { .infinity }
}

extension Int8: MPIReducible {
    public static var mpiDatatype: MPIDatatype { .int8 }
    public static var reductionLeast: Int8 { .min }
    public static var reductionGreatest: Int8 { .max }
}

extension Int16: MPIReducible {
    public static var mpiDatatype: MPIDatatype { .int16 }
    public static var reductionLeast: Int16 { .min }
    public static var reductionGreatest: Int16 { .max }
}

extension Int32: MPIReducible {
    public static var mpiDatatype: MPIDatatype { .int32 }
    public static var reductionLeast: Int32 { .min }
    public static var reductionGreatest: Int32 { .max }
}

extension Int64: MPIReducible {
    public static var mpiDatatype: MPIDatatype { .int64 }
    public static var reductionLeast: Int64 { .min }
    public static var reductionGreatest: Int64 { .max }
}

extension Int: MPIReducible {
    /// `MPI_INT64_T` (Swift's `Int` is 64 bits on every platform this package supports).
    public static var mpiDatatype: MPIDatatype {
        MemoryLayout<Int>.size == 8 ? .int64 : .int32
    }
    public static var reductionLeast: Int { .min }
    public static var reductionGreatest: Int { .max }
}

extension UInt8: MPIReducible {
    public static var mpiDatatype: MPIDatatype { .uint8 }
    public static var reductionLeast: UInt8 { .min }
    public static var reductionGreatest: UInt8 { .max }
}

extension UInt16: MPIReducible {
    public static var mpiDatatype: MPIDatatype { .uint16 }
    public static var reductionLeast: UInt16 { .min }
    public static var reductionGreatest: UInt16 { .max }
}

extension UInt32: MPIReducible {
    public static var mpiDatatype: MPIDatatype { .uint32 }
    public static var reductionLeast: UInt32 { .min }
    public static var reductionGreatest: UInt32 { .max }
}

extension UInt64: MPIReducible {
    public static var mpiDatatype: MPIDatatype { .uint64 }
    public static var reductionLeast: UInt64 { .min }
    public static var reductionGreatest: UInt64 { .max }
}

extension UInt: MPIReducible {
    /// `MPI_UINT64_T` (Swift's `UInt` is 64 bits on every platform this package supports).
    public static var mpiDatatype: MPIDatatype {
        MemoryLayout<UInt>.size == 8 ? .uint64 : .uint32
    }
    public static var reductionLeast: UInt { .min }
    public static var reductionGreatest: UInt { .max }
}

/// A predefined reduction for `reduce`, `allReduce`, `scan` and `exclusiveScan`.
public enum ReductionOperation: Sendable, CaseIterable, CustomStringConvertible {
    /// Sum, `MPI_SUM`. Identity 0.
    case sum
    /// Product, `MPI_PROD`. Identity 1.
    case product
    /// Maximum, `MPI_MAX`. Identity `reductionLeast` (−∞, `.min`).
    case max
    /// Minimum, `MPI_MIN`. Identity `reductionGreatest` (+∞, `.max`).
    case min

    /// The C handle (`MPI_Op`).
    var handle: MPI_Op {
        switch self {
        case .sum: return cmpi_sum()
        case .product: return cmpi_prod()
        case .max: return cmpi_max()
        case .min: return cmpi_min()
        }
    }

    /// The identity element of this reduction for `T`: `x ⊕ identity = x`.
    ///
    /// - Parameter type: The element type.
    public func identity<T: MPIReducible>(for type: T.Type = T.self) -> T {
        switch self {
        case .sum: return .zero
        case .product: return 1
        case .max: return T.reductionLeast
        case .min: return T.reductionGreatest
        }
    }

    /// Combines two values the way MPI does, for local reference computations.
    ///
    /// - Parameters:
    ///   - lhs: The first operand.
    ///   - rhs: The second operand.
    public func combine<T: MPIReducible>(_ lhs: T, _ rhs: T) -> T {
        switch self {
        case .sum: return lhs + rhs
        case .product: return lhs * rhs
        case .max: return Swift.max(lhs, rhs)
        case .min: return Swift.min(lhs, rhs)
        }
    }

    public var description: String {
        switch self {
        case .sum: return "MPI_SUM"
        case .product: return "MPI_PROD"
        case .max: return "MPI_MAX"
        case .min: return "MPI_MIN"
        }
    }
}
