#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Runs `body(item, worker)` for every item in 0..<count on `threads` threads (the caller's
/// thread is worker 0). Items are handed out dynamically from a shared counter; each item's
/// result must depend on the item alone (never on the worker or the order), which is what keeps
/// every result independent of the thread count.
public func parallelFor(_ count: Int, threads: Int, _ body: @escaping @Sendable (_ item: Int, _ worker: Int) -> Void) {
    let workers = max(1, min(threads, count))
    if workers == 1 {
        for i in 0..<count { body(i, 0) }
        return
    }
    let job = ParallelJob(count: count, body: body)
    var tids: [pthread_t] = []
    for w in 1..<workers {
        let context = Unmanaged.passRetained(WorkerStart(job: job, worker: w)).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { raw in
            let start = Unmanaged<WorkerStart>.fromOpaque(raw!).takeRetainedValue()
            start.job.drain(worker: start.worker)
            return nil
        }, context)
        if rc == 0 {
            tids.append(tid)
        } else {
            // Could not start a thread: the remaining workers take its share.
            Unmanaged<WorkerStart>.fromOpaque(context).release()
        }
    }
    job.drain(worker: 0)
    for tid in tids { pthread_join(tid, nil) }
}

private final class ParallelJob: Sendable {
    let count: Int
    let next = Atomic<Int>(0)
    let body: @Sendable (Int, Int) -> Void
    init(count: Int, body: @escaping @Sendable (Int, Int) -> Void) {
        self.count = count
        self.body = body
    }
    func drain(worker: Int) {
        while true {
            let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
            if i >= count { return }
            body(i, worker)
        }
    }
}

private final class WorkerStart {
    let job: ParallelJob
    let worker: Int
    init(job: ParallelJob, worker: Int) {
        self.job = job
        self.worker = worker
    }
}

/// A fixed set of per-worker objects indexed by worker number (no sharing between workers).
package final class PerWorker<T>: @unchecked Sendable {
    private var items: [T]
    package init(count: Int, make: () -> T) { items = (0..<count).map { _ in make() } }
    package subscript(worker: Int) -> T { items[worker] }
    package var all: [T] { items }
}

/// Shared progress bookkeeping: workers add finished cost; the callback is throttled to about
/// one call per percent.
package final class ProgressMeter: Sendable {
    let total: Double
    let done = Atomic<Int>(0)
    let lastReported = Atomic<Int>(-1)
    let callback: (@Sendable (Double) -> Void)?
    package init(total: Double, callback: (@Sendable (Double) -> Void)?) {
        self.total = max(total, 1)
        self.callback = callback
    }
    func add(_ cost: Int) {
        guard let callback else { return }
        let now = done.wrappingAdd(cost, ordering: .relaxed).newValue
        let percent = Int(Double(now) / total * 100)
        let last = lastReported.load(ordering: .relaxed)
        if percent > last, lastReported.compareExchange(expected: last, desired: percent, ordering: .relaxed).exchanged {
            callback(min(1, Double(percent) / 100))
        }
    }
}

/// A monotonic clock in nanoseconds (for timing work items; unaffected by clock changes).
package func monotonicNanoseconds() -> Int {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return t.tv_sec * 1_000_000_000 + t.tv_nsec
}
