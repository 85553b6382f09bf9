#!/usr/bin/env python3
# The CUDA kernel source (the raw string cudaKernelSource) of a KernelSource.swift, as a .cu file:
#   python3 extract-kernel-source.py Sources/HyperAttentionCUDA/KernelSource.swift .device/lab/src/base.cu
import sys,re
s=open(sys.argv[1]).read()
i=s.index('let cudaKernelSource = #"""')+len('let cudaKernelSource = #"""')+1
j=s.index('"""#',i)
open(sys.argv[2],'w').write(s[i:j])
