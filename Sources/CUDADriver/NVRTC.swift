#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// NVRTC, the CUDA run-time compiler, loaded with `dlopen`: compiles CUDA C++ source to a cubin
/// for one GPU architecture.
///
/// The library is looked for, in order, at `$HYPERATTN_NVRTC` (a path), then as `libnvrtc.so`,
/// `libnvrtc.so.13` and `libnvrtc.so.12` on the loader path.
public final class NVRTC: @unchecked Sendable {
    typealias Result = Int32
    typealias FnCreate = @convention(c) (
        UnsafeMutablePointer<OpaquePointer?>, UnsafePointer<CChar>, UnsafePointer<CChar>?, Int32,
        UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?) -> Result
    typealias FnDestroy = @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Result
    typealias FnCompile = @convention(c) (OpaquePointer?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Result
    typealias FnGetSize = @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int>) -> Result
    typealias FnGetBytes = @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>) -> Result
    typealias FnErrorString = @convention(c) (Result) -> UnsafePointer<CChar>?
    typealias FnVersion = @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Result

    let nvrtcCreateProgram: FnCreate
    let nvrtcDestroyProgram: FnDestroy
    let nvrtcCompileProgram: FnCompile
    let nvrtcGetProgramLogSize: FnGetSize
    let nvrtcGetProgramLog: FnGetBytes
    let nvrtcGetCUBINSize: FnGetSize
    let nvrtcGetCUBIN: FnGetBytes
    let nvrtcGetErrorString: FnErrorString
    let nvrtcVersion: FnVersion

    /// Where the library was found (the path or name given to `dlopen`).
    public let location: String
    /// NVRTC's version, e.g. (13, 0).
    public let version: (major: Int, minor: Int)

    /// The names tried, in order.
    public static var candidates: [String] {
        var names: [String] = []
        if let env = ProcessInfo.processInfo.environment["HYPERATTN_NVRTC"], !env.isEmpty { names.append(env) }
        return names + ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]
    }

    nonisolated(unsafe) private static var loaded: NVRTC?
    private static let lock = Lock()

    /// The process's NVRTC, loaded on first use from `candidates`.
    /// - Throws: `CUDAError.nvrtcUnavailable` listing the names tried.
    public static func shared() throws -> NVRTC {
        try lock.withLock {
            if let loaded { return loaded }
            let n = try NVRTC(candidates: candidates)
            loaded = n
            return n
        }
    }

    /// Loads the first of `candidates` that `dlopen` accepts.
    public init(candidates: [String]) throws {
        var failures: [String] = []
        var found: (UnsafeMutableRawPointer, String)? = nil
        for name in candidates {
            if let h = dlopen(name, RTLD_NOW | RTLD_LOCAL) {
                found = (h, name)
                break
            }
            failures.append(dlerror().map { String(cString: $0) } ?? name)
        }
        guard let (handle, name) = found else {
            throw CUDAError.nvrtcUnavailable(
                "no NVRTC: cannot load \(candidates.joined(separator: ", ")) (set HYPERATTN_NVRTC to the path of libnvrtc.so): "
                    + failures.joined(separator: "; "))
        }
        location = name
        let lib = SymbolTable(handle: handle, library: name)
        nvrtcCreateProgram = try lib.bind("nvrtcCreateProgram")
        nvrtcDestroyProgram = try lib.bind("nvrtcDestroyProgram")
        nvrtcCompileProgram = try lib.bind("nvrtcCompileProgram")
        nvrtcGetProgramLogSize = try lib.bind("nvrtcGetProgramLogSize")
        nvrtcGetProgramLog = try lib.bind("nvrtcGetProgramLog")
        nvrtcGetCUBINSize = try lib.bind("nvrtcGetCUBINSize")
        nvrtcGetCUBIN = try lib.bind("nvrtcGetCUBIN")
        nvrtcGetErrorString = try lib.bind("nvrtcGetErrorString")
        nvrtcVersion = try lib.bind("nvrtcVersion")
        var major: Int32 = 0, minor: Int32 = 0
        _ = nvrtcVersion(&major, &minor)
        version = (Int(major), Int(minor))
    }

    func check(_ r: Result, _ call: String, log: String = "") throws {
        if r != 0 {
            let message = nvrtcGetErrorString(r).map { String(cString: $0) } ?? "NVRTC error"
            throw CUDAError.nvrtc(call: call, code: r, message: message, log: log)
        }
    }

    /// The result of one compilation.
    public struct Compilation: Sendable {
        public var cubin: [UInt8]
        /// The compiler's log (warnings; empty when clean).
        public var log: String
    }

    /// Compiles `source` for `architecture` (e.g. "sm_90") to a cubin.
    /// - Throws: `CUDAError.nvrtc` with the compiler log when compilation fails.
    public func compile(source: String, name: String, architecture: String, options extra: [String] = []) throws -> Compilation {
        var program: OpaquePointer? = nil
        try check(nvrtcCreateProgram(&program, source, name, 0, nil, nil), "nvrtcCreateProgram")
        defer { _ = nvrtcDestroyProgram(&program) }
        let options = ["--gpu-architecture=\(architecture)", "--std=c++17"] + extra
        let cOptions = options.map { strdup($0) }
        defer { cOptions.forEach { free($0) } }
        let result = cOptions.map { UnsafePointer($0) }.withUnsafeBufferPointer { p in
            nvrtcCompileProgram(program, Int32(p.count), p.baseAddress)
        }
        let log = try programLog(program)
        try check(result, "nvrtcCompileProgram(\(name), \(architecture))", log: log)
        var size = 0
        try check(nvrtcGetCUBINSize(program, &size), "nvrtcGetCUBINSize")
        var bytes = [UInt8](repeating: 0, count: size)
        try bytes.withUnsafeMutableBytes { b in
            try check(nvrtcGetCUBIN(program, b.baseAddress!.assumingMemoryBound(to: CChar.self)), "nvrtcGetCUBIN")
        }
        return Compilation(cubin: bytes, log: log)
    }

    private func programLog(_ program: OpaquePointer?) throws -> String {
        var size = 0
        try check(nvrtcGetProgramLogSize(program, &size), "nvrtcGetProgramLogSize")
        guard size > 1 else { return "" }
        var buffer = [CChar](repeating: 0, count: size)
        try check(nvrtcGetProgramLog(program, &buffer), "nvrtcGetProgramLog")
        return String(cString: buffer).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Compiled kernels cached on disk per source and architecture:
/// `${XDG_CACHE_HOME:-~/.cache}/hyperattn/cuda/<source hash>-<sm_XY>.cubin`, written atomically
/// (a temporary file renamed into place), so concurrent ranks never see a partial file.
public enum KernelCache {
    /// The cache directory.
    public static var directory: URL {
        let env = ProcessInfo.processInfo.environment
        let base: URL
        if let x = env["XDG_CACHE_HOME"], !x.isEmpty {
            base = URL(fileURLWithPath: x)
        } else {
            base = URL(fileURLWithPath: env["HOME"] ?? NSTemporaryDirectory()).appendingPathComponent(".cache")
        }
        return base.appendingPathComponent("hyperattn").appendingPathComponent("cuda")
    }

    /// 64-bit FNV-1a of the source and options, as 16 hex digits.
    public static func hash(_ source: String, options: [String]) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in (source + "\u{0}" + options.joined(separator: "\u{0}")).utf8 {
            h = (h ^ UInt64(b)) &* 0x100_0000_01b3
        }
        let s = String(h, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    /// The cubin of `source` for `architecture`: from the cache if present, else compiled with
    /// NVRTC and stored (a failure to store is ignored: the cache is only a cache).
    public static func cubin(source: String, name: String, architecture: String, options: [String] = []) throws -> [UInt8] {
        let file = directory.appendingPathComponent("\(hash(source, options: options))-\(architecture).cubin")
        if let data = try? Data(contentsOf: file), !data.isEmpty { return [UInt8](data) }
        let compiled = try NVRTC.shared().compile(source: source, name: name, architecture: architecture, options: options)
        store(compiled.cubin, at: file)
        return compiled.cubin
    }

    static func store(_ bytes: [UInt8], at file: URL) {
        let dir = file.deletingLastPathComponent()
        guard (try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)) != nil else { return }
        let temp = dir.appendingPathComponent(".\(file.lastPathComponent).\(getpid()).tmp")
        guard (try? Data(bytes).write(to: temp)) != nil else { return }
        if rename(temp.path, file.path) != 0 { unlink(temp.path) }
    }
}
