/// One GPU with its primary context made current on the calling thread.
///
/// The corresponding driver functions are `cuDeviceGet`, `cuDevicePrimaryCtxRetain` and
/// `cuCtxSetCurrent`; the context is released when the device is dropped.
public final class CUDADevice: @unchecked Sendable {
    public let driver: CUDADriver
    public let index: Int
    let handle: Int32
    let context: OpaquePointer?
    /// Compute capability (major, minor), e.g. (9, 0) for an H100.
    public let computeCapability: (major: Int, minor: Int)
    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    public let name: String
    /// Streaming multiprocessors.
    public let multiprocessors: Int

    /// Opens device `index` (0-based).
    /// - Throws: `CUDAError.unavailable` when there is no driver, no GPU, or no device `index`.
    public init(index: Int) throws {
        let driver = try CUDADriver.shared()
        self.driver = driver
        let count = try driver.deviceCount()
        guard index >= 0 && index < count else {
            throw CUDAError.unavailable(
                "no CUDA device \(index): this machine has \(count) CUDA GPU\(count == 1 ? "" : "s")"
                    + (count > 0 ? " (devices 0...\(count - 1))" : ""))
        }
        self.index = index
        var h: Int32 = 0
        try driver.check(driver.cuDeviceGet(&h, Int32(index)), "cuDeviceGet(\(index))")
        handle = h
        var ctx: OpaquePointer? = nil
        try driver.check(driver.cuDevicePrimaryCtxRetain(&ctx, h), "cuDevicePrimaryCtxRetain(\(index))")
        context = ctx
        try driver.check(driver.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        func attribute(_ a: Int32, _ what: String) throws -> Int {
            var v: Int32 = 0
            try driver.check(driver.cuDeviceGetAttribute(&v, a, h), "cuDeviceGetAttribute(\(what))")
            return Int(v)
        }
        computeCapability = (try attribute(75, "COMPUTE_CAPABILITY_MAJOR"), try attribute(76, "COMPUTE_CAPABILITY_MINOR"))
        multiprocessors = try attribute(16, "MULTIPROCESSOR_COUNT")
        var buffer = [CChar](repeating: 0, count: 256)
        try driver.check(driver.cuDeviceGetName(&buffer, 255, h), "cuDeviceGetName")
        name = String(cString: buffer)
    }

    deinit { _ = driver.cuDevicePrimaryCtxRelease(handle) }

    /// Makes this device's context current on the calling thread (`cuCtxSetCurrent`).
    public func makeCurrent() throws { try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent") }

    /// `sm_XY` for NVRTC's `--gpu-architecture`.
    public var architecture: String { "sm_\(computeCapability.major)\(computeCapability.minor)" }

    /// Waits for all work on the device (`cuCtxSynchronize`).
    public func synchronize() throws { try driver.check(driver.cuCtxSynchronize(), "cuCtxSynchronize") }

    /// Free and total device memory in bytes (`cuMemGetInfo`).
    public func memoryInfo() throws -> (free: Int, total: Int) {
        var free = 0, total = 0
        try driver.check(driver.cuMemGetInfo(&free, &total), "cuMemGetInfo")
        return (free, total)
    }

    /// Loads a cubin (`cuModuleLoadData`).
    public func loadModule(cubin: [UInt8]) throws -> CUDAModule {
        var m: OpaquePointer? = nil
        try cubin.withUnsafeBytes { try driver.check(driver.cuModuleLoadData(&m, $0.baseAddress!), "cuModuleLoadData") }
        return CUDAModule(device: self, handle: m)
    }
}

/// A loaded module; unloaded when dropped (`cuModuleUnload`).
public final class CUDAModule: @unchecked Sendable {
    let device: CUDADevice
    let handle: OpaquePointer?
    init(device: CUDADevice, handle: OpaquePointer?) {
        self.device = device
        self.handle = handle
    }
    deinit { _ = device.driver.cuModuleUnload(handle) }

    /// The kernel named `name` (an `extern "C"` symbol) (`cuModuleGetFunction`).
    public func function(_ name: String) throws -> CUDAFunction {
        var f: OpaquePointer? = nil
        try device.driver.check(device.driver.cuModuleGetFunction(&f, handle, name), "cuModuleGetFunction(\(name))")
        return CUDAFunction(module: self, handle: f, name: name)
    }
}

/// A kernel of a loaded module.
public struct CUDAFunction: @unchecked Sendable {
    let module: CUDAModule
    let handle: OpaquePointer?
    public let name: String

    /// Allows up to `bytes` of dynamic shared memory
    /// (`cuFuncSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)`).
    public func setMaxDynamicSharedMemory(_ bytes: Int) throws {
        let d = module.device.driver
        try d.check(d.cuFuncSetAttribute(handle, 8, Int32(bytes)), "cuFuncSetAttribute(\(name), MAX_DYNAMIC_SHARED_SIZE_BYTES)")
    }
}

/// One kernel argument, passed by value.
public enum KernelArgument {
    case pointer(DevicePointer)
    case int32(Int32)
    case int64(Int64)
    case float(Float)

    /// An `Int` that must fit in 32 bits (a programmer error otherwise).
    public static func int(_ v: Int) -> KernelArgument {
        precondition(v >= Int(Int32.min) && v <= Int(Int32.max), "kernel argument \(v) exceeds 32 bits")
        return .int32(Int32(v))
    }
}

/// A stream of device work (`cuStreamCreate`, non-blocking); destroyed when dropped.
public final class CUDAStream: @unchecked Sendable {
    public let device: CUDADevice
    let handle: OpaquePointer?

    public init(device: CUDADevice) throws {
        self.device = device
        var s: OpaquePointer? = nil
        try device.driver.check(device.driver.cuStreamCreate(&s, 1 /* CU_STREAM_NON_BLOCKING */), "cuStreamCreate")
        handle = s
    }
    deinit { _ = device.driver.cuStreamDestroy(handle) }

    /// Waits for the stream's work (`cuStreamSynchronize`).
    public func synchronize() throws {
        try device.driver.check(device.driver.cuStreamSynchronize(handle), "cuStreamSynchronize")
    }

    /// Launches `function` on `grid` × `block` threads (`cuLaunchKernel`).
    public func launch(
        _ function: CUDAFunction, grid: (Int, Int, Int), block: (Int, Int, Int), sharedMemory: Int = 0,
        arguments: [KernelArgument]
    ) throws {
        // Each argument gets its own 8-byte slot; the driver reads each slot by the kernel's type.
        let slots = UnsafeMutableRawPointer.allocate(byteCount: max(1, arguments.count) * 8, alignment: 8)
        defer { slots.deallocate() }
        var pointers = [UnsafeMutableRawPointer?](repeating: nil, count: arguments.count)
        for (i, a) in arguments.enumerated() {
            let slot = slots + i * 8
            switch a {
            case let .pointer(p): slot.storeBytes(of: p, as: UInt64.self)
            case let .int32(v): slot.storeBytes(of: v, as: Int32.self)
            case let .int64(v): slot.storeBytes(of: v, as: Int64.self)
            case let .float(v): slot.storeBytes(of: v, as: Float.self)
            }
            pointers[i] = slot
        }
        guard grid.0 > 0 && grid.1 > 0 && grid.2 > 0 else { return }
        let d = device.driver
        let r = pointers.withUnsafeMutableBufferPointer { p in
            d.cuLaunchKernel(
                function.handle, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2),
                UInt32(block.0), UInt32(block.1), UInt32(block.2), UInt32(sharedMemory), handle, p.baseAddress, nil)
        }
        try d.check(r, "cuLaunchKernel(\(function.name), grid \(grid.0)×\(grid.1)×\(grid.2))")
    }

    /// Sets `bytes` bytes at `pointer` to `value` (`cuMemsetD8Async`).
    public func memset(_ pointer: DevicePointer, _ value: UInt8, bytes: Int) throws {
        guard bytes > 0 else { return }
        try device.driver.check(device.driver.cuMemsetD8Async(pointer, value, bytes, handle), "cuMemsetD8Async")
    }
}

/// A timing event (`cuEventCreate`); destroyed when dropped.
public final class CUDAEvent: @unchecked Sendable {
    let device: CUDADevice
    let handle: OpaquePointer?

    public init(device: CUDADevice) throws {
        self.device = device
        var e: OpaquePointer? = nil
        try device.driver.check(device.driver.cuEventCreate(&e, 0), "cuEventCreate")
        handle = e
    }
    deinit { _ = device.driver.cuEventDestroy(handle) }

    /// Records the event on `stream` (`cuEventRecord`).
    public func record(on stream: CUDAStream) throws {
        try device.driver.check(device.driver.cuEventRecord(handle, stream.handle), "cuEventRecord")
    }

    /// Milliseconds from `start` to this event, after waiting for it (`cuEventElapsedTime`).
    public func milliseconds(since start: CUDAEvent) throws -> Double {
        let d = device.driver
        try d.check(d.cuEventSynchronize(handle), "cuEventSynchronize")
        var ms: Float = 0
        try d.check(d.cuEventElapsedTime(&ms, start.handle, handle), "cuEventElapsedTime")
        return Double(ms)
    }
}

/// Device memory of `byteCount` bytes (`cuMemAlloc`), freed when dropped (`cuMemFree`).
public final class DeviceBuffer: @unchecked Sendable {
    public let device: CUDADevice
    public let pointer: DevicePointer
    public let byteCount: Int

    public init(device: CUDADevice, byteCount: Int) throws {
        self.device = device
        self.byteCount = byteCount
        var p: UInt64 = 0
        try device.driver.check(device.driver.cuMemAlloc(&p, max(byteCount, 16)), "cuMemAlloc(\(byteCount) bytes)")
        pointer = p
    }

    /// A buffer holding `values`.
    public convenience init<T: BitwiseCopyable>(device: CUDADevice, copying values: [T]) throws {
        try self.init(device: device, byteCount: values.count * MemoryLayout<T>.stride)
        try upload(values)
    }

    deinit { _ = device.driver.cuMemFree(pointer) }

    /// Copies `values` to the start of the buffer (`cuMemcpyHtoD`).
    public func upload<T: BitwiseCopyable>(_ values: [T], at byteOffset: Int = 0) throws {
        try values.withUnsafeBytes { try upload($0, at: byteOffset) }
    }

    /// Copies raw bytes to `byteOffset` (`cuMemcpyHtoD`).
    public func upload(_ bytes: UnsafeRawBufferPointer, at byteOffset: Int = 0) throws {
        precondition(byteOffset + bytes.count <= byteCount, "upload past the end of a device buffer")
        guard bytes.count > 0 else { return }
        try device.driver.check(device.driver.cuMemcpyHtoD(pointer + UInt64(byteOffset), bytes.baseAddress!, bytes.count), "cuMemcpyHtoD(\(bytes.count) bytes)")
        // From pageable memory the copy may return before its DMA lands, and kernels on a
        // non-blocking stream would not wait for it: finish it here.
        try device.synchronize()
    }

    /// Copies `count` values of type T from `byteOffset` (`cuMemcpyDtoH`).
    public func download<T: BitwiseCopyable>(_ type: T.Type, count: Int, at byteOffset: Int = 0) throws -> [T] {
        precondition(byteOffset + count * MemoryLayout<T>.stride <= byteCount, "download past the end of a device buffer")
        var out = [T](unsafeUninitializedCapacity: count) { _, n in n = count }
        try out.withUnsafeMutableBytes { try download(into: $0, at: byteOffset) }
        return out
    }

    /// Copies `bytes.count` bytes from `byteOffset` into `bytes` (`cuMemcpyDtoH`).
    public func download(into bytes: UnsafeMutableRawBufferPointer, at byteOffset: Int = 0) throws {
        precondition(byteOffset + bytes.count <= byteCount, "download past the end of a device buffer")
        guard bytes.count > 0 else { return }
        try device.synchronize()  // work on non-blocking streams first
        try device.driver.check(device.driver.cuMemcpyDtoH(bytes.baseAddress!, pointer + UInt64(byteOffset), bytes.count), "cuMemcpyDtoH(\(bytes.count) bytes)")
    }
}
