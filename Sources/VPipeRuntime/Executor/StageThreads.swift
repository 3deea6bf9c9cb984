#if canImport(Glibc)
import Glibc
#endif

/// The threads a pipeline's stages run on: one per stage of this process, started when the
/// pipeline is built and kept until it shuts down. A step hands every thread its part (the
/// stage's action list, then the stage's optimizer step) and waits for all of them.
///
/// Stages block on each other (a stage waits for its neighbour's activation), so each needs
/// a thread of its own, never a pool that could run two of them one after the other. Threads
/// that live as long as the session spare a step the cost of creating them, and a thread
/// that cannot start is an error when the session opens, naming the stage, instead of a
/// stage that would never run (and a step that would wait for it forever).
final class StageThreads: @unchecked Sendable {
    /// The stage each thread runs (thread k runs `stages[k]`), for messages.
    let stages: [Int]
    private let monitor = Monitor()
    private var job: ((Int) -> Void)?
    /// Bumped for every job; a thread runs each generation once.
    private var generation = 0
    private var running = 0
    private var stopping = false
    private var threads: [pthread_t] = []

    /// Starts one thread per entry of `stages`. `failingStart`: test hook, the stage whose
    /// thread start fails as if pthread_create had refused (EAGAIN).
    init(stages: [Int], failingStart: Int? = nil) throws {
        self.stages = stages
        for (k, stage) in stages.enumerated() {
            let rc = stage == failingStart ? EAGAIN : start(k)
            if rc != 0 {
                shutdown()
                throw RuntimeError.failed("stage \(stage): its thread could not start (pthread_create: \(String(cString: strerror(rc)))); the pipeline was not built")
            }
        }
    }

    deinit { shutdown() }

    /// Runs `body(k)` on thread k for every k in 0..<stages.count; returns when all returned.
    /// One job at a time: the pipeline's step is the only caller.
    func run(_ body: @escaping (Int) -> Void) {
        monitor.locked {
            job = body
            running = threads.count
            generation += 1
            monitor.broadcast()
            while running > 0 { monitor.wait() }
            job = nil
        }
    }

    /// Stops and joins every thread (after the job in progress, if any). Idempotent.
    func shutdown() {
        let joining: [pthread_t] = monitor.locked {
            stopping = true
            monitor.broadcast()
            defer { threads = [] }
            return threads
        }
        for t in joining { pthread_join(t, nil) }
    }

    private func start(_ k: Int) -> Int32 {
        final class Context {
            let owner: StageThreads
            let index: Int
            init(_ owner: StageThreads, _ index: Int) { self.owner = owner; self.index = index }
        }
        let context = Unmanaged.passRetained(Context(self, k)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let c = Unmanaged<Context>.fromOpaque(raw!).takeRetainedValue()
            c.owner.loop(c.index)
            return nil
        }, context)
        if rc != 0 {
            Unmanaged<Context>.fromOpaque(context).release()
            return rc
        }
        monitor.locked { threads.append(thread) }
        return 0
    }

    private func loop(_ k: Int) {
        StageThread.mark()
        var seen = 0
        while true {
            let body: ((Int) -> Void)? = monitor.locked {
                while generation == seen && !stopping { monitor.wait() }
                if stopping { return nil }
                seen = generation
                return job
            }
            guard let body else { return }
            body(k)
            monitor.locked {
                running -= 1
                if running == 0 { monitor.broadcast() }
            }
        }
    }
}
