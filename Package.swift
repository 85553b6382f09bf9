// swift-tools-version:6.0
//
// hyperattn-swift: HyperAttention (Han et al., ICLR 2024) over very long sequences, with a
// SIMD CPU core, an MPI sequence-parallel layer and an optional run-time-loaded GPU backend.
//
// CPU target: the kernels need AVX2+FMA code generation, which Swift only emits when the build
// names a target CPU. This manifest deliberately carries no `unsafeFlags` (SwiftPM refuses those in
// packages that are depended upon by version), so the flag is passed on the command line:
//
//     swift build -c release -Xswiftc -target-cpu -Xswiftc haswell
//
// `scripts/build.sh`, `scripts/test.sh` and `scripts/run.sh` do this; a package that depends on
// `HyperAttention` should build with the same two `-Xswiftc` arguments (README, "Building").
// `haswell` is the x86-64-v3 level (AVX2, FMA, BMI2), so such a binary runs on any x86-64-v3 CPU;
// `hyperattn` checks the CPU before Swift code runs and refuses cleanly on an older one.
import PackageDescription

let package = Package(
    name: "hyperattn-swift",
    products: [
        .library(name: "HyperAttention", targets: ["HyperAttention"]),
        .library(name: "NPY", targets: ["NPY"]),
        .library(name: "MPI", targets: ["MPI"]),
        .library(name: "DistributedHyperAttention", targets: ["DistributedHyperAttention"]),
        .library(name: "HyperAttentionCUDA", targets: ["HyperAttentionCUDA"]),
        .executable(name: "hyperattn", targets: ["hyperattn"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
    ],
    targets: [
        // MARK: - Core (no MPI)
        .target(
            name: "HyperAttention",
            path: "Sources/HyperAttention"
        ),
        .target(
            name: "NPY",
            dependencies: ["HyperAttention"],
            path: "Sources/NPY"
        ),

        // MARK: - MPI
        .systemLibrary(
            name: "CMPI",
            path: "Sources/CMPI",
            pkgConfig: "ompi",
            providers: [.apt(["libopenmpi-dev"])]
        ),
        .target(
            name: "MPI",
            dependencies: ["CMPI"],
            path: "Sources/MPI"
        ),
        .target(
            name: "DistributedHyperAttention",
            // HyperAttentionCUDA: `options.backend = .cuda` computes each rank's pieces on its GPU
            // (the driver is loaded at run time; nothing CUDA is linked).
            dependencies: ["HyperAttention", "MPI", "HyperAttentionCUDA"],
            path: "Sources/DistributedHyperAttention"
        ),

        // MARK: - GPU (optional at run time: the CUDA driver and NVRTC are loaded with dlopen)
        .target(
            name: "CUDADriver",
            path: "Sources/CUDADriver"
        ),
        .target(
            name: "HyperAttentionCUDA",
            dependencies: ["HyperAttention", "CUDADriver"],
            path: "Sources/HyperAttentionCUDA"
        ),

        // MARK: - Executable
        .target(
            name: "CPUFeatures",
            path: "Sources/CPUFeatures"
        ),
        .executableTarget(
            name: "hyperattn",
            dependencies: [
                "HyperAttention", "NPY", "CPUFeatures", "DistributedHyperAttention", "MPI", "HyperAttentionCUDA",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/hyperattn"
        ),

        // MARK: - Test support and tests
        // Programs run under `mpirun` by scripts/test-mpi.sh and the MPI test bundle.
        .executableTarget(
            name: "MPIChecks",
            dependencies: ["MPI"],
            path: "Sources/MPIChecks"
        ),
        .executableTarget(
            name: "DistributedChecks",
            dependencies: ["DistributedHyperAttention", "HyperAttention", "HyperAttentionCUDA", "MPI", "HyperAttentionTestSupport"],
            path: "Sources/DistributedChecks"
        ),
        .target(
            name: "HyperAttentionTestSupport",
            dependencies: ["HyperAttention"],
            path: "Sources/HyperAttentionTestSupport"
        ),
        .testTarget(
            name: "HyperAttentionTests",
            dependencies: ["HyperAttention", "HyperAttentionTestSupport"],
            path: "Tests/HyperAttentionTests"
        ),
        .testTarget(
            name: "NPYTests",
            dependencies: ["NPY"],
            path: "Tests/NPYTests"
        ),
        .testTarget(
            name: "CUDATests",
            dependencies: ["HyperAttentionCUDA", "CUDADriver", "HyperAttention", "HyperAttentionTestSupport"],
            path: "Tests/CUDATests"
        ),
        .testTarget(
            name: "MPITests",
            path: "Tests/MPITests"
        ),
        .testTarget(
            name: "DistributedHyperAttentionTests",
            dependencies: ["DistributedHyperAttention", "HyperAttention"],
            path: "Tests/DistributedHyperAttentionTests"
        ),
        .testTarget(
            name: "CLITests",
            dependencies: ["NPY", "HyperAttentionTestSupport"],
            path: "Tests/CLITests"
        ),
    ],
    swiftLanguageModes: [.v5]
)
