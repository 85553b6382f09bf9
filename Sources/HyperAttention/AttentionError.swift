/// An error in the arguments of an attention call. The description names the argument.
public enum AttentionError: Error, CustomStringConvertible, Equatable {
    /// `argument` is wrong; `reason` says how.
    case invalidArgument(_ argument: String, _ reason: String)

    public var description: String {
        switch self {
        case let .invalidArgument(argument, reason): return "\(argument): \(reason)"
        }
    }
}
