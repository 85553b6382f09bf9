/// A failure of the CUDA driver, of NVRTC, or of loading either.
///
/// Every non-zero `CUresult` / `nvrtcResult` becomes one of these in one place
/// (`CUDADriver.check`, `NVRTC.check`), named by the call and described by the library's own
/// error string (`cuGetErrorName` + `cuGetErrorString`, `nvrtcGetErrorString`).
public enum CUDAError: Error, CustomStringConvertible, Equatable {
    /// No usable driver or GPU: `libcuda.so.1` could not be loaded, `cuInit` found no device, or
    /// the device index is out of range. One clear sentence.
    case unavailable(String)
    /// NVRTC could not be loaded (the message lists the names tried).
    case nvrtcUnavailable(String)
    /// A driver call returned an error: the call's name, the numeric code, `cuGetErrorName` and
    /// `cuGetErrorString`.
    case driver(call: String, code: Int32, name: String, message: String)
    /// An NVRTC call failed; for a compile failure `log` holds the compiler's log.
    case nvrtc(call: String, code: Int32, message: String, log: String)
    /// A request the backend cannot serve (an unsupported shape, say).
    case unsupported(String)

    public var description: String {
        switch self {
        case let .unavailable(m): return m
        case let .nvrtcUnavailable(m): return m
        case let .driver(call, code, name, message): return "\(call) failed: \(name) (\(code)): \(message)"
        case let .nvrtc(call, code, message, log):
            return "\(call) failed: \(message) (\(code))" + (log.isEmpty ? "" : "\n" + log)
        case let .unsupported(m): return m
        }
    }
}
