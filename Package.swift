// swift-tools-version: 6.1
//
// libvpipe: the vPipe pipeline-parallel training runtime as an embeddable library.
// Dependencies point one way: VPipe (C ABI) -> VPipeWire -> VPipeRuntime -> VPipeCore.
// See docs/architecture.md.
import PackageDescription

let packageRoot = Context.packageDirectory
// VPIPE_DYNAMIC_STDLIB=1 links the Swift runtime dynamically (`make test-sanitize` only): under
// ThreadSanitizer the statically linked runtime's `static let` initialisation shows up as a
// false race. The shipped library always carries the runtime statically.
let staticStdlib = Context.environment["VPIPE_DYNAMIC_STDLIB"] == nil ? ["-static-stdlib"] : []

let package = Package(
    name: "libvpipe",
    products: [
        // libvpipe.so: the only thing hosts link. Exports vp_* alone (Sources/VPipe/exports.map)
        // and carries the Swift runtime statically, so a host needs nothing from the toolchain.
        .library(name: "vpipe", type: .dynamic, targets: ["VPipe"]),
        .executable(name: "vpipe-cli", targets: ["VPipeCLI"]),
        .executable(name: "vpipe-bench", targets: ["VPipeBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // protoc-c output for proto/vpipe.proto, committed; regenerate with `make proto`.
        .target(
            name: "CVPipeProto",
            path: "Sources/CVPipeProto",
            cSettings: [.unsafeFlags(["-fvisibility=hidden", "-w"])],
            linkerSettings: [.linkedLibrary("protobuf-c")]
        ),
        // OpenBLAS's cblas.h as a Swift module.
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        // Open MPI, loaded by the first MPI session (dlopen + dlsym, Sources/CMPI/mpi.c): the
        // library never links libmpi, so hosts that do not use TRANSPORT_MPI need no MPI.
        .target(
            name: "CMPI",
            path: "Sources/CMPI",
            cSettings: [.unsafeFlags(["-fvisibility=hidden"])]
        ),
        // include/vpipe.h as a Swift module, so the ABI's types come from the public header.
        .systemLibrary(name: "CVPipeABI", path: "Sources/CVPipeABI"),
        // The CPU device's vectorised kernels (softmax, LayerNorm, GELU, cross-entropy and
        // their backwards): C so that clang vectorises them; AVX2+FMA and baseline copies,
        // chosen at run time (Sources/CVPipeKernels/kernels.c), so no -march is needed.
        // Also the checkpoint's CRC-32 (crc32.c: carry-less multiplication, slicing-by-8 tables;
        // no zlib, so that libvpipe.so needs nothing beyond glibc and the C++ runtime).
        .target(
            name: "CVPipeKernels",
            path: "Sources/CVPipeKernels",
            exclude: ["kernels_body.h"],
            cSettings: [.unsafeFlags(["-O3", "-fvisibility=hidden"])]
        ),
        // Pure Swift: model/cluster/plan types, cost model, planners.
        .target(name: "VPipeCore"),
        // Tensors and kernels (thin until the runtime issue).
        .target(name: "VPipeRuntime", dependencies: ["VPipeCore", "CBLAS", "CMPI", "CVPipeKernels"]),
        // protobuf-c structs <-> Swift values, nothing else.
        .target(name: "VPipeWire", dependencies: ["VPipeCore", "VPipeRuntime", "CVPipeProto"]),
        // The C ABI: validate, convert, call, map errors.
        .target(
            name: "VPipe",
            dependencies: ["VPipeWire", "VPipeCore", "CVPipeABI"],
            exclude: ["exports.map"],
            linkerSettings: [
                .unsafeFlags(staticStdlib + [
                    "-Xlinker", "--version-script=\(packageRoot)/Sources/VPipe/exports.map",
                ])
            ]
        ),
        // The `vpipe` command-line tool (product `vpipe-cli`, binary `vpipe-cli`; `make build`
        // copies it to bin/vpipe because a product may not share the library's name).
        .executableTarget(
            name: "VPipeCLI",
            dependencies: [
                "VPipeCore", "VPipeWire", "VPipeRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/vpipe"
        ),
        // Benchmarks behind docs/benchmarks.md (`make bench-planner`).
        .executableTarget(name: "VPipeBench", dependencies: ["VPipeCore", "VPipeRuntime", "VPipeWire", "CMPI"], path: "Sources/VPipeBench"),
        // Golden/ holds schedule golden files, read from the source tree by the tests.
        .testTarget(name: "VPipeCoreTests", dependencies: ["VPipeCore"], exclude: ["Golden"]),
        .testTarget(name: "VPipeWireTests", dependencies: ["VPipeWire", "VPipeCore", "CVPipeProto"]),
        .testTarget(name: "VPipeRuntimeTests", dependencies: ["VPipeRuntime", "CVPipeKernels"]),
    ]
)
