#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `CUdeviceptr`: a device address.
public typealias DevicePointer = UInt64

/// The CUDA driver API (`libcuda.so.1`), loaded at run time with `dlopen`, its entry points bound
/// with `dlsym` into typed C function pointers. Nothing of CUDA is linked: a process that never
/// asks for a GPU never touches the library, and one on a machine without it gets
/// `CUDAError.unavailable` from `CUDADriver.shared()`.
public final class CUDADriver: @unchecked Sendable {
    typealias Result = Int32
    typealias FnInit = @convention(c) (UInt32) -> Result
    typealias FnDeviceGetCount = @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    typealias FnDeviceGet = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Result
    typealias FnDeviceGetAttribute = @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Result
    typealias FnDeviceGetName = @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Result
    typealias FnPrimaryCtxRetain = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, Int32) -> Result
    typealias FnPrimaryCtxRelease = @convention(c) (Int32) -> Result
    typealias FnCtxSetCurrent = @convention(c) (OpaquePointer?) -> Result
    typealias FnCtxSynchronize = @convention(c) () -> Result
    typealias FnModuleLoadData = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UnsafeRawPointer) -> Result
    typealias FnModuleUnload = @convention(c) (OpaquePointer?) -> Result
    typealias FnModuleGetFunction = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, OpaquePointer?, UnsafePointer<CChar>) -> Result
    typealias FnFuncSetAttribute = @convention(c) (OpaquePointer?, Int32, Int32) -> Result
    typealias FnMemAlloc = @convention(c) (UnsafeMutablePointer<UInt64>, Int) -> Result
    typealias FnMemFree = @convention(c) (UInt64) -> Result
    typealias FnMemcpyHtoD = @convention(c) (UInt64, UnsafeRawPointer, Int) -> Result
    typealias FnMemcpyDtoH = @convention(c) (UnsafeMutableRawPointer, UInt64, Int) -> Result
    typealias FnMemsetD8Async = @convention(c) (UInt64, UInt8, Int, OpaquePointer?) -> Result
    typealias FnMemGetInfo = @convention(c) (UnsafeMutablePointer<Int>, UnsafeMutablePointer<Int>) -> Result
    typealias FnStreamCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UInt32) -> Result
    typealias FnStreamDestroy = @convention(c) (OpaquePointer?) -> Result
    typealias FnStreamSynchronize = @convention(c) (OpaquePointer?) -> Result
    typealias FnEventCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UInt32) -> Result
    typealias FnEventDestroy = @convention(c) (OpaquePointer?) -> Result
    typealias FnEventRecord = @convention(c) (OpaquePointer?, OpaquePointer?) -> Result
    typealias FnEventSynchronize = @convention(c) (OpaquePointer?) -> Result
    typealias FnEventElapsedTime = @convention(c) (UnsafeMutablePointer<Float>, OpaquePointer?, OpaquePointer?) -> Result
    typealias FnLaunchKernel = @convention(c) (
        OpaquePointer?, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, OpaquePointer?,
        UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Result
    typealias FnGetErrorString = @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result
    typealias FnDriverGetVersion = @convention(c) (UnsafeMutablePointer<Int32>) -> Result

    let cuInit: FnInit
    let cuDeviceGetCount: FnDeviceGetCount
    let cuDeviceGet: FnDeviceGet
    let cuDeviceGetAttribute: FnDeviceGetAttribute
    let cuDeviceGetName: FnDeviceGetName
    let cuDevicePrimaryCtxRetain: FnPrimaryCtxRetain
    let cuDevicePrimaryCtxRelease: FnPrimaryCtxRelease
    let cuCtxSetCurrent: FnCtxSetCurrent
    let cuCtxSynchronize: FnCtxSynchronize
    let cuModuleLoadData: FnModuleLoadData
    let cuModuleUnload: FnModuleUnload
    let cuModuleGetFunction: FnModuleGetFunction
    let cuFuncSetAttribute: FnFuncSetAttribute
    let cuMemAlloc: FnMemAlloc
    let cuMemFree: FnMemFree
    let cuMemcpyHtoD: FnMemcpyHtoD
    let cuMemcpyDtoH: FnMemcpyDtoH
    let cuMemsetD8Async: FnMemsetD8Async
    let cuMemGetInfo: FnMemGetInfo
    let cuStreamCreate: FnStreamCreate
    let cuStreamDestroy: FnStreamDestroy
    let cuStreamSynchronize: FnStreamSynchronize
    let cuEventCreate: FnEventCreate
    let cuEventDestroy: FnEventDestroy
    let cuEventRecord: FnEventRecord
    let cuEventSynchronize: FnEventSynchronize
    let cuEventElapsedTime: FnEventElapsedTime
    let cuLaunchKernel: FnLaunchKernel
    let cuGetErrorName: FnGetErrorString
    let cuGetErrorString: FnGetErrorString
    let cuDriverGetVersion: FnDriverGetVersion

    /// Driver version as reported by `cuDriverGetVersion` (e.g. 13000 for 13.0).
    public let version: Int

    nonisolated(unsafe) private static var loaded: CUDADriver?
    nonisolated(unsafe) private static var loadError: CUDAError?
    private static let lock = Lock()

    /// The process's driver, loaded and initialised (`cuInit(0)`) on first use.
    /// - Throws: `CUDAError.unavailable` when `libcuda.so.1` is missing or `cuInit` fails (no GPU).
    public static func shared() throws -> CUDADriver {
        try lock.withLock {
            if let loaded { return loaded }
            if let loadError { throw loadError }
            do {
                let d = try CUDADriver()
                loaded = d
                return d
            } catch let e as CUDAError {
                loadError = e
                throw e
            }
        }
    }

    private init() throws {
        guard let handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL) else {
            let why = dlerror().map { String(cString: $0) } ?? "unknown reason"
            throw CUDAError.unavailable("no CUDA driver: cannot load libcuda.so.1 (\(why)); is an NVIDIA GPU and driver installed?")
        }
        let lib = SymbolTable(handle: handle, library: "libcuda.so.1")
        cuInit = try lib.bind("cuInit")
        cuDeviceGetCount = try lib.bind("cuDeviceGetCount")
        cuDeviceGet = try lib.bind("cuDeviceGet")
        cuDeviceGetAttribute = try lib.bind("cuDeviceGetAttribute")
        cuDeviceGetName = try lib.bind("cuDeviceGetName")
        cuDevicePrimaryCtxRetain = try lib.bind("cuDevicePrimaryCtxRetain")
        cuDevicePrimaryCtxRelease = try lib.bind("cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease")
        cuCtxSetCurrent = try lib.bind("cuCtxSetCurrent")
        cuCtxSynchronize = try lib.bind("cuCtxSynchronize")
        cuModuleLoadData = try lib.bind("cuModuleLoadData")
        cuModuleUnload = try lib.bind("cuModuleUnload")
        cuModuleGetFunction = try lib.bind("cuModuleGetFunction")
        cuFuncSetAttribute = try lib.bind("cuFuncSetAttribute")
        cuMemAlloc = try lib.bind("cuMemAlloc_v2")
        cuMemFree = try lib.bind("cuMemFree_v2")
        cuMemcpyHtoD = try lib.bind("cuMemcpyHtoD_v2")
        cuMemcpyDtoH = try lib.bind("cuMemcpyDtoH_v2")
        cuMemsetD8Async = try lib.bind("cuMemsetD8Async")
        cuMemGetInfo = try lib.bind("cuMemGetInfo_v2")
        cuStreamCreate = try lib.bind("cuStreamCreate")
        cuStreamDestroy = try lib.bind("cuStreamDestroy_v2", "cuStreamDestroy")
        cuStreamSynchronize = try lib.bind("cuStreamSynchronize")
        cuEventCreate = try lib.bind("cuEventCreate")
        cuEventDestroy = try lib.bind("cuEventDestroy_v2", "cuEventDestroy")
        cuEventRecord = try lib.bind("cuEventRecord")
        cuEventSynchronize = try lib.bind("cuEventSynchronize")
        cuEventElapsedTime = try lib.bind("cuEventElapsedTime_v2", "cuEventElapsedTime")
        cuLaunchKernel = try lib.bind("cuLaunchKernel")
        cuGetErrorName = try lib.bind("cuGetErrorName")
        cuGetErrorString = try lib.bind("cuGetErrorString")
        cuDriverGetVersion = try lib.bind("cuDriverGetVersion")
        var v: Int32 = 0
        _ = cuDriverGetVersion(&v)
        version = Int(v)
        let r = cuInit(0)
        if r == 100 /* CUDA_ERROR_NO_DEVICE */ {
            throw CUDAError.unavailable("no CUDA GPU: the driver (libcuda.so.1) is installed but cuInit found no device")
        }
        if r != 0 {
            throw CUDAError.unavailable("no usable CUDA GPU: cuInit failed: \(errorText(r))")
        }
    }

    /// `NAME: description` of a `CUresult`.
    func errorText(_ r: Result) -> String {
        let (name, message) = errorStrings(r)
        return "\(name) (\(r)): \(message)"
    }

    func errorStrings(_ r: Result) -> (String, String) {
        var n: UnsafePointer<CChar>? = nil, s: UnsafePointer<CChar>? = nil
        _ = cuGetErrorName(r, &n)
        _ = cuGetErrorString(r, &s)
        return (n.map { String(cString: $0) } ?? "CUDA_ERROR_\(r)", s.map { String(cString: $0) } ?? "unknown error")
    }

    /// Throws `CUDAError.driver` naming `call` unless `result` is `CUDA_SUCCESS`.
    @inline(__always)
    func check(_ result: Result, _ call: @autoclosure () -> String) throws {
        if result != 0 {
            let (name, message) = errorStrings(result)
            throw CUDAError.driver(call: call(), code: result, name: name, message: message)
        }
    }

    /// Number of CUDA devices.
    public func deviceCount() throws -> Int {
        var n: Int32 = 0
        try check(cuDeviceGetCount(&n), "cuDeviceGetCount")
        return Int(n)
    }
}

/// A library handle whose symbols are bound by name into C function types.
struct SymbolTable {
    let handle: UnsafeMutableRawPointer
    let library: String

    /// The first of `names` that the library exports, as a `T` (a `@convention(c)` type).
    func bind<T>(_ names: String...) throws -> T {
        for name in names {
            if let p = dlsym(handle, name) { return unsafeBitCast(p, to: T.self) }
        }
        throw CUDAError.unavailable("\(library) lacks \(names.joined(separator: " / ")); the installed driver or NVRTC is too old")
    }
}

/// A mutex (for the one-time library loads).
final class Lock: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}
