#!/usr/bin/env python3
# Compiles a CUDA source with NVRTC (the PyPI wheel that `scripts/build.sh --deps-only` installs)
# and prints ptxas's register / spill report for each kernel:
#   python3 docs/results/gpu/tile128/ptxas-check.py kernel.cu [sm_90a]
# (kernel.cu: the raw string of KernelSource.swift, e.g. from
#  docs/results/gpu/tile-probes-h100/extract-kernel-source.py)
import ctypes, glob, sys
libs = sorted(glob.glob('.build-deps/nvrtc/nvidia/cu*/lib/libnvrtc.so*'))
if not libs:
    sys.exit("ptxas-check.py: no NVRTC under .build-deps/nvrtc (run scripts/build.sh --deps-only from the repository root)")
lib = ctypes.CDLL(libs[0])
src = open(sys.argv[1], 'rb').read()
arch = sys.argv[2] if len(sys.argv) > 2 else 'sm_90a'
prog = ctypes.c_void_p()
assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"k.cu", 0, None, None) == 0
opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17", b"-Xptxas", b"-v"]
r = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
n = ctypes.c_size_t(); lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
log = ctypes.create_string_buffer(n.value); lib.nvrtcGetProgramLog(prog, log)
print(log.value.decode())
sys.exit(0 if r == 0 else 1)
