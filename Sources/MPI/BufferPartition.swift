/// How a buffer is cut into one part per rank, for the variable-count collectives (`gatherv`,
/// `allGatherv`, `allToAllv`): part `i` is `displacements[i] ..< displacements[i] + counts[i]`,
/// in elements.
///
/// ```
/// displacements[i] = counts[0] + … + counts[i−1]     (init(counts:), parts back to back)
/// ```
public struct BufferPartition: Equatable, Hashable, Sendable {
    /// The element count of each part.
    public let counts: [Int]
    /// The offset, in elements, of each part from the start of the buffer.
    public let displacements: [Int]

    /// Parts laid out back to back in order: the displacements are the running (exclusive)
    /// prefix sums of `counts`.
    ///
    /// - Parameter counts: The element count of each part, all ≥ 0.
    public init(counts: [Int]) {
        var displacements = [Int]()
        displacements.reserveCapacity(counts.count)
        var offset = 0
        for count in counts {
            mpiPrecondition(count >= 0, "BufferPartition: negative count \(count) in \(counts)")
            displacements.append(offset)
            offset += count
        }
        self.counts = counts
        self.displacements = displacements
    }

    /// Parts at explicit offsets (gaps allowed; receive parts must not overlap).
    ///
    /// - Parameters:
    ///   - counts: The element count of each part, all ≥ 0.
    ///   - displacements: The offset of each part, all ≥ 0, as many as `counts`.
    public init(counts: [Int], displacements: [Int]) {
        mpiPrecondition(counts.count == displacements.count,
                     "BufferPartition: \(counts.count) counts but \(displacements.count) displacements")
        mpiPrecondition(counts.allSatisfy { $0 >= 0 }, "BufferPartition: negative count in \(counts)")
        mpiPrecondition(displacements.allSatisfy { $0 >= 0 }, "BufferPartition: negative displacement in \(displacements)")
        self.counts = counts
        self.displacements = displacements
    }

    /// The sum of the counts.
    public var totalCount: Int { counts.reduce(0, +) }

    /// The smallest buffer length that holds every part: the largest `displacement + count`.
    public var requiredCount: Int {
        zip(counts, displacements).reduce(0) { Swift.max($0, $1.0 == 0 ? 0 : $1.0 + $1.1) }
    }

    /// The element range of part `part`.
    ///
    /// - Parameter part: A part index (a rank), in `0..<counts.count`.
    public func range(of part: Int) -> Range<Int> {
        displacements[part] ..< displacements[part] + counts[part]
    }

    /// Traps unless there is one part per rank, the parts fit in `bufferCount` elements and
    /// every count and displacement fits an MPI `int`; with `disjoint`, also unless the parts
    /// are pairwise disjoint (required of receive buffers).
    func validate(parts: Int, bufferCount: Int, disjoint: Bool, _ context: @autoclosure () -> String) {
        mpiPrecondition(counts.count == parts,
                     "\(context()): the partition has \(counts.count) parts but the communicator has \(parts) ranks")
        mpiPrecondition(requiredCount <= bufferCount,
                     "\(context()): the partition needs \(requiredCount) elements (counts \(counts), displacements \(displacements)) but the buffer holds \(bufferCount)")
        mpiPrecondition(counts.allSatisfy { $0 <= Int(Int32.max) } && displacements.allSatisfy { $0 <= Int(Int32.max) },
                     "\(context()): a count or displacement exceeds Int32.max (MPI-3 counts are int); use a wider element type")
        if disjoint {
            let ranges = (0..<counts.count).map(range(of:)).filter { !$0.isEmpty }.sorted { $0.lowerBound < $1.lowerBound }
            for (a, b) in zip(ranges, ranges.dropFirst()) {
                mpiPrecondition(a.upperBound <= b.lowerBound,
                             "\(context()): receive parts \(a) and \(b) overlap (MPI forbids overlapping receive regions)")
            }
        }
    }

    /// The counts as MPI `int`s (valid after `validate`).
    var cCounts: [Int32] { counts.map { Int32($0) } }
    /// The displacements as MPI `int`s (valid after `validate`).
    var cDisplacements: [Int32] { displacements.map { Int32($0) } }
}
