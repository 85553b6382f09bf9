// MPIChecks: small programs that exercise every wrapper of the `MPI` module and check
// closed-form results on every rank.
//
//     mpirun -np P .build/release/MPIChecks [all|list|CHECK...]
//
// Each check runs on every rank; a check passes when it passes on all ranks (agreed with an
// allReduce). Rank 0 prints one line per check and `N passed, N failed`; the exit status is
// non-zero on any failure. Two programs are meant to fail and are not part of `all`:
// `expected-failure` (a check that fails on purpose) and `abort` (the last rank calls
// MPI_Abort while the others wait in a barrier); scripts/test-mpi.sh checks that both make
// mpirun exit non-zero.
import MPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Harness

/// What one check sees: the world communicator and a place to record failed expectations.
final class CheckContext {
    let world: Communicator
    var failures: [String] = []

    init(world: Communicator) { self.world = world }

    var rank: Int { world.rank }
    var size: Int { world.size }

    /// Records a failure unless `condition` holds.
    func expect(_ condition: Bool, _ message: @autoclosure () -> String, line: Int = #line) {
        if !condition { failures.append("line \(line): \(message())") }
    }

    /// Records a failure unless `actual == expected`.
    func expectEqual<T: Equatable>(_ actual: T, _ expected: T, _ what: @autoclosure () -> String, line: Int = #line) {
        if actual != expected { failures.append("line \(line): \(what()): got \(actual), expected \(expected)") }
    }
}

struct Check {
    let name: String
    let run: (CheckContext) throws -> Void
}

func fact(_ n: Int) -> Int { n <= 1 ? 1 : (2...n).reduce(1, *) }

// MARK: - Environment and communicators

let environmentCheck = Check(name: "environment") { c in
    c.expect(MPIEnvironment.isInitialized, "isInitialized")
    c.expect(!MPIEnvironment.isFinalized, "!isFinalized")
    c.expect(MPIEnvironment.isActive, "isActive")
    let level = try MPIEnvironment.providedThreadLevel()
    c.expect(level >= .single, "provided thread level \(level)")
    c.expectEqual(try MPIEnvironment.initialize(threadLevel: .funneled), level, "initialize() again returns the provided level")
    let t0 = MPIEnvironment.wallTime
    var x = 0.0
    for i in 0..<100_000 { x += Double(i).squareRoot() }
    let t1 = MPIEnvironment.wallTime
    c.expect(t1 >= t0 && x > 0, "wallTime goes forward: \(t0) → \(t1)")
    c.expect(MPIEnvironment.wallTimeResolution > 0, "wallTimeResolution > 0")
    c.expect(!(try MPIEnvironment.processorName()).isEmpty, "processor name is not empty")
}

let rankSizeCheck = Check(name: "rank-size") { c in
    c.expect((0..<c.size).contains(c.rank), "rank \(c.rank) in 0..<\(c.size)")
    c.expectEqual(try c.world.allGather(c.rank), Array(0..<c.size), "allGather(rank)")
    c.expectEqual(try c.world.allReduce(1, operation: .sum), c.size, "allReduce(1) = size")
    let solo = Communicator.selfCommunicator
    c.expectEqual(solo.size, 1, "selfCommunicator.size")
    c.expectEqual(solo.rank, 0, "selfCommunicator.rank")
    c.expectEqual(try solo.allReduce(c.rank + 5, operation: .sum), c.rank + 5, "allReduce over self")
    c.expect(Communicator.world === c.world, "world is one object")
}

let barrierCheck = Check(name: "barrier") { c in
    for _ in 0..<10 { try c.world.barrier() }
    // A value written before the barrier on every rank is visible through a collective after it.
    c.expectEqual(try c.world.allReduce(c.rank, operation: .max), c.size - 1, "max rank after barrier")
}

let splitCheck = Check(name: "split") { c in
    let color = c.rank % 2
    let sameParity = (0..<c.size).filter { $0 % 2 == color }
    guard let half = try c.world.split(color: color) else { c.expect(false, "split returned nil"); return }
    c.expectEqual(half.size, sameParity.count, "even/odd size")
    c.expectEqual(half.rank, c.rank / 2, "even/odd rank")
    c.expectEqual(try half.allReduce(c.rank, operation: .sum), sameParity.reduce(0, +), "sum of same-parity world ranks")
    c.expectEqual(try half.allGather(c.rank), sameParity, "world ranks in sub-rank order")

    // key reverses the order
    guard let reversed = try c.world.split(color: color, key: -c.rank) else { c.expect(false, "split returned nil"); return }
    c.expectEqual(reversed.rank, sameParity.count - 1 - c.rank / 2, "reversed sub-rank")

    // nil color (MPI_UNDEFINED) on rank 0: no communicator there
    let rest = try c.world.split(color: c.rank == 0 ? nil : 0)
    if c.rank == 0 {
        c.expect(rest == nil, "rank 0 with color nil gets nil")
    } else if let rest {
        c.expectEqual(rest.size, c.size - 1, "the others' size")
        c.expectEqual(rest.rank, c.rank - 1, "the others' rank")
        c.expectEqual(try rest.allReduce(1, operation: .sum), c.size - 1, "allReduce on the others")
    } else {
        c.expect(false, "rank \(c.rank) got nil")
    }
}

let duplicateCheck = Check(name: "duplicate") { c in
    let dup = try c.world.duplicate()
    c.expectEqual(dup.size, c.size, "dup size")
    c.expectEqual(dup.rank, c.rank, "dup rank")
    c.expectEqual(try dup.allReduce(c.rank + 1, operation: .sum), c.size * (c.size + 1) / 2, "allReduce on dup")
    // A message on dup never matches a receive on world.
    let outgoing = try dup.immediateSend([Int32(42)], to: c.rank, tag: 7)
    let pending = try dup.probe(from: c.rank, tag: 7)
    c.expectEqual(pending.tag, 7, "probe tag on dup")
    c.expect(try c.world.probeIfAvailable(from: c.rank, tag: 7) == nil, "dup's message is invisible on world")
    let (values, _) = try dup.receive(Int32.self, from: c.rank, tag: 7)
    try outgoing.wait()
    c.expectEqual(values, [42], "self message on dup")
    // Many derived communicators created and dropped: each is freed in deinit.
    for _ in 0..<200 { _ = try c.world.duplicate() }
    try c.world.barrier()
}

// MARK: - Collectives

let broadcastCheck = Check(name: "broadcast") { c in
    let root = c.size - 1
    var array = c.rank == root ? (0..<5).map { Float(root * 10 + $0) } : [Float](repeating: -1, count: 5)
    try c.world.broadcast(&array, root: root)
    c.expectEqual(array, (0..<5).map { Float(root * 10 + $0) }, "inout broadcast from \(root)")
    c.expectEqual(try c.world.broadcast(c.rank == 0 ? 2.5 : 0.0, root: 0), 2.5, "scalar broadcast")
    c.expectEqual(try c.world.broadcast(UInt8(c.rank == root ? 200 : 1), root: root), 200, "UInt8 broadcast")
    let sent = (0..<(3 + c.size)).map { UInt64($0 * $0) }
    let received = try c.world.broadcast(c.rank == 0 ? sent : [], root: 0)
    c.expectEqual(received, sent, "broadcast of unknown length")
    let empty: [Double] = try c.world.broadcast([Double](), root: 0)
    c.expectEqual(empty, [], "empty broadcast")
}

func reduceChecks<T: MPIReducible>(_ type: T.Type, _ c: CheckContext) throws {
    let p = c.size, r = c.rank
    let mine = T(exactly: r + 1)!
    let name = "\(T.self)"
    let root = p / 2
    let expected: [ReductionOperation: Int] = [.sum: p * (p + 1) / 2, .product: fact(p), .max: p, .min: 1]
    for operation in ReductionOperation.allCases {
        let want = T(exactly: expected[operation]!)!
        let reduced = try c.world.reduce(mine, operation: operation, root: root)
        if r == root { c.expectEqual(reduced, want, "reduce \(operation) \(name) on root") }
        else { c.expect(reduced == nil, "reduce result off root is nil") }
        c.expectEqual(try c.world.allReduce(mine, operation: operation), want, "allReduce \(operation) \(name)")
    }
    // arrays, in place, explicit buffers
    let two = T(exactly: 2)!
    let pair = [mine, mine * two]
    let s = T(exactly: p * (p + 1) / 2)!
    c.expectEqual(try c.world.allReduce(pair, operation: .sum), [s, s * two], "allReduce array \(name)")
    var inPlace = pair
    try c.world.allReduce(inPlace: &inPlace, operation: .max)
    c.expectEqual(inPlace, [T(exactly: p)!, T(exactly: 2 * p)!], "allReduce in place max \(name)")
    var out = [T](repeating: .zero, count: 2)
    try pair.withUnsafeBufferPointer { send in
        try out.withUnsafeMutableBufferPointer { try c.world.allReduce(send, into: $0, operation: .min) }
    }
    c.expectEqual(out, [1, two], "allReduce buffer min \(name)")
    let reducedArray = try c.world.reduce(pair, operation: .sum, root: 0)
    if r == 0 { c.expectEqual(reducedArray, [s, s * two], "reduce array \(name)") }
}

let reduceCheck = Check(name: "reduce") { c in
    try reduceChecks(Float.self, c)
    try reduceChecks(Double.self, c)
    try reduceChecks(Int8.self, c)
    try reduceChecks(Int16.self, c)
    try reduceChecks(Int32.self, c)
    try reduceChecks(Int64.self, c)
    try reduceChecks(Int.self, c)
    try reduceChecks(UInt8.self, c)
    try reduceChecks(UInt16.self, c)
    try reduceChecks(UInt32.self, c)
    try reduceChecks(UInt64.self, c)
    try reduceChecks(UInt.self, c)
    // Floating-point sum of fractions, exact in binary.
    c.expectEqual(try c.world.allReduce(Double(c.rank) * 0.25, operation: .sum), Double(c.size * (c.size - 1)) / 8, "fractional sum")
}

func scanChecks<T: MPIReducible>(_ type: T.Type, _ c: CheckContext) throws {
    let r = c.rank
    let mine = T(exactly: r + 1)!
    let name = "\(T.self)"
    c.expectEqual(try c.world.scan(mine, operation: .sum), T(exactly: (r + 1) * (r + 2) / 2)!, "scan sum \(name)")
    c.expectEqual(try c.world.exclusiveScan(mine, operation: .sum), T(exactly: r * (r + 1) / 2)!, "exscan sum \(name)")
    c.expectEqual(try c.world.exclusiveScan(mine, operation: .product), T(exactly: fact(r))!, "exscan product \(name)")
    c.expectEqual(try c.world.exclusiveScan(mine, operation: .max), r == 0 ? T.reductionLeast : T(exactly: r)!, "exscan max \(name)")
    c.expectEqual(try c.world.exclusiveScan(mine, operation: .min), r == 0 ? T.reductionGreatest : 1, "exscan min \(name)")
    let pair = [mine, T(exactly: 2)! * mine]
    c.expectEqual(try c.world.exclusiveScan(pair, operation: .sum), [T(exactly: r * (r + 1) / 2)!, T(exactly: r * (r + 1))!],
                  "exscan array \(name)")
}

let scanCheck = Check(name: "exscan") { c in
    try scanChecks(Float.self, c)
    try scanChecks(Double.self, c)
    try scanChecks(Int32.self, c)
    try scanChecks(Int64.self, c)
    try scanChecks(Int.self, c)
    try scanChecks(UInt8.self, c)
    try scanChecks(UInt32.self, c)
    try scanChecks(UInt64.self, c)
    // The counting-sort use: offsets of rank-dependent counts.
    let count = 3 * c.rank + 1
    let offset = try c.world.exclusiveScan(count, operation: .sum)
    c.expectEqual(offset, (0..<c.rank).map { 3 * $0 + 1 }.reduce(0, +), "offset of rank-dependent counts")
    let total = try c.world.allReduce(count, operation: .sum)
    c.expectEqual(total, (0..<c.size).map { 3 * $0 + 1 }.reduce(0, +), "total of rank-dependent counts")
}

let gatherCheck = Check(name: "gather") { c in
    let p = c.size, r = c.rank
    let root = p / 2
    let gathered = try c.world.gather([Int32(r), Int32(r * r)], root: root)
    if r == root { c.expectEqual(gathered, (0..<p).flatMap { [Int32($0), Int32($0 * $0)] }, "gather pairs") }
    else { c.expect(gathered == nil, "gather off root is nil") }
    let scalars = try c.world.gather(Double(r) + 0.5, root: 0)
    if r == 0 { c.expectEqual(scalars, (0..<p).map { Double($0) + 0.5 }, "gather scalars") }
    c.expectEqual(try c.world.allGather([UInt8(r), 7]), (0..<p).flatMap { [UInt8($0), 7] }, "allGather pairs")

    // gatherv: rank r sends r+1 copies of r
    let mine = [Int32](repeating: Int32(r), count: r + 1)
    let expectedValues = (0..<p).flatMap { [Int32](repeating: Int32($0), count: $0 + 1) }
    if let (values, counts) = try c.world.gatherv(mine, root: 0) {
        c.expect(r == 0, "only the root gets gatherv's result")
        c.expectEqual(counts, (1...p).map { $0 }, "gatherv counts")
        c.expectEqual(values, expectedValues, "gatherv values")
    } else {
        c.expect(r != 0, "the root gets gatherv's result")
    }
    // gatherv into a buffer with a one-element gap after each part, root = last rank
    let counts = (0..<p).map { $0 + 1 }
    let displacements = (0..<p).map { q in (0..<q).map { $0 + 2 }.reduce(0, +) }
    let partition = BufferPartition(counts: counts, displacements: displacements)
    var target = [Int32](repeating: -1, count: partition.requiredCount + 1)
    try mine.withUnsafeBufferPointer { send in
        try target.withUnsafeMutableBufferPointer { receive in
            try c.world.gatherv(send, into: r == p - 1 ? receive : nil, partition: r == p - 1 ? partition : nil, root: p - 1)
        }
    }
    if r == p - 1 {
        for q in 0..<p {
            c.expectEqual(Array(target[partition.range(of: q)]), [Int32](repeating: Int32(q), count: q + 1), "gatherv part \(q)")
            c.expectEqual(target[partition.range(of: q).upperBound], -1, "gatherv gap after \(q) untouched")
        }
    }

    // allGatherv with rank 0 contributing nothing
    let (all, allCounts) = try c.world.allGatherv([Int64](repeating: Int64(r), count: r))
    c.expectEqual(allCounts, Array(0..<p), "allGatherv counts")
    c.expectEqual(all, (0..<p).flatMap { [Int64](repeating: Int64($0), count: $0) }, "allGatherv values")
}

let scatterCheck = Check(name: "scatter") { c in
    let p = c.size, r = c.rank
    let part = try c.world.scatter(r == 0 ? (0..<(2 * p)).map { Float($0) } : [], root: 0)
    c.expectEqual(part, [Float(2 * r), Float(2 * r + 1)], "scatter from 0")
    let source = (0..<(3 * p)).map { UInt32($0 * 7) }
    var mine = [UInt32](repeating: 0, count: 3)
    try source.withUnsafeBufferPointer { send in
        try mine.withUnsafeMutableBufferPointer { try c.world.scatter(r == p - 1 ? send : nil, into: $0, root: p - 1) }
    }
    c.expectEqual(mine, (0..<3).map { UInt32((3 * r + $0) * 7) }, "scatter buffer from last rank")
}

/// count of elements rank `from` sends to rank `to` in the allToAllv check (0 happens)
func pairCount(_ from: Int, _ to: Int) -> Int { (from + 2 * to) % 3 }
func pairValue(_ from: Int, _ to: Int, _ k: Int) -> Int { from * 10_000 + to * 100 + k }

let allToAllCheck = Check(name: "alltoall") { c in
    let p = c.size, r = c.rank
    let send = (0..<p).flatMap { j in [r * 100 + j, -(r * 100 + j)] }
    let received = try c.world.allToAll(send)
    c.expectEqual(received, (0..<p).flatMap { j in [j * 100 + r, -(j * 100 + r)] }, "allToAll pairs")
}

let allToAllvCheck = Check(name: "alltoallv") { c in
    let p = c.size, r = c.rank
    let sendCounts = (0..<p).map { pairCount(r, $0) }
    let values = (0..<p).flatMap { j in (0..<pairCount(r, j)).map { pairValue(r, j, $0) } }
    let expectedCounts = (0..<p).map { pairCount($0, r) }
    let expected = (0..<p).flatMap { j in (0..<pairCount(j, r)).map { pairValue(j, r, $0) } }

    let (received, counts) = try c.world.allToAllv(values, sendCounts: sendCounts)
    c.expectEqual(counts, expectedCounts, "allToAllv exchanged counts")
    c.expectEqual(received, expected, "allToAllv values")

    let known = try c.world.allToAllv(values.map(Double.init), sendCounts: sendCounts, receiveCounts: expectedCounts)
    c.expectEqual(known, expected.map(Double.init), "allToAllv with known receive counts")

    // Explicit partitions: send parts stored in reverse rank order, receive parts with gaps.
    var reversedSend = [Int32]()
    var sendDisplacements = [Int](repeating: 0, count: p)
    for j in (0..<p).reversed() {
        sendDisplacements[j] = reversedSend.count
        reversedSend += (0..<pairCount(r, j)).map { Int32(pairValue(r, j, $0)) }
    }
    let sendPartition = BufferPartition(counts: sendCounts, displacements: sendDisplacements)
    let receiveDisplacements = (0..<p).map { q in (0..<q).map { pairCount($0, r) + 1 }.reduce(0, +) }
    let receivePartition = BufferPartition(counts: expectedCounts, displacements: receiveDisplacements)
    // one spare element after every part (zero-count parts included) for the gap check
    var target = [Int32](repeating: -7, count: expectedCounts.reduce(0, +) + p)
    try reversedSend.withUnsafeBufferPointer { send in
        try target.withUnsafeMutableBufferPointer { receive in
            try c.world.allToAllv(send, partition: sendPartition, into: receive, partition: receivePartition)
        }
    }
    for j in 0..<p {
        let range = receiveDisplacements[j] ..< receiveDisplacements[j] + pairCount(j, r)
        c.expectEqual(Array(target[range]), (0..<pairCount(j, r)).map { Int32(pairValue(j, r, $0)) }, "allToAllv part from \(j)")
        c.expectEqual(target[range.upperBound], -7, "allToAllv gap after part \(j) untouched")
    }
}

let immediateCollectivesCheck = Check(name: "immediate-collectives") { c in
    let p = c.size, r = c.rank
    // Several in flight on one communicator, started in the same order everywhere, completed in
    // another order, with polling.
    let gather = try c.world.immediateAllGather([Int64(r), Int64(-r * r)])
    let counts = (0..<p).map { $0 % 3 + 1 }
    let gatherv = try c.world.immediateAllGatherv((0..<counts[r]).map { Float(r * 10 + $0) }, counts: counts)
    let sendCounts = (0..<p).map { pairCount(r, $0) }
    let send = (0..<p).flatMap { j in (0..<pairCount(r, j)).map { Int32(pairValue(r, j, $0)) } }
    let expectedCounts = (0..<p).map { pairCount($0, r) }
    var received = [Int32](repeating: -1, count: expectedCounts.reduce(0, +))
    try send.withUnsafeBufferPointer { s in
        try received.withUnsafeMutableBufferPointer { out in
            let exchange = try c.world.immediateAllToAllv(borrowing: s, partition: BufferPartition(counts: sendCounts),
                                                          into: out, partition: BufferPartition(counts: expectedCounts))
            let deadline = MPIEnvironment.wallTime + 20
            while try exchange.test() == nil && MPIEnvironment.wallTime < deadline {}
            c.expect(exchange.isComplete, "immediateAllToAllv completed within 20 s of polling")
            try exchange.wait()
        }
    }
    c.expectEqual(received, (0..<p).flatMap { j in (0..<pairCount(j, r)).map { Int32(pairValue(j, r, $0)) } }, "immediateAllToAllv values")
    c.expectEqual(try gatherv.waitForValues(), (0..<p).flatMap { q in (0..<counts[q]).map { Float(q * 10 + $0) } }, "immediateAllGatherv values")
    c.expectEqual(try gather.waitForValues(), (0..<p).flatMap { [Int64($0), Int64(-$0 * $0)] }, "immediateAllGather values")
}

// MARK: - Point to point

let pointToPointCheck = Check(name: "send-recv") { c in
    let p = c.size, r = c.rank
    if p == 1 {
        let request = try c.world.immediateSend([1, 2, 3] as [Int], to: 0, tag: 3)
        let status = try c.world.probe(from: 0, tag: 3)
        c.expectEqual(try status.count(of: Int.self), 3, "probe count to self")
        let (values, _) = try c.world.receive(Int.self, from: 0, tag: 3)
        try request.wait()
        c.expectEqual(values, [1, 2, 3], "self message")
        return
    }
    // Pairs (0,1), (2,3), …: the even rank sends r+3 floats, the odd one probes, receives and
    // answers with an array of unknown length.
    if r % 2 == 0, r + 1 < p {
        try c.world.send((0..<(r + 3)).map { Float($0) + 0.5 }, to: r + 1, tag: 11)
        let (answer, status) = try c.world.receive(UInt16.self, from: r + 1)
        c.expectEqual(answer, (0..<(r + 2)).map { UInt16($0 * 3) }, "answer from \(r + 1)")
        c.expectEqual(status.source, r + 1, "answer source")
        c.expectEqual(status.tag, 12, "answer tag")
        try c.world.send(Int64(r), to: r + 1, tag: 13)
    } else if r % 2 == 1 {
        let status = try c.world.probe(from: nil, tag: 11)
        c.expectEqual(status.source, r - 1, "probe source")
        let count = try status.count(of: Float.self) ?? -1
        c.expectEqual(count, r - 1 + 3, "probe count")
        var buffer = [Float](repeating: 0, count: max(count, 0))
        let received = try buffer.withUnsafeMutableBufferPointer { try c.world.receive(into: $0, from: r - 1, tag: 11) }
        c.expectEqual(received.source, r - 1, "receive source")
        c.expectEqual(buffer, (0..<(r + 2)).map { Float($0) + 0.5 }, "received floats")
        try c.world.send((0..<(r + 1)).map { UInt16($0 * 3) }, to: r - 1, tag: 12)
        var one = [Int64(-1)]
        try one.withUnsafeMutableBufferPointer { _ = try c.world.receive(into: $0, from: r - 1, tag: 13) }
        c.expectEqual(one, [Int64(r - 1)], "scalar send")
    }
    // sendReceive ring shift
    let right = (r + 1) % p, left = (r + p - 1) % p
    c.expectEqual(try c.world.sendReceive([Int32(r), Int32(-r)], to: right, from: left), [Int32(left), Int32(-left)], "sendReceive ring")
}

let ringCheck = Check(name: "isend-irecv") { c in
    let p = c.size, r = c.rank
    let right = (r + 1) % p, left = (r + p - 1) % p
    // waitAll over a receive and a send; the send's source array is dropped at once.
    let incoming = try c.world.immediateReceive(Double.self, count: 4, from: left, tag: 5)
    var outgoing: Request? = try c.world.immediateSend((0..<4).map { Double(r * 10 + $0) }, to: right, tag: 5)
    let statuses = try Request.waitAll([incoming, outgoing!])
    outgoing = nil
    c.expect(incoming.isComplete, "receive complete after waitAll")
    c.expectEqual(incoming.values, (0..<4).map { Double(left * 10 + $0) }, "ring values")
    c.expectEqual(statuses[0].source, left, "ring source")
    c.expectEqual(statuses[0].tag, 5, "ring tag")

    // Polling with test(): the receive is posted first, then the send.
    let polled = try c.world.immediateReceive(Int64.self, count: 8, from: left, tag: 9)
    let sent = try c.world.immediateSend([Int64(r), Int64(r * r)], to: right, tag: 9)
    let deadline = MPIEnvironment.wallTime + 20
    var status: MessageStatus? = nil
    while status == nil && MPIEnvironment.wallTime < deadline { status = try polled.test() }
    c.expect(status != nil, "test() completed within 20 s")
    try sent.wait()
    if status != nil {
        c.expectEqual(try status!.count(of: Int64.self), 2, "short message count")
        c.expectEqual(polled.values, [Int64(left), Int64(left * left)], "polled values (shorter than the buffer)")
        c.expectEqual(try polled.waitForValues(), [Int64(left), Int64(left * left)], "waitForValues after completion")
    }

    // Many requests in flight at once: every rank sends to every rank.
    var receives = [ReceiveRequest<UInt32>]()
    var sends = [Request]()
    for q in 0..<p { receives.append(try c.world.immediateReceive(UInt32.self, count: 1, from: q, tag: 21)) }
    for q in 0..<p { sends.append(try c.world.immediateSend([UInt32(r * 1000 + q)], to: q, tag: 21)) }
    try Request.waitAll(receives + sends)
    c.expectEqual(receives.map { $0.values[0] }, (0..<p).map { UInt32($0 * 1000 + r) }, "all-pairs isend/irecv")
}

// MARK: - Errors and support types

let errorCheck = Check(name: "errors") { c in
    let p = c.size
    do {
        try c.world.send([Float(1)], to: p, tag: 0)
        c.expect(false, "send to rank \(p) did not throw")
    } catch let error as MPIError {
        c.expectEqual(error.function, "MPI_Send", "failing function")
        c.expectEqual(error.errorClass, MPIError.Class.rank, "error class of send to rank \(p) (\(error))")
        c.expect(error.description.contains("MPI_Send") && !error.message.isEmpty, "description: \(error)")
    }
    do {
        _ = try c.world.probeIfAvailable(from: p + 3, tag: 0)
        c.expect(false, "probe from rank \(p + 3) did not throw")
    } catch let error as MPIError {
        c.expectEqual(error.errorClass, MPIError.Class.rank, "error class of probe from \(p + 3)")
    }
    do {
        try c.world.send([Int32(1)], to: 0, tag: -5)
        c.expect(false, "negative tag did not throw")
    } catch let error as MPIError {
        c.expectEqual(error.errorClass, MPIError.Class.tag, "error class of a negative tag")
    }
    do {
        _ = try c.world.broadcast(1.0, root: p)
        c.expect(false, "broadcast from root \(p) did not throw")
    } catch let error as MPIError {
        c.expectEqual(error.errorClass, MPIError.Class.root, "error class of an invalid root")
        c.expectEqual(error.function, "MPI_Bcast", "failing collective")
    }
    // A message longer than the receive buffer: MPI_ERR_TRUNCATE (self message, so any P).
    let long = try c.world.immediateSend([1, 2, 3, 4] as [Int32], to: c.rank, tag: 30)
    do {
        var short = [Int32](repeating: 0, count: 2)
        try short.withUnsafeMutableBufferPointer { _ = try c.world.receive(into: $0, from: c.rank, tag: 30) }
        c.expect(false, "truncated receive did not throw")
    } catch let error as MPIError {
        c.expectEqual(error.errorClass, MPIError.Class.truncate, "error class of a truncated receive")
    }
    try long.wait()
    // The communicator still works after the errors.
    c.expectEqual(try c.world.allReduce(c.rank + 1, operation: .sum), p * (p + 1) / 2, "allReduce after errors")
}

let supportCheck = Check(name: "support") { c in
    let partition = BufferPartition(counts: [2, 0, 3])
    c.expectEqual(partition.displacements, [0, 2, 2], "prefix-sum displacements")
    c.expectEqual(partition.totalCount, 5, "totalCount")
    c.expectEqual(partition.requiredCount, 5, "requiredCount")
    c.expectEqual(partition.range(of: 2), 2..<5, "range")
    let gapped = BufferPartition(counts: [1, 2], displacements: [4, 0])
    c.expectEqual(gapped.requiredCount, 5, "requiredCount with explicit displacements")
    func sizeMatches<T: MPIDatatypeConvertible>(_ type: T.Type) throws -> Bool {
        try T.mpiDatatype.size() == MemoryLayout<T>.size
    }
    for (name, ok) in [("Float", try sizeMatches(Float.self)), ("Double", try sizeMatches(Double.self)),
                       ("Int8", try sizeMatches(Int8.self)), ("Int16", try sizeMatches(Int16.self)),
                       ("Int32", try sizeMatches(Int32.self)), ("Int64", try sizeMatches(Int64.self)),
                       ("Int", try sizeMatches(Int.self)), ("UInt8", try sizeMatches(UInt8.self)),
                       ("UInt16", try sizeMatches(UInt16.self)), ("UInt32", try sizeMatches(UInt32.self)),
                       ("UInt64", try sizeMatches(UInt64.self)), ("UInt", try sizeMatches(UInt.self))] {
        c.expect(ok, "MPI_Type_size of \(name)'s datatype equals its MemoryLayout size")
    }
    c.expectEqual(ReductionOperation.max.identity(for: Float.self), -Float.infinity, "max identity")
    c.expectEqual(ReductionOperation.min.identity(for: UInt8.self), 255, "min identity")
    c.expectEqual(ThreadLevel.single < .multiple, true, "thread levels ordered")
}

// MARK: - Programs meant to fail

let expectedFailureCheck = Check(name: "expected-failure") { c in
    let p = c.size
    c.expectEqual(try c.world.allReduce(c.rank + 1, operation: .sum), p * (p + 1) / 2 + 1, "deliberately wrong closed form")
}

let allChecks: [Check] = [
    environmentCheck, rankSizeCheck, barrierCheck, broadcastCheck, reduceCheck, scanCheck, gatherCheck, scatterCheck,
    allToAllCheck, allToAllvCheck, immediateCollectivesCheck, splitCheck, duplicateCheck, pointToPointCheck, ringCheck, errorCheck, supportCheck,
]
let failingChecks: [Check] = [expectedFailureCheck]

// MARK: - Main

func fputsError(_ text: String) { fputs(text + "\n", stderr) }

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments == ["list"] || arguments == ["--list"] {
    for check in allChecks + failingChecks { print(check.name) }
    print("abort")
    exit(0)
}

let provided: ThreadLevel
do { provided = try MPIEnvironment.initialize(threadLevel: .funneled) } catch {
    fputsError("MPIChecks: \(error)")
    exit(2)
}
let world = Communicator.world

if arguments == ["abort"] {
    // The last rank aborts; the others block in a barrier that can never complete. mpirun must
    // terminate them and exit non-zero.
    if world.rank == world.size - 1 { world.abort(code: 3) }
    try? world.barrier()
    fputsError("MPIChecks abort: rank \(world.rank) passed a barrier that should never complete")
    exit(0)
}

var selected: [Check] = []
for name in arguments.isEmpty ? ["all"] : arguments {
    if name == "all" { selected += allChecks; continue }
    guard let check = (allChecks + failingChecks).first(where: { $0.name == name }) else {
        if world.rank == 0 { fputsError("MPIChecks: unknown check '\(name)' (try 'list')") }
        try? MPIEnvironment.finalize()
        exit(2)
    }
    selected.append(check)
}

if world.rank == 0 {
    print("MPIChecks: \(world.size) rank(s), thread level \(provided), on \((try? MPIEnvironment.processorName()) ?? "?")")
}
var passed = 0, failed = 0
for check in selected {
    let context = CheckContext(world: world)
    let start = MPIEnvironment.wallTime
    do { try check.run(context) } catch { context.failures.append("unexpected error: \(error)") }
    for failure in context.failures { fputsError("[rank \(world.rank)] \(check.name): \(failure)") }
    // A check passes when it passes on every rank.
    let anyFailed = (try? world.allReduce(context.failures.isEmpty ? 0 : 1, operation: .max)) ?? 1
    if anyFailed == 0 { passed += 1 } else { failed += 1 }
    if world.rank == 0 {
        print("\(anyFailed == 0 ? "PASS" : "FAIL") \(check.name) (\(Int((MPIEnvironment.wallTime - start) * 1000)) ms)")
    }
}

// A derived communicator that outlives MPI_Finalize must not call MPI_Comm_free in deinit.
var survivor: Communicator? = try? world.duplicate()
if world.rank == 0 { print("\(passed) passed, \(failed) failed") }
fflush(stdout)
do { try MPIEnvironment.finalize() } catch { fputsError("MPIChecks: \(error)"); exit(1) }
survivor = nil
exit(failed == 0 && MPIEnvironment.isFinalized ? 0 : 1)
