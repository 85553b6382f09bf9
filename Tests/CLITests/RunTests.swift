import Foundation
import HyperAttention
import HyperAttentionTestSupport
import NPY
import Testing

/// `hyperattn run` end to end: .npy in, .npy out, checked against the float64 reference; every
/// bad input gives one error line, a non-zero exit and no output file.
@Suite("hyperattn run")
struct RunTests {
    /// A directory with q/k/v files of the given shapes (float32 unless `dtype` says otherwise).
    func inputs(q: [Int], k: [Int], v: [Int], seed: UInt64 = 1) throws -> (dir: String, q: Tensor, k: Tensor, v: Tensor) {
        let dir = NSTemporaryDirectory() + "run-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let tq = TestData.gaussian(q, seed: seed), tk = TestData.gaussian(k, seed: seed + 1), tv = TestData.gaussian(v, seed: seed + 2)
        try NPYFile.write(tq, to: dir + "/q.npy")
        try NPYFile.write(tk, to: dir + "/k.npy")
        try NPYFile.write(tv, to: dir + "/v.npy")
        return (dir, tq, tk, tv)
    }

    func files(_ dir: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() }

    @Test("exact and short-sequence hyper match the float64 reference", arguments: [
        (["--exact"], false), (["--exact", "--causal"], true), ([], false), (["--causal"], true),
    ])
    func matchesReference(flags: [String], causal: Bool) throws {
        let (dir, q, k, v) = try inputs(q: [2, 300, 32], k: [1, 300, 32], v: [1, 300, 24])
        let r = try HyperattnBinary.run(["run", "--q", dir + "/q.npy", "--k", dir + "/k.npy", "--v", dir + "/v.npy",
                                         "--out", dir + "/o.npy", "--lse", dir + "/l.npy"] + flags)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("wrote"))
        let o = try NPYFile.read(path: dir + "/o.npy"), l = try NPYFile.read(path: dir + "/l.npy")
        #expect(o.shape == [2, 300, 24] && l.shape == [2, 300])
        // n = 300 < min-seq-len: hyper is exact here too.
        let ref = try referenceAttention(query: q, key: k, value: v, causal: causal)
        #expect(ErrorMeasure.maxRelative(o.scalars, ref.output) <= 1e-5)
        #expect(ErrorMeasure.maxAbsoluteOrRelative(l.scalars, ref.logSumExp) <= 1e-5)
        #expect(files(dir) == ["k.npy", "l.npy", "o.npy", "q.npy", "v.npy"])
    }

    @Test("hyper output equals the library call on the same inputs and options")
    func hyperEqualsLibrary() throws {
        let (dir, q, k, v) = try inputs(q: [1, 2, 3000, 16], k: [1, 2, 3000, 16], v: [1, 2, 3000, 16])
        let r = try HyperattnBinary.run(["run", "--q", dir + "/q.npy", "--k", dir + "/k.npy", "--v", dir + "/v.npy", "--out", dir + "/o.npy",
                                         "--causal", "--min-seq-len", "512", "--block-size", "64", "--samples", "32", "--seed", "5", "--threads", "2"])
        #expect(r.status == 0, "\(r.stderr)")
        let expected = try attention(query: q, key: k, value: v, options: AttentionOptions(causal: true, blockSize: 64, samples: 32, minSeqLen: 512, seed: 5, threads: 2))
        #expect(try NPYFile.read(path: dir + "/o.npy").scalars == expected.output.scalars)
    }

    @Test("float16 and float64 inputs are accepted")
    func otherDtypes() throws {
        let (dir, _, _, _) = try inputs(q: [50, 16], k: [50, 16], v: [50, 16])
        #expect(runPythonScript("""
            import numpy as np
            for n in 'qkv':
                a = np.load('\(dir)/' + n + '.npy')
                np.save('\(dir)/' + n + '16.npy', a.astype(np.float16)); np.save('\(dir)/' + n + '64.npy', a.astype(np.float64))
            """) == 0 || !numpyPresent())
        guard numpyPresent() else { return }
        for suffix in ["16", "64"] {
            let r = try HyperattnBinary.run(["run", "--q", dir + "/q\(suffix).npy", "--k", dir + "/k\(suffix).npy", "--v", dir + "/v\(suffix).npy", "--out", dir + "/o\(suffix).npy"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try NPYFile.read(path: dir + "/o\(suffix).npy").shape == [50, 16])
        }
    }

    /// (extra arguments or file edits, words the one error line must contain)
    @Test("bad input: one error line, non-zero exit, no output file")
    func badInput() throws {
        let (dir, q, _, _) = try inputs(q: [2, 40, 8], k: [2, 40, 8], v: [2, 40, 8])
        let d = dir + "/"
        try NPYFile.write(try Tensor(shape: [2, 39, 8], scalars: Array(repeating: 0.5, count: 624)), to: d + "k39.npy")
        try NPYFile.write(try Tensor(shape: [3, 40, 8], scalars: Array(repeating: 0.5, count: 960)), to: d + "k3heads.npy")
        try NPYFile.write(try Tensor(shape: [2, 40, 9], scalars: Array(repeating: 0.5, count: 720)), to: d + "kd9.npy")
        try NPYFile.write(try Tensor(shape: [2, 0, 8], scalars: []), to: d + "q0.npy")
        try NPYFile.write(try Tensor(shape: [2, 40, 0], scalars: []), to: d + "q_d0.npy")
        var nan = q.scalars
        nan[333] = .infinity
        try NPYFile.write(try Tensor(shape: [2, 40, 8], scalars: nan), to: d + "qinf.npy")
        let qFile = try Data(contentsOf: URL(fileURLWithPath: d + "q.npy"))
        _ = FileManager.default.createFile(atPath: d + "trunc.npy", contents: qFile.prefix(1000))
        _ = FileManager.default.createFile(atPath: d + "trunchead.npy", contents: qFile.prefix(100))
        _ = FileManager.default.createFile(atPath: d + "empty.npy", contents: Data())
        _ = FileManager.default.createFile(atPath: d + "garbage.npy", contents: Data("hello".utf8))
        let qData = try Data(contentsOf: URL(fileURLWithPath: d + "q.npy")).dropFirst(128)  // 2560 bytes of data
        writeRawNPY(d + "int.npy", header: "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 40, 8), }", data: qData)
        writeRawNPY(d + "fortran.npy", header: "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 40, 8), }", data: qData)
        writeRawNPY(d + "big.npy", header: "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 40, 8), }", data: qData)
        writeRawNPY(d + "rank5.npy", header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 1, 40, 8), }", data: qData)
        let base = ["--q", d + "q.npy", "--k", d + "k.npy", "--v", d + "v.npy"]
        func with(_ flag: String, _ file: String) -> [String] {
            var a = base
            a[a.firstIndex(of: flag)! + 1] = d + file
            return a
        }
        let cases: [([String], String)] = [
            (with("--q", "missing.npy"), "--q \(d)missing.npy: no such file"),
            (with("--k", "trunc.npy"), "--k \(d)trunc.npy: file is truncated: header says 2×40×8 float32 (2560 bytes of data) but only 872 bytes follow the header"),
            (with("--v", "trunchead.npy"), "--v \(d)trunchead.npy: truncated header"),
            (with("--q", "empty.npy"), "--q \(d)empty.npy: empty file"),
            (with("--k", ""), "--k"),
            (with("--v", "garbage.npy"), "--v \(d)garbage.npy: not a .npy file"),
            (with("--q", "int.npy"), "--q \(d)int.npy: unsupported dtype '<i4'"),
            (with("--k", "big.npy"), "--k \(d)big.npy: unsupported dtype '>f4'"),
            (with("--v", "fortran.npy"), "--v \(d)fortran.npy: Fortran-order"),
            (with("--q", "rank5.npy"), "--q \(d)rank5.npy: expected shape"),
            (with("--k", "k39.npy"), "--v"),
            (with("--k", "k3heads.npy"), "heads"),
            (with("--k", "kd9.npy"), "head dim"),
            (with("--q", "q0.npy"), "n must be ≥ 1"),
            (with("--q", "q_d0.npy"), "d must be ≥ 1"),
            (with("--q", "qinf.npy"), "--q \(d)qinf.npy: non-finite value inf at flat index 333"),
            (base + ["--block-size", "0"], "--block-size"),
            (base + ["--samples", "0"], "--samples"),
            (base + ["--lsh-bits", "0"], "--lsh-bits"),
            (base + ["--estimator", "bogus"], "unknown estimator 'bogus'"),
            (base + ["--threads", "0"], "--threads"),
            (with("--k", "k39.npy") + ["--causal"], "--v"),
            (base + ["--lse", d + "k.npy"], "--lse"),
            (base + ["--lse", d + "o.npy"], "--lse"),
            (base + ["--lse", d + "nodir/l.npy"], "--lse"),
        ]
        for (arguments, words) in cases {
            let r = try HyperattnBinary.run(["run"] + arguments + ["--out", d + "o.npy"])
            #expect(r.status != 0, "\(arguments)")
            let lines = r.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(arguments): \(r.stderr)")
            #expect(r.stderr.hasPrefix("hyperattn: error: "), "\(r.stderr)")
            #expect(r.stderr.contains(words), "\(arguments): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: d + "o.npy"))
        }
        // Unwritable outputs, and an output that is an input.
        for (out, words) in [(d + "nodir/o.npy", "--out"), (d, "--out"), (d + "q.npy", "--q")] {
            let r = try HyperattnBinary.run(["run"] + base + ["--out", out])
            #expect(r.status != 0 && r.stderr.contains(words) && r.stderr.split(separator: "\n").count == 1, "\(out): \(r.stderr)")
        }
        #expect(files(dir).allSatisfy { !$0.hasPrefix(".") && $0 != "o.npy" }, "\(files(dir))")
    }

    @Test("ranks 2 and 4, GQA, d_v ≠ d, explicit scale: exact output matches the reference", arguments: [
        ([300, 16], [200, 16], [200, 8]), ([2, 2, 100, 16], [2, 1, 120, 16], [2, 1, 120, 24]),
    ])
    func ranks(q qShape: [Int], k kShape: [Int], v vShape: [Int]) throws {
        let (dir, q, k, v) = try inputs(q: qShape, k: kShape, v: vShape, seed: 7)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try HyperattnBinary.run(["run", "--q", dir + "/q.npy", "--k", dir + "/k.npy", "--v", dir + "/v.npy",
                                         "--out", dir + "/o.npy", "--lse", dir + "/l.npy", "--exact", "--scale", "0.3", "--threads", "2"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("exact, non-causal") && r.stdout.contains("GFLOP/s") && r.stdout.contains(dir + "/o.npy"), "\(r.stdout)")
        let o = try NPYFile.read(path: dir + "/o.npy"), l = try NPYFile.read(path: dir + "/l.npy")
        #expect(o.shape == Array(qShape.dropLast()) + [vShape.last!] && l.shape == Array(qShape.dropLast()))
        let ref = try referenceAttention(query: q, key: k, value: v, causal: false, scale: 0.3)
        #expect(ErrorMeasure.maxRelative(o.scalars, ref.output) <= 1e-5)
        #expect(ErrorMeasure.maxAbsoluteOrRelative(l.scalars, ref.logSumExp) <= 1e-5)
    }
}

/// A `.npy` file from a header dictionary and raw data (for dtypes and orders NPY does not write).
func writeRawNPY(_ path: String, header: String, data: Data) {
    var dict = header
    while (10 + dict.utf8.count + 1) % 64 != 0 { dict += " " }
    dict += "\n"
    var bytes: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(dict.utf8.count & 0xFF), UInt8(dict.utf8.count >> 8)]
    bytes += Array(dict.utf8) + Array(data)
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

func runPythonScript(_ script: String) -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", script]
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return -1 }
    p.waitUntilExit()
    return p.terminationStatus
}

func numpyPresent() -> Bool { runPythonScript("import numpy") == 0 }
