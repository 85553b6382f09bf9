import Foundation
import HyperAttention
import NPY
import Testing

/// A fresh temporary directory for one test.
func temporaryDirectory() -> String {
    let dir = NSTemporaryDirectory() + "npy-tests-\(UUID().uuidString)"
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// A `.npy` file from raw parts: version, header text, data bytes.
func craft(_ path: String, version: UInt8 = 1, header: String, data: [UInt8], padTo64: Bool = true) {
    let lengthBytes = version == 1 ? 2 : 4
    var dict = header
    if padTo64 {
        while (8 + lengthBytes + dict.utf8.count + 1) % 64 != 0 { dict += " " }
    }
    dict += "\n"
    var bytes: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, version, 0]
    let n = dict.utf8.count
    for i in 0..<lengthBytes { bytes.append(UInt8((n >> (8 * i)) & 0xFF)) }
    bytes += Array(dict.utf8) + data
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

func floatBytes(_ values: [Float]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

@Suite("NPY files")
struct NPYTests {
    @Test("round trip of float32 tensors of rank 1 to 4", arguments: [[7], [3, 5], [2, 3, 4], [2, 1, 3, 5], [1, 0, 4]])
    func roundTrip(shape: [Int]) throws {
        let dir = temporaryDirectory()
        let values = (0..<shape.reduce(1, *)).map { Float($0) * 0.5 - 3 }
        let path = dir + "/t.npy"
        try NPYFile.write(try Tensor(shape: shape, scalars: values), to: path)
        let header = try NPYFile.readHeader(path: path)
        #expect(header.shape == shape && header.dtype == .float32 && header.dataOffset % 64 == 0)
        let back = try NPYFile.read(path: path)
        #expect(back.shape == shape)
        #expect(back.scalars == values)
        // No temporary file is left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["t.npy"])
    }

    @Test("version 2.0 and 3.0 headers, any key order and spacing")
    func versions() throws {
        let dir = temporaryDirectory()
        let data = floatBytes([1, 2, 3, 4, 5, 6])
        craft(dir + "/v2.npy", version: 2, header: "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data: data)
        craft(dir + "/v3.npy", version: 3, header: "{\"shape\":(2,3),\"descr\":\"<f4\",\"fortran_order\":False}", data: data)
        craft(dir + "/odd.npy", version: 1, header: "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data: data, padTo64: false)
        for name in ["v2", "v3", "odd"] {
            let t = try NPYFile.read(path: dir + "/\(name).npy")
            #expect(t.shape == [2, 3] && t.scalars == [1, 2, 3, 4, 5, 6], "\(name)")
        }
    }

    @Test("float16 and float64 are converted exactly (subnormals, infinities included)")
    func conversions() throws {
        let dir = temporaryDirectory()
        let halves: [UInt16] = [0x3C00, 0xC000, 0x0001, 0x7C00, 0xFC00, 0x3555, 0x0000]  // 1, -2, 2^-24, inf, -inf, ~1/3, 0
        craft(dir + "/h.npy", header: "{'descr': '<f2', 'fortran_order': False, 'shape': (7,), }", data: halves.withUnsafeBytes { Array($0) })
        let h = try NPYFile.read(path: dir + "/h.npy")
        #expect(h.scalars == halves.map { Float(Float16(bitPattern: $0)) })
        #expect(h.scalars[2] == Float(pow(2.0, -24.0)))
        let doubles: [Double] = [1.5, -1e-3, 3.0e38, 1e-40]
        craft(dir + "/d.npy", header: "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", data: doubles.withUnsafeBytes { Array($0) })
        #expect(try NPYFile.read(path: dir + "/d.npy").scalars == doubles.map(Float.init))
    }

    @Test("readRows reads one slice of the sequence axis of every head", arguments: [NPYDType.float32, .float16, .float64])
    func rows(dtype: NPYDType) throws {
        let dir = temporaryDirectory()
        let shape = [2, 3, 10, 4], count = 240
        let values = (0..<count).map { Float($0 % 97) / 4 }
        let data: [UInt8]
        switch dtype {
        case .float32: data = floatBytes(values)
        case .float16: data = values.map { Float16($0).bitPattern }.withUnsafeBytes { Array($0) }
        case .float64: data = values.map(Double.init).withUnsafeBytes { Array($0) }
        }
        craft(dir + "/r.npy", header: "{'descr': '\(dtype.rawValue)', 'fortran_order': False, 'shape': (2, 3, 10, 4), }", data: data)
        let all = try NPYFile.read(path: dir + "/r.npy").scalars
        let part = try NPYFile.readRows(path: dir + "/r.npy", rows: 3..<7)
        #expect(part.shape == [2, 3, 4, 4])
        var expected: [Float] = []
        for bh in 0..<6 { expected += all[(bh * 40 + 12)..<(bh * 40 + 28)] }
        #expect(part.scalars == expected)
        #expect(try NPYFile.readRows(path: dir + "/r.npy", rows: 5..<5).count == 0)
        #expect(throws: NPYError.self) { try NPYFile.readRows(path: dir + "/r.npy", rows: 8..<11) }
    }

    @Test("a memory-mapped tensor stays valid after its file is replaced, and copies on write")
    func mappedLifetime() throws {
        let dir = temporaryDirectory(), path = dir + "/m.npy"
        try NPYFile.write(try Tensor(shape: [4], scalars: [1, 2, 3, 4]), to: path)
        var t = try NPYFile.read(path: path)
        try NPYFile.write(try Tensor(shape: [4], scalars: [9, 9, 9, 9]), to: path)
        #expect(t.scalars == [1, 2, 3, 4])
        t.withUnsafeMutableBufferPointer { $0[0] = 7 }
        #expect(t.scalars == [7, 2, 3, 4])
        #expect(try NPYFile.read(path: path).scalars == [9, 9, 9, 9])
    }

    @Test("mapped tensors are unmapped when dropped: read, drop and read again many times")
    func mapDropRepeat() throws {
        let dir = temporaryDirectory(), path = dir + "/r.npy"
        let values = (0..<(64 * 1024)).map { Float($0) }
        try NPYFile.write(try Tensor(shape: [256, 256], scalars: values), to: path)
        func mappings() -> Int {
            ((try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? "").components(separatedBy: path).count - 1
        }
        let before = mappings()
        for i in 0..<200 {
            let t = try NPYFile.read(path: path)
            let ok = t.withUnsafeBufferPointer { $0[i] == Float(i) && $0[65535] == 65535 }
            #expect(ok)
        }
        #expect(mappings() == before)
        var copy: Tensor? = try NPYFile.read(path: path)
        let alias = copy!
        copy = nil  // the alias still holds the mapping
        #expect(alias.scalars == values)
    }

    @Test("parallel writers fill one file that appears at commit")
    func parallelWrite() throws {
        let dir = temporaryDirectory(), path = dir + "/o.npy"
        let shape = [2, 5, 3]
        let temp = NPYFile.temporaryPath(for: path)
        try NPYFile.createForParallelWrite(path: temp, shape: shape)
        let all = (0..<30).map(Float.init)
        // Writer A: rows 0..<2 of both heads; writer B: rows 2..<5.
        for rows in [0..<2, 2..<5] {
            var part: [Float] = []
            for h in 0..<2 { part += all[(h * 15 + rows.lowerBound * 3)..<(h * 15 + rows.upperBound * 3)] }
            try NPYFile.writeRows(path: temp, shape: shape, rows: rows, data: try Tensor(shape: [2, rows.count, 3], scalars: part))
        }
        #expect(!FileManager.default.fileExists(atPath: path))
        try NPYFile.commit(temporaryPath: temp, to: path)
        #expect(try NPYFile.read(path: path).scalars == all)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["o.npy"])
    }

    /// Each malformed file gives one NPYError naming the file and the problem.
    @Test("malformed files are rejected with a message naming the file")
    func malformed() throws {
        let dir = temporaryDirectory()
        let good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }"
        let data = floatBytes([1, 2, 3, 4])
        var cases: [(String, String)] = []  // (file, expected words)
        cases.append(("missing.npy", "no such file"))
        FileManager.default.createFile(atPath: dir + "/empty.npy", contents: Data())
        cases.append(("empty.npy", "empty"))
        FileManager.default.createFile(atPath: dir + "/short.npy", contents: Data([0x93, 0x4E, 0x55]))
        cases.append(("short.npy", "magic"))
        FileManager.default.createFile(atPath: dir + "/magic.npy", contents: Data(Array("PK\u{3}\u{4}not numpy at all".utf8)))
        cases.append(("magic.npy", "magic"))
        craft(dir + "/version.npy", version: 4, header: good, data: data)
        cases.append(("version.npy", "version 4.0"))
        var minor: [UInt8] = Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/version.npy")))
        minor[6] = 1
        minor[7] = 1
        FileManager.default.createFile(atPath: dir + "/minor.npy", contents: Data(minor))
        cases.append(("minor.npy", "version 1.1"))
        var truncated: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, 0x76, 0]
        truncated += Array("{'descr': '<f4'".utf8)
        FileManager.default.createFile(atPath: dir + "/trunchead.npy", contents: Data(truncated))
        cases.append(("trunchead.npy", "truncated header"))
        craft(dir + "/dict.npy", header: "{'descr': '<f4', 'fortran_order': False, 'shape': (2, two), }", data: data)
        cases.append(("dict.npy", "malformed header"))
        craft(dir + "/nokey.npy", header: "{'descr': '<f4', 'shape': (2, 2), }", data: data)
        cases.append(("nokey.npy", "malformed header"))
        for (name, descr) in [("i4", "<i4"), ("be", ">f4"), ("c8", "<c8")] {
            craft(dir + "/\(name).npy", header: "{'descr': '\(descr)', 'fortran_order': False, 'shape': (2, 2), }", data: data)
            cases.append(("\(name).npy", "unsupported dtype '\(descr)'"))
        }
        craft(dir + "/fortran.npy", header: "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", data: data)
        cases.append(("fortran.npy", "Fortran"))
        craft(dir + "/lessdata.npy", header: good, data: Array(data[0..<10]))
        cases.append(("lessdata.npy", "truncated"))
        craft(dir + "/moredata.npy", header: good, data: data + [0, 0, 0, 0])
        cases.append(("moredata.npy", "longer"))
        craft(dir + "/dup.npy", header: "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", data: data)
        cases.append(("dup.npy", "duplicate key"))
        craft(dir + "/extra.npy", header: "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), 'x': 1}", data: data)
        cases.append(("extra.npy", "unexpected key"))
        craft(dir + "/trailing.npy", header: good + " junk", data: data)
        cases.append(("trailing.npy", "after the header"))
        craft(dir + "/negative.npy", header: "{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 2), }", data: data)
        cases.append(("negative.npy", "non-negative integer"))
        craft(dir + "/nobrace.npy", header: "'descr': '<f4', 'fortran_order': False, 'shape': (2, 2)", data: data)
        cases.append(("nobrace.npy", "malformed header"))
        craft(dir + "/huge.npy", header: "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }", data: data)
        cases.append(("huge.npy", "too large"))
        craft(dir + "/notbool.npy", header: "{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 2), }", data: data)
        cases.append(("notbool.npy", "True or False"))
        for (name, words) in cases {
            let path = dir + "/" + name
            do {
                _ = try NPYFile.read(path: path)
                Issue.record("\(name) was accepted")
            } catch let e as NPYError {
                // readHeader fails the same way as read.
                #expect(throws: NPYError.self, "\(name)") { try NPYFile.readHeader(path: path) }
                #expect(e.path == path, "\(name)")
                #expect(e.description.hasPrefix(path + ": "), "\(name)")
                #expect(e.description.contains(words), "\(name): \(e)")
                #expect(!e.description.contains("\n"), "\(name): one line")
            }
        }
    }

    @Test("an unwritable target fails cleanly and leaves nothing behind")
    func unwritable() throws {
        let dir = temporaryDirectory()
        let t = try Tensor(shape: [2], scalars: [1, 2])
        // The messages name the target (not the temporary file) and give strerror's reason.
        let missing = dir + "/no/such/dir/o.npy"
        #expect(throws: NPYError(missing, "cannot write: No such file or directory")) { try NPYFile.write(t, to: missing) }
        try FileManager.default.createDirectory(atPath: dir + "/isdir.npy", withIntermediateDirectories: false)
        #expect(throws: NPYError(dir + "/isdir.npy", "cannot write: is a directory")) { try NPYFile.write(t, to: dir + "/isdir.npy") }
        #expect(throws: NPYError(missing, "cannot write: No such file or directory")) { try NPYFile.checkWritable(path: missing) }
        #expect(throws: NPYError(dir + "/isdir.npy", "cannot write: is a directory")) { try NPYFile.checkWritable(path: dir + "/isdir.npy") }
        // A file where a directory should be.
        FileManager.default.createFile(atPath: dir + "/plain", contents: Data([1]))
        #expect(throws: NPYError(dir + "/plain/o.npy", "cannot write: Not a directory")) { try NPYFile.write(t, to: dir + "/plain/o.npy") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["isdir.npy", "plain"])
    }

    @Test("the native-order spelling '=f4' is read as little-endian")
    func nativeOrder() throws {
        let dir = temporaryDirectory()
        craft(dir + "/n.npy", header: "{'descr': '=f4', 'fortran_order': False, 'shape': (3,), }", data: floatBytes([1, 2, 3]))
        #expect(try NPYFile.read(path: dir + "/n.npy").scalars == [1, 2, 3])
        #expect(NPYDType(descr: "=f8") == .float64 && NPYDType(descr: "<f2") == .float16 && NPYDType(descr: ">f4") == nil)
    }

    @Test("headers too long for version 1.0 are written as 2.0 and read back")
    func longHeader() throws {
        let shape = Array(repeating: 1, count: 23_000)  // '1, ' × 23000 > 65535 bytes
        let bytes = NPYFile.headerBytes(shape: shape)
        #expect(bytes[6] == 2 && bytes.count % 64 == 0 && bytes.last == 0x0A)
        #expect(NPYFile.headerBytes(shape: [8, 64])[6] == 1)
        #expect(String(decoding: NPYFile.headerBytes(shape: [5])[10...], as: UTF8.self).hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }"))
        let dir = temporaryDirectory()
        try NPYFile.write(try Tensor(shape: shape, scalars: [42]), to: dir + "/long.npy")
        let header = try NPYFile.readHeader(path: dir + "/long.npy")
        #expect(header.version == 2 && header.shape == shape && header.dataOffset == bytes.count)
    }

    @Test("offsets past 4 GiB: a sparse 4.8 GB file is mapped and sliced")
    func largeFile() throws {
        let dir = temporaryDirectory(), path = dir + "/big.npy"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let shape = [2, 300_000_000, 2]  // 1.2e9 floats, 4.8 GB, sparse (only the rows written take space)
        let temp = NPYFile.temporaryPath(for: path)
        try NPYFile.createForParallelWrite(path: temp, shape: shape)
        let last = 299_999_998..<300_000_000
        try NPYFile.writeRows(path: temp, shape: shape, rows: last, data: try Tensor(shape: [2, 2, 2], scalars: [1, 2, 3, 4, 5, 6, 7, 8]))
        try NPYFile.commit(temporaryPath: temp, to: path)
        let rows = try NPYFile.readRows(path: path, rows: last)
        #expect(rows.scalars == [1, 2, 3, 4, 5, 6, 7, 8])
        let all = try NPYFile.read(path: path)  // mapped, not read
        #expect(all.shape == shape)
        all.withUnsafeBufferPointer { b in
            #expect(b[b.count - 1] == 8 && b[b.count - 4] == 5 && b[600_000_000 - 1] == 4 && b[0] == 0)
        }
    }

    @Test("files NumPy writes read back, and NumPy reads ours", .enabled(if: numpyAvailable(), "python3 with numpy is not installed"))
    func numpyCrossCheck() throws {
        let dir = temporaryDirectory()
        let script = """
            import numpy as np
            a = np.arange(60, dtype=np.float64).reshape(3, 4, 5) / 8 - 2
            np.save('\(dir)/f64.npy', a); np.save('\(dir)/f32.npy', a.astype(np.float32)); np.save('\(dir)/f16.npy', a.astype(np.float16))
            """
        #expect(runPython(script + "; np.save('\(dir)/one.npy', np.zeros(5, dtype=np.float32))") == 0)
        // Our header bytes are NumPy's, byte for byte.
        for (name, shape) in [("f32", [3, 4, 5]), ("one", [5])] {
            let theirs = try Data(contentsOf: URL(fileURLWithPath: dir + "/\(name).npy"))
            let ours = NPYFile.headerBytes(shape: shape)
            #expect(Array(theirs.prefix(ours.count)) == ours, "\(name)")
        }
        let expected = (0..<60).map { Float(Double($0) / 8 - 2) }
        for name in ["f64", "f32", "f16"] {
            let t = try NPYFile.read(path: dir + "/\(name).npy")
            #expect(t.shape == [3, 4, 5] && t.scalars == expected, "\(name)")
        }
        try NPYFile.write(try Tensor(shape: [3, 4, 5], scalars: expected), to: dir + "/ours.npy")
        #expect(runPython("""
            import numpy as np
            a = np.load('\(dir)/ours.npy')
            assert a.dtype == np.float32 and a.shape == (3, 4, 5), (a.dtype, a.shape)
            assert (a == (np.arange(60).reshape(3, 4, 5) / 8 - 2).astype(np.float32)).all()
            """) == 0)
    }
}

func runPython(_ script: String) -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", script]
    guard (try? p.run()) != nil else { return -1 }
    p.waitUntilExit()
    return p.terminationStatus
}

func numpyAvailable() -> Bool { runPython("import numpy") == 0 }
