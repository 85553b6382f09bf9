// Checks that distributed attention over P ranks equals the single-process call (HyperAttention
// and exact pieces: bit for bit; ring attention: the exact kernel within 1e-5 relative), for the
// cases of issues #4 and #5: run as `mpirun -np P DistributedChecks [quick|full]`. Rank 0 prints one
// line per case and `N passed, N failed`; the exit status is non-zero on any failure.
import DistributedHyperAttention
import Foundation
import HyperAttention
import HyperAttentionCUDA
import HyperAttentionTestSupport
import MPI

struct Case {
    var name: String
    var batch = 1, queryHeads = 1, keyHeads = 1
    var n: Int
    var nk: Int? = nil
    var d = 16, dv = 16
    var options: AttentionOptions
    /// Ring attention (exact) rather than `DistributedAttention`.
    var ring = false
    /// Ranks pretend unequal measured speeds (rank r: (r mod 3) + 1), so that `.measuredSpeed`
    /// deals them unequal shares of blocks; the output must not change.
    var unequalSpeeds = false
    /// `DistributedAttention(pipelined:)`: rectangles pipelined over heads (default) or run one
    /// after another; the output is the same either way.
    var pipelined = true
    /// `DistributedAttention(placement:)`: which blocks a rank computes; the output is the same.
    var placement = BlockPlacement.rowLocality
    /// `DistributedAttention(sampleParts:)`: where the causal rectangles' sample parts run; the
    /// output is the same.
    var sampleParts = SamplePartPlacement.withBlocks
    /// Computes on `ReferenceAccelerator` (the GPU path's tables evaluated on the CPU in
    /// float64): equal to the single-process CPU call to fp32 rounding, not bit for bit.
    var accelerated = false
}

/// Calls `ring` again, as the first call did, and checks every rank's rows bit for bit against
/// that call's `first` result: once while the caller still holds `first` (fresh tensors), and
/// once after dropping the result of a call on an all-NaN query, whose output and lse tensors
/// (all NaN) the instance then reuses. Collective; returns (ok on every rank, a description).
func checkRepeatedRing(_ ring: RingAttention, query: Tensor, key: Tensor, value: Tensor, first: DistributedResult) throws -> (Bool, String) {
    func same(_ a: DistributedResult, _ b: DistributedResult) -> Bool {
        a.output.shape == b.output.shape && a.logSumExp.shape == b.logSumExp.shape
            && a.output.scalars.map(\.bitPattern) == b.output.scalars.map(\.bitPattern)
            && a.logSumExp.scalars.map(\.bitPattern) == b.logSumExp.scalars.map(\.bitPattern)
    }
    let holding = same(try ring.run(query: query, key: key, value: value, logSumExp: true), first)
    var poisoned = 0
    do {
        let nan = try ring.run(query: Tensor(shape: query.shape, repeating: .nan), key: key, value: value, logSumExp: true)
        poisoned = Int(bitPattern: nan.output.unsafeStoragePointer)
    }
    let again = try ring.run(query: query, key: key, value: value, logSumExp: true)
    // The NaN call's tensors were dropped, so this call wrote into them.
    let reused = Int(bitPattern: again.output.unsafeStoragePointer) == poisoned
    let dropped = same(again, first)
    // 1 where some rank failed.
    let world = Communicator.world
    let holdingFailed = try world.allReduce(holding ? 0 : 1, operation: .max)
    let droppedFailed = try world.allReduce(dropped ? 0 : 1, operation: .max)
    let notReused = try world.allReduce(reused ? 0 : 1, operation: .max)
    return (holdingFailed + droppedFailed + notReused == 0,
            "second call holding the first \(holdingFailed == 0 ? "bit-identical" : "DIFFERS"), "
            + "after dropping a NaN call's result \(droppedFailed == 0 ? "bit-identical" : "DIFFERS") (tensors \(notReused == 0 ? "reused" : "NOT reused"))")
}

func cases(full: Bool) -> [Case] {
    var list: [Case] = []
    for causal in [false, true] {
        let c = causal ? "causal" : "non-causal"
        // Fewer blocks than ranks.
        list.append(Case(name: "\(c) n=300 (5 blocks)", n: 300, options: AttentionOptions(causal: causal, blockSize: 64, samples: 16, minSeqLen: 40)))
        // Odd n, GQA, d_v ≠ d.
        list.append(Case(name: "\(c) n=5001 GQA 4/2 dv=24", batch: 1, queryHeads: 4, keyHeads: 2, n: 5001, d: 32, dv: 24,
                         options: AttentionOptions(causal: causal, blockSize: 96, samples: 48, minSeqLen: 512, seed: 7)))
        // A power of two.
        list.append(Case(name: "\(c) n=8192 b=2 h=2", batch: 2, queryHeads: 2, keyHeads: 2, n: 8192, options: AttentionOptions(causal: causal, blockSize: 128, samples: 64, minSeqLen: 1024, seed: 3)))
        // Below minSeqLen: exact, gathered.
        list.append(Case(name: "\(c) n=777 exact fallback", n: 777, options: AttentionOptions(causal: causal, minSeqLen: 2048)))
        for estimator in [ResidualEstimator.uniform, .stratifiedControlVariate] {
            list.append(Case(name: "\(c) n=3001 \(estimator)", n: 3001, options: AttentionOptions(causal: causal, blockSize: 64, samples: 32, minSeqLen: 300, estimator: estimator)))
        }
        if full {
            list.append(Case(name: "\(c) n=100003", n: 100_003, options: AttentionOptions(causal: causal, seed: 11)))
        }
    }
    list.append(Case(name: "non-causal n_q=3000 n_k=7001", n: 3000, nk: 7001, options: AttentionOptions(blockSize: 100, samples: 50, minSeqLen: 256)))
    for causal in [false, true] {
        list.append(Case(name: "\(causal ? "causal" : "non-causal") n=5001 h=3 GQA 3/1 not pipelined", queryHeads: 3, keyHeads: 1, n: 5001,
                         options: AttentionOptions(causal: causal, blockSize: 96, samples: 48, minSeqLen: 512, seed: 9), pipelined: false))
    }
    for causal in [false, true] {
        let c = causal ? "causal" : "non-causal"
        // Few buckets, many rows per (bucket, rank): most blocks' rows sit on one rank, so
        // placement by locality moves few rows; and the same problem dealt in contiguous runs.
        let options = AttentionOptions(causal: causal, lshBits: 2, blockSize: 64, samples: 32, minSeqLen: 1000, seed: 13)
        list.append(Case(name: "\(c) n=24000 h=2 r=2 blocks placed by row locality", queryHeads: 2, keyHeads: 2, n: 24000, options: options))
        list.append(Case(name: "\(c) n=24000 h=2 r=2 blocks in contiguous runs", queryHeads: 2, keyHeads: 2, n: 24000, options: options, placement: .contiguous))
    }
    list.append(Case(name: "exact mode causal n=1500", n: 1500, options: AttentionOptions(mode: .exact, causal: true)))
    for causal in [false, true] {
        list.append(Case(name: "\(causal ? "causal" : "non-causal") n=6000 h=2 blocks dealt by unequal speeds", queryHeads: 2, keyHeads: 2, n: 6000,
                         options: AttentionOptions(causal: causal, blockSize: 64, samples: 32, minSeqLen: 500, seed: 5), unequalSpeeds: true))
    }
    // Ring attention: fewer tokens than ranks (empty chunks), odd n, GQA with d_v ≠ d, b = 2,
    // n_q ≠ n_k.
    for causal in [false, true] {
        let c = causal ? "causal" : "non-causal"
        let exact = AttentionOptions(mode: .exact, causal: causal)
        list.append(Case(name: "ring \(c) n=3", n: 3, options: exact, ring: true))
        list.append(Case(name: "ring \(c) n=1001", n: 1001, options: exact, ring: true))
        list.append(Case(name: "ring \(c) n=2999 GQA 4/2 dv=24", queryHeads: 4, keyHeads: 2, n: 2999, d: 32, dv: 24, options: exact, ring: true))
        list.append(Case(name: "ring \(c) n=2048 b=2 h=2 d=64", batch: 2, queryHeads: 2, keyHeads: 2, n: 2048, d: 64, dv: 64, options: exact, ring: true))
    }
    list.append(Case(name: "ring non-causal n_q=1500 n_k=4001", n: 1500, nk: 4001, options: AttentionOptions(mode: .exact), ring: true))
    // The GPU path's work (shard pieces; blocks from the CUDA tables) on the CPU reference.
    for causal in [false, true] {
        let c = "accelerated \(causal ? "causal" : "non-causal")"
        for estimator in [ResidualEstimator.uniform, .stratifiedControlVariate] {
            list.append(Case(name: "\(c) n=3001 \(estimator)", n: 3001,
                             options: AttentionOptions(causal: causal, blockSize: 64, samples: 32, minSeqLen: 300, estimator: estimator), accelerated: true))
        }
        list.append(Case(name: "\(c) n=5001 GQA 4/2 dv=24", queryHeads: 4, keyHeads: 2, n: 5001, d: 32, dv: 24,
                         options: AttentionOptions(causal: causal, blockSize: 96, samples: 48, minSeqLen: 512, seed: 7), accelerated: true))
        list.append(Case(name: "\(c) n=777 exact fallback", n: 777, options: AttentionOptions(causal: causal, minSeqLen: 2048), accelerated: true))
        list.append(Case(name: "\(c) n=6000 h=2 r=2", queryHeads: 2, keyHeads: 2, n: 6000,
                         options: AttentionOptions(causal: causal, lshBits: 2, blockSize: 64, samples: 32, minSeqLen: 500, seed: 13), accelerated: true))
    }
    list.append(Case(name: "accelerated non-causal n_q=3000 n_k=7001", n: 3000, nk: 7001,
                     options: AttentionOptions(blockSize: 100, samples: 50, minSeqLen: 256), accelerated: true))
    // The causal HyperAttention cases again with the sample parts at the query rows' owners, and
    // chosen per rectangle by the ranks' measured speeds (owners where even: on this VM's shared
    // cores the choice differs from rectangle to rectangle and run to run; the bits must not).
    for c in list where c.options.causal && c.options.mode == .hyper && c.n >= c.options.minSeqLen && !c.ring && !c.accelerated {
        for (placement, label) in [(SamplePartPlacement.atOwners, "at the owners"), (.bySpeeds, "placed by speeds")] {
            var copy = c
            copy.name += ", sample parts \(label)"
            copy.sampleParts = placement
            list.append(copy)
        }
    }
    return list
}


do {
    try MPIEnvironment.initialize()
    let world = Communicator.world
    let full = CommandLine.arguments.dropFirst().contains("full")
    // The seeded speeds of the unequal-speed cases: 1:2:3:1:… (rank % 3 + 1 M pairs/s) over 1000 s
    // of history, which a call's few ms of measured blocks cannot move, so every rank deals from
    // the same weights.
    let unequalSpeedHistory = (pairs: 1_000_000_000 * (world.rank % 3 + 1), seconds: 1000.0)
    var passed = 0, failed = 0
    for c in cases(full: full) {
        let nk = c.nk ?? c.n
        let q = TestData.gaussian([c.batch, c.queryHeads, c.n, c.d], seed: 1)
        let k = TestData.gaussian([c.batch, c.keyHeads, nk, c.d], seed: 2)
        let v = TestData.gaussian([c.batch, c.keyHeads, nk, c.dv], seed: 3)
        var options = c.options
        options.threads = 1
        let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
        let dist: any SequenceParallelAttention
        if c.ring {
            dist = try RingAttention(communicator: world, shape: shape, options: options)
        } else {
            let hyper = try DistributedAttention(communicator: world, shape: shape, options: options, placement: c.placement, sampleParts: c.sampleParts, pipelined: c.pipelined,
                                                 accelerator: c.accelerated ? ReferenceAccelerator() : nil)
            if c.unequalSpeeds { hyper.seedSpeedMeasurement(pairs: unequalSpeedHistory.pairs, seconds: unequalSpeedHistory.seconds) }
            dist = hyper
        }
        // This rank's shards, sliced once for every call below.
        let myQ = q.rows(dist.localQueryChunks), myK = k.rows(dist.localKeyChunks), myV = v.rows(dist.localKeyChunks)
        let result = try dist.run(query: myQ, key: myK, value: myV, logSumExp: true)
        // The accelerated cases must really have computed on the accelerator.
        if c.accelerated, let accelerator = (dist as? DistributedAttention)?.accelerator as? ReferenceAccelerator {
            let used = try world.allReduce(accelerator.blocksRun + accelerator.piecesRun, operation: .sum)
            if used > 0 { passed += 1 } else { failed += 1 }
            if world.rank == 0 {
                print("\(used > 0 ? "ok  " : "FAIL") P=\(world.size) \(c.name): accelerator ran \(used) blocks and pieces")
            }
        }
        // Ring attention called again on the same instance: the same bits.
        if let ring = dist as? RingAttention {
            let (ok, detail) = try checkRepeatedRing(ring, query: myQ, key: myK, value: myV, first: result)
            if ok { passed += 1 } else { failed += 1 }
            if world.rank == 0 { print("\(ok ? "ok  " : "FAIL") P=\(world.size) \(c.name) repeated: \(detail)") }
        }
        // A first call with speed dealing and no measurement yet times each rank's block kernel
        // first (`DistributedAttention.calibrateSpeedIfUnknown`); seeded speeds skip it.
        if let hyper = dist as? DistributedAttention, !c.accelerated, options.mode == .hyper, world.size > 1 {
            let calibrated = try world.allReduce(result.report.speedCalibrationSeconds > 0 ? 1 : 0, operation: .sum)
            let expected = c.unequalSpeeds || !AttentionPlan(shape: shape, options: options).hasHyperPieces ? 0 : world.size
            var ok = calibrated == expected
            var detail = "speed calibrated on \(calibrated) of \(world.size) ranks, expected \(expected)"
            if c.name.hasPrefix("non-causal n=5001") {
                // A second call has the first call's measurements: no calibration.
                let again = try hyper.run(query: myQ, key: myK, value: myV, logSumExp: true)
                let recalibrated = try world.allReduce(again.report.speedCalibrationSeconds > 0 ? 1 : 0, operation: .sum)
                ok = ok && recalibrated == 0
                detail += "; on the second call \(recalibrated)"
            }
            if ok { passed += 1 } else { failed += 1 }
            if world.rank == 0 { print("\(ok ? "ok  " : "FAIL") P=\(world.size) \(c.name): \(detail)") }
        }
        // The same case dealt by equal work, for the unequal-speed check.
        var equalWorkPairs = 0
        if c.unequalSpeeds {
            let equal = try DistributedAttention(communicator: world, shape: shape, options: options, balancing: .equalWork)
            equal.seedSpeedMeasurement(pairs: unequalSpeedHistory.pairs, seconds: unequalSpeedHistory.seconds)
            equalWorkPairs = try equal.run(query: myQ, key: myK, value: myV, logSumExp: true).stats.evaluatedPairs
        }
        // Where the sample parts ran (rank × rectangle shares). Printed only where it is determined
        // (scripts/two-host-netns.sh compares this program's output across runs): with `.bySpeeds`
        // and measured speeds it depends on the cores.
        let sharesAtOwners = try world.allReduce(result.report.rectanglesWithSamplesAtOwners, operation: .sum)
        let shares = try world.allReduce(result.report.spanningRectangles, operation: .sum)
        // Gather every rank's rows on rank 0, per (batch, head), in token order.
        let gathered = try world.gatherv(result.output.scalars, root: 0)
        let gatheredLse = try world.gatherv(result.logSumExp.scalars, root: 0)
        if world.rank == 0, let gathered, let gatheredLse {
            let single = try attention(query: q, key: k, value: v, options: options)
            // Reassemble [rank][bh][rows][dv] into [bh][n][dv].
            let heads = c.batch * c.queryHeads
            var out = [Float](repeating: .nan, count: heads * c.n * c.dv)
            var lse = [Float](repeating: .nan, count: heads * c.n)
            var offset = 0, lseOffset = 0
            for r in 0..<world.size {
                let chunks = dist.queryChunks(rank: r)
                for bh in 0..<heads {
                    for i in chunks.joined() {
                        for col in 0..<c.dv { out[(bh * c.n + i) * c.dv + col] = gathered.values[offset]; offset += 1 }
                        lse[bh * c.n + i] = gatheredLse.values[lseOffset]; lseOffset += 1
                    }
                }
            }
            let expected = single.output.scalars, expectedLse = single.logSumExp.scalars
            let identical = out == expected && lse == expectedLse
            let rel = ErrorMeasure.maxRelative(out, expected.map(Double.init))
            let lseDiff = zip(lse, expectedLse).map { abs(Double($0) - Double($1)) }.max() ?? 0
            let ok: Bool
            if c.ring {
                // Ring merges per-step partials: the exact kernel to fp32 rounding.
                ok = rel <= 1e-5 && lseDiff <= 1e-5
            } else if c.accelerated {
                // Blocks in float64 from the GPU tables, pieces and merges in fp32.
                ok = rel <= 1e-4 && lseDiff <= 1e-4
            } else {
                // The control variate's Σ V is summed per rank, then across ranks: fp32-rounding close.
                ok = identical || (options.estimator == .stratifiedControlVariate && rel <= 1e-6)
            }
            if ok { passed += 1 } else { failed += 1 }
            let pairs = try world.reduce(result.stats.evaluatedPairs, operation: .sum, root: 0) ?? 0
            print("\(ok ? "ok  " : "FAIL") P=\(world.size) \(c.name): \(identical ? "bit-identical" : String(format: "max rel diff %.2e, lse diff %.2e", rel, lseDiff)); pairs \(pairs) vs \(single.stats.evaluatedPairs)")
            if pairs != single.stats.evaluatedPairs { failed += 1; print("FAIL pair counts differ") }
            if c.sampleParts == .atOwners && shares > 0 {
                // `.atOwners` runs them at the owners whatever the speeds.
                let ok = sharesAtOwners == shares
                if ok { passed += 1 } else { failed += 1 }
                print("\(ok ? "ok  " : "FAIL") P=\(world.size) \(c.name): sample parts at the owners in \(sharesAtOwners) of \(shares) shares, expected \(shares)")
            } else if c.sampleParts == .bySpeeds && c.unequalSpeeds && shares > 0 && world.size >= 4 {
                // With the seeded speeds 1:2:3:1:…, at P = 4, 5 and 8 a query-only rank of weight 1
                // (rank 3, 3, 6) would be overloaded 1.75–1.88× by its sample parts at the owners
                // in the top spanning level's rectangle: `.bySpeeds` keeps that rectangle's sample
                // parts with the blocks. (At P = 2 and 3 every rectangle's query ranks are fast
                // enough, and all go to the owners.)
                let ok = sharesAtOwners < shares
                if ok { passed += 1 } else { failed += 1 }
                print("\(ok ? "ok  " : "FAIL") P=\(world.size) \(c.name): sample parts with the blocks in some shares (an overloaded query rank)")
            }
            if c.unequalSpeeds && world.size >= 2 {
                // The dealing must really have followed the speeds: the work per rank differs from
                // equal-work dealing, and (non-causal: one rectangle of all ranks) rank 1 (weight 2)
                // did more than rank 0 (weight 1).
                let perRank = try world.gather(result.stats.evaluatedPairs, root: 0) ?? []
                let perRankEqual = try world.gather(equalWorkPairs, root: 0) ?? []
                let uneven = perRank != perRankEqual && (options.causal || perRank[1] > perRank[0] * 3 / 2)
                print("\(uneven ? "ok  " : "FAIL") P=\(world.size) \(c.name): pairs per rank \(perRank), equal-work dealing \(perRankEqual)")
                if uneven { passed += 1 } else { failed += 1 }
            }
        } else {
            _ = try world.reduce(result.stats.evaluatedPairs, operation: .sum, root: 0)
            if c.unequalSpeeds && world.size >= 2 {
                _ = try world.gather(result.stats.evaluatedPairs, root: 0)
                _ = try world.gather(equalWorkPairs, root: 0)
            }
        }
    }
    if world.rank == 0 { print("\(passed) passed, \(failed) failed") }
    let anyFailed = try world.allReduce(failed, operation: .sum)
    try MPIEnvironment.finalize()
    exit(anyFailed == 0 ? 0 : 1)
} catch {
    FileHandle.standardError.write("DistributedChecks: \(error)\n".data(using: .utf8)!)
    Communicator.world.abort(code: 2)
}
