#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import HyperAttention

/// An element type of the `.npy` files we read: little-endian IEEE floats.
public enum NPYDType: String, Sendable, CaseIterable {
    case float16 = "<f2"
    case float32 = "<f4"
    case float64 = "<f8"

    /// The dtype of a header's `descr`: `<f2`, `<f4`, `<f8`, or the native-order spellings
    /// `=f2` / `=f4` / `=f8` (little-endian on the machines this runs on); nil for anything else.
    public init?(descr: String) {
        var d = descr
        #if _endian(little)
        if d.hasPrefix("=") { d = "<" + d.dropFirst() }
        #endif
        self.init(rawValue: d)
    }

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .float16: return 2
        case .float32: return 4
        case .float64: return 8
        }
    }
}

/// The parsed header of a `.npy` file (format versions 1.0, 2.0 and 3.0).
public struct NPYHeader: Sendable, Equatable {
    public var version: Int
    public var dtype: NPYDType
    public var shape: [Int]
    /// Byte offset of the first element.
    public var dataOffset: Int
    /// Number of elements: the product of `shape` (headers whose product overflows are rejected
    /// by `readHeader`).
    public var count: Int { shape.reduce(1, *) }
    /// Bytes of data after the header.
    public var dataByteCount: Int { count * dtype.size }
}

/// A `.npy` problem: one line naming the file and what is wrong with it.
public struct NPYError: Error, CustomStringConvertible, Equatable {
    public var path: String
    public var message: String
    public init(_ path: String, _ message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "\(path): \(message)" }
}

/// Reading and writing NumPy `.npy` files of float tensors in C order.
///
/// Reading: float32 data is memory-mapped (copy-on-write, no copy made); float16 and float64 are
/// converted in 1 MiB chunks, so a file is never held twice. `readRows` reads one rank's rows of
/// the sequence axis with `pread`, without touching the rest of the file.
/// Writing: float32, atomically (a temporary file in the same directory, fsync, rename); for
/// several writers of one file, `createForParallelWrite` / `writeRows` / `commit`.
public enum NPYFile {
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY

    // MARK: - Reading

    /// Reads and checks the header: magic, version, the header dictionary, the dtype (little-endian
    /// float16/32/64), C order, and that the file holds exactly the data the shape says.
    public static func readHeader(path: String) throws -> NPYHeader {
        let file = try OpenFile(path: path, flags: O_RDONLY)
        return try readHeader(file)
    }

    static func readHeader(_ file: OpenFile) throws -> NPYHeader {
        let path = file.path
        let size = try file.size()
        if size == 0 { throw NPYError(path, "empty file (not a .npy file)") }
        var prefix = [UInt8](repeating: 0, count: min(12, size))
        try file.read(into: &prefix, at: 0)
        guard prefix.count >= 8, Array(prefix[0..<6]) == magic else {
            throw NPYError(path, "not a .npy file (bad magic; expected \\x93NUMPY)")
        }
        let major = Int(prefix[6])
        let lengthBytes: Int
        switch (major, prefix[7]) {
        case (1, 0): lengthBytes = 2
        case (2, 0), (3, 0): lengthBytes = 4
        default: throw NPYError(path, "unsupported .npy format version \(major).\(prefix[7]) (expected 1.0, 2.0 or 3.0)")
        }
        guard prefix.count >= 8 + lengthBytes else { throw NPYError(path, "truncated header") }
        var headerLength = 0
        for i in 0..<lengthBytes { headerLength |= Int(prefix[8 + i]) << (8 * i) }
        let dataOffset = 8 + lengthBytes + headerLength
        guard dataOffset <= size else {
            throw NPYError(path, "truncated header: it declares \(headerLength) bytes but the file has \(size - 8 - lengthBytes)")
        }
        var headerBytes = [UInt8](repeating: 0, count: headerLength)
        try file.read(into: &headerBytes, at: 8 + lengthBytes)
        guard let text = String(validating: headerBytes, as: UTF8.self) else {
            throw NPYError(path, "header is not valid text")
        }
        let dict = try HeaderDictionary(text, path: path)
        guard let dtype = NPYDType(descr: dict.descr) else {
            let hint = dict.descr.hasPrefix(">") ? "; big-endian data is not supported" : ""
            throw NPYError(path, "unsupported dtype '\(dict.descr)' (expected little-endian float16/float32/float64: '<f2', '<f4' or '<f8'\(hint))")
        }
        if dict.fortranOrder { throw NPYError(path, "Fortran-order arrays are not supported (save with np.ascontiguousarray)") }
        let header = NPYHeader(version: major, dtype: dtype, shape: dict.shape, dataOffset: dataOffset)
        // The data size, refusing shapes whose size does not fit in an Int.
        var expected = dtype.size
        for extent in dict.shape {
            let (product, overflow) = expected.multipliedReportingOverflow(by: extent)
            guard !overflow else {
                throw NPYError(path, "malformed header: shape \(dict.shape) is too large")
            }
            expected = product
        }
        let actual = size - dataOffset
        if actual != expected {
            let shape = dict.shape.map(String.init).joined(separator: "×")
            throw NPYError(path, actual < expected
                ? "file is truncated: header says \(shape) \(dtype) (\(expected) bytes of data) but only \(actual) bytes follow the header"
                : "file is longer than its header says: \(shape) \(dtype) is \(expected) bytes of data but \(actual) bytes follow the header")
        }
        return header
    }

    /// The whole array as a float32 tensor of the file's shape.
    public static func read(path: String) throws -> Tensor {
        let file = try OpenFile(path: path, flags: O_RDONLY)
        let header = try readHeader(file)
        let count = header.count
        if header.dtype == .float32, header.dataOffset % 4 == 0, count > 0 {
            // Map the file copy-on-write and adopt the floats in place.
            let length = header.dataOffset + count * 4
            guard let base = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE, file.descriptor, 0), base != MAP_FAILED else {
                throw NPYError(path, "cannot map: \(String(cString: strerror(errno)))")
            }
            let floats = (base + header.dataOffset).bindMemory(to: Float.self, capacity: count)
            let address = UInt(bitPattern: base)
            return Tensor(shape: header.shape, adopting: floats) {
                _ = munmap(UnsafeMutableRawPointer(bitPattern: address), length)
            }
        }
        var thrown: Error?
        let tensor = Tensor(shape: header.shape) { out in
            do { try convert(file, header: header, elementOffset: 0, count: count, into: out.baseAddress!) } catch { thrown = error }
        }
        if let thrown { throw thrown }
        return tensor
    }

    /// Rows `rows` of the second-to-last axis (the sequence axis n of `[..., n, d]`), for every
    /// index of the leading axes: shape `[..., rows.count, d]`. Reads only those bytes.
    public static func readRows(path: String, rows: Range<Int>) throws -> Tensor {
        let file = try OpenFile(path: path, flags: O_RDONLY)
        let header = try readHeader(file)
        let s = header.shape
        guard s.count >= 2 else { throw NPYError(path, "expected at least 2 dimensions [..., n, d], got shape \(s)") }
        let n = s[s.count - 2], d = s[s.count - 1]
        guard rows.lowerBound >= 0, rows.upperBound <= n else {
            throw NPYError(path, "rows \(rows.lowerBound)..<\(rows.upperBound) are outside 0..<\(n)")
        }
        let leading = s.dropLast(2).reduce(1, *)
        var outShape = s
        outShape[s.count - 2] = rows.count
        var thrown: Error?
        let tensor = Tensor(shape: outShape) { out in
            do {
                for l in 0..<leading {
                    try convert(file, header: header, elementOffset: (l * n + rows.lowerBound) * d, count: rows.count * d,
                                into: out.baseAddress! + l * rows.count * d)
                }
            } catch { thrown = error }
        }
        if let thrown { throw thrown }
        return tensor
    }

    /// Reads `count` elements starting at element `elementOffset` and converts them to Float,
    /// 1 MiB at a time.
    static func convert(_ file: OpenFile, header: NPYHeader, elementOffset: Int, count: Int, into out: UnsafeMutablePointer<Float>) throws {
        let size = header.dtype.size
        if header.dtype == .float32 {
            // Same representation: read straight into place.
            try file.read(into: UnsafeMutableRawBufferPointer(start: out, count: count * 4), at: header.dataOffset + elementOffset * 4)
            return
        }
        let chunk = max(1, (1 << 20) / size)
        var buffer = [UInt8](repeating: 0, count: min(count, chunk) * size)
        var done = 0
        while done < count {
            let n = min(chunk, count - done)
            try buffer.withUnsafeMutableBytes { raw in
                try file.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<(n * size)]), at: header.dataOffset + (elementOffset + done) * size)
            }
            buffer.withUnsafeBytes { raw in
                let dst = out + done
                switch header.dtype {
                case .float32:
                    fatalError("float32 is read in place")
                case .float64:
                    for i in 0..<n { dst[i] = Float(raw.loadUnaligned(fromByteOffset: i * 8, as: Double.self)) }
                case .float16:
                    for i in 0..<n { dst[i] = Float(Float16(bitPattern: raw.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))) }
                }
            }
            done += n
        }
    }

    // MARK: - Writing

    /// The header bytes of a float32 array of `shape`: version 1.0 (2.0 if it would not fit),
    /// padded with spaces and a newline so that the data starts on a multiple of 64, as NumPy does.
    public static func headerBytes(shape: [Int]) -> [UInt8] {
        let tuple = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': \(tuple), }"
        for (version, lengthBytes) in [(1, 2), (2, 4)] {
            let unpadded = 8 + lengthBytes + dict.utf8.count + 1
            let total = (unpadded + 63) / 64 * 64
            let length = total - 8 - lengthBytes
            if version == 1 && length > 0xFFFF { continue }
            var bytes = magic + [UInt8(version), 0]
            for i in 0..<lengthBytes { bytes.append(UInt8((length >> (8 * i)) & 0xFF)) }
            bytes += Array(dict.utf8)
            bytes += [UInt8](repeating: 0x20, count: total - unpadded)
            bytes.append(0x0A)
            return bytes
        }
        fatalError("unreachable")
    }

    /// Writes `tensor` as a float32 `.npy` file at `path`, atomically: the target either keeps its
    /// old content or holds the whole new file, never a part.
    /// Errors name `path` (the temporary file is an implementation detail).
    public static func write(_ tensor: Tensor, to path: String) throws {
        var info = stat()
        if stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR { throw NPYError(path, "cannot write: is a directory") }
        let temp = temporaryPath(for: path)
        var created = false
        do {
            let file = try OpenFile(path: temp, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o644, purpose: "cannot write")
            created = true
            let header = headerBytes(shape: tensor.shape)
            try file.write(header, at: 0)
            try tensor.withUnsafeBufferPointer { try file.write(UnsafeRawBufferPointer($0), at: header.count) }
            try file.sync()
            try commit(temporaryPath: temp, to: path)
        } catch let error as NPYError {
            if created { unlink(temp) }
            throw NPYError(path, error.message)
        }
    }

    /// A temporary name in the target's directory: `.NAME.tmp-PID-RANDOM`.
    public static func temporaryPath(for path: String) -> String {
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        return "\(dir).\(name).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Checks that a file can be created in `path`'s directory (before a long computation).
    public static func checkWritable(path: String) throws {
        let probe = temporaryPath(for: path)
        let fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw NPYError(path, "cannot write: \(String(cString: strerror(errno)))") }
        close(fd)
        unlink(probe)
        var info = stat()
        if stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR { throw NPYError(path, "cannot write: is a directory") }
    }

    /// Creates `path` (a temporary name) holding the header of a float32 array of `shape` and
    /// room for all its data, for several processes to fill with `writeRows`.
    /// - Returns: the data offset.
    @discardableResult
    public static func createForParallelWrite(path: String, shape: [Int]) throws -> Int {
        let header = headerBytes(shape: shape)
        let file = try OpenFile(path: path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644, purpose: "cannot write")
        do {
            try file.write(header, at: 0)
            if ftruncate(file.descriptor, off_t(header.count + shape.reduce(1, *) * 4)) != 0 {
                throw NPYError(path, "cannot write: \(String(cString: strerror(errno)))")
            }
        } catch {
            unlink(path)
            throw error
        }
        return header.count
    }

    /// Writes `data` (`[..., rows.count, d]`) into rows `rows` of the sequence axis of the float32
    /// array `shape` in `path` (made by `createForParallelWrite`), and syncs it.
    public static func writeRows(path: String, shape: [Int], rows: Range<Int>, data: Tensor) throws {
        guard shape.count >= 2 else { throw NPYError(path, "expected at least 2 dimensions, got \(shape)") }
        let n = shape[shape.count - 2], d = shape[shape.count - 1]
        let leading = shape.dropLast(2).reduce(1, *)
        guard rows.lowerBound >= 0, rows.upperBound <= n else {
            throw NPYError(path, "rows \(rows.lowerBound)..<\(rows.upperBound) are outside 0..<\(n)")
        }
        guard data.count == leading * rows.count * d else {
            throw NPYError(path, "cannot write rows \(rows.lowerBound)..<\(rows.upperBound): \(data.shape) is not \(leading) × \(rows.count) rows × \(d)")
        }
        let offset = headerBytes(shape: shape).count
        let file = try OpenFile(path: path, flags: O_WRONLY, purpose: "cannot write")
        try data.withUnsafeBufferPointer { src in
            for l in 0..<leading where !rows.isEmpty {
                let part = UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: src[(l * rows.count * d)..<((l + 1) * rows.count * d)]))
                try file.write(part, at: offset + ((l * n + rows.lowerBound) * d) * 4)
            }
        }
        try file.sync()
    }

    /// Makes a finished temporary file the target: fsync, rename over `path`, fsync the directory.
    public static func commit(temporaryPath: String, to path: String) throws {
        let file = try OpenFile(path: temporaryPath, flags: O_RDONLY, purpose: "cannot write")
        try file.sync()
        if rename(temporaryPath, path) != 0 {
            throw NPYError(path, "cannot write: \(String(cString: strerror(errno)))")
        }
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[...$0]) } ?? "."
        let dfd = open(dir, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }
}

/// A file descriptor closed when the value goes away; I/O errors become `NPYError`s.
final class OpenFile {
    let path: String
    let descriptor: Int32

    init(path: String, flags: Int32, mode: mode_t = 0, purpose: String? = nil) throws {
        self.path = path
        descriptor = open(path, flags | O_CLOEXEC, mode)
        if descriptor < 0 {
            let e = errno
            if purpose == nil && e == ENOENT { throw NPYError(path, "no such file") }
            throw NPYError(path, "\(purpose ?? "cannot read"): \(String(cString: strerror(e)))")
        }
        var info = stat()
        if fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
            close(descriptor)
            throw NPYError(path, "\(purpose ?? "cannot read"): is a directory")
        }
    }

    deinit { close(descriptor) }

    func size() throws -> Int {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw NPYError(path, "cannot read: \(String(cString: strerror(errno)))") }
        return Int(info.st_size)
    }

    func read(into bytes: inout [UInt8], at offset: Int) throws {
        try bytes.withUnsafeMutableBytes { try read(into: $0, at: offset) }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw NPYError(path, "cannot read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw NPYError(path, "file is truncated (unexpected end of file)") }
            done += n
        }
    }

    func write(_ bytes: [UInt8], at offset: Int) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < buffer.count {
            let n = pwrite(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw NPYError(path, "cannot write: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    func sync() throws {
        if fsync(descriptor) != 0 { throw NPYError(path, "cannot write: \(String(cString: strerror(errno)))") }
    }
}
