#!/usr/bin/env bash
# usage: ab.sh "base A B" ROUNDS [TEST_VARIANT]   (variants: .device/lab/src/NAME.cu; binary .device/lab/hyperattn.xz)
set -u
cd "$(dirname "$0")/../.."
R=$PWD
grep -m1 'model name' /proc/cpuinfo; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
[ -x /tmp/h ] || { xz -dc .device/lab/hyperattn.xz > /tmp/h; chmod +x /tmp/h; }
for b in $1; do HYPERATTN_LAB_KERNEL_SOURCE=$R/.device/lab/src/$b.cu /tmp/h bench --backend cuda --n 16384 --heads 24 --modes hyper --causal no --repeats 1 >/dev/null 2>&1; done
if [ -n "${3:-}" ]; then for tv in $3; do echo "== test-gpu $tv"; HYPERATTN_LAB_KERNEL_SOURCE=$R/.device/lab/src/$tv.cu timeout 300 scripts/test-gpu.sh /tmp/h 2>&1 | tail -${TESTTAIL:-2}; done; fi
for r in $(seq 1 $2); do
  for b in $1; do
    echo "== $b round $r"
    HYPERATTN_LAB_KERNEL_SOURCE=$R/.device/lab/src/$b.cu HYPERATTN_GPU_PROFILE=${PROF:-0} /tmp/h bench --backend cuda --n ${N:-131072} --heads 24 --modes hyper --causal ${CAUSAL:-no} --repeats 20 2>&1 | grep -i "hyper \|phases" | tail -3
  done
done
