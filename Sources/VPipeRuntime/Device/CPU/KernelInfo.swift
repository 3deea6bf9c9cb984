import CVPipeKernels

/// Which copy of the vectorised kernels (CVPipeKernels) this machine runs: "avx2+fma" or
/// "baseline". Benchmarks print it next to their numbers.
public enum KernelInfo {
    public static var isa: String { String(cString: vpk_isa()) }
}
