import CBLAS

/// OpenBLAS threads. A pipeline already runs one thread per stage; letting every stage's
/// sgemm fan out over all cores as well oversubscribes them (p stages × n BLAS threads on n
/// cores), which on this machine made a 4-stage pipeline several times slower. So a
/// multi-stage pipeline gives each stage one BLAS thread; one stage keeps OpenBLAS's default.
/// The setting is process-wide (OpenBLAS has no per-thread count).
public enum BLASThreads {
    public static var count: Int { Int(openblas_get_num_threads()) }
    public static func set(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }
}
