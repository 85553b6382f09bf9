#!/usr/bin/env bash
set -u
cd "$(dirname "$0")/../.."
R=$PWD
O=${OUT:-/tmp/out}; mkdir -p $O
{ grep -m1 'model name' /proc/cpuinfo; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $O/env.txt 2>&1
cat $O/env.txt
xz -dc .device/carry/hyperattn.xz > /tmp/h; chmod +x /tmp/h
for b in base new; do HYPERATTN_LAB_KERNEL_SOURCE=$R/.device/lab/src/$b.cu /tmp/h bench --backend cuda --n 16384 --heads 24 --modes hyper --causal no --repeats 1 >/dev/null 2>&1; done
for r in 1 2 3; do for b in base new; do
  echo "== $b round $r" | tee -a $O/bench-ab.log
  HYPERATTN_LAB_KERNEL_SOURCE=$R/.device/lab/src/$b.cu HYPERATTN_GPU_PROFILE=1 /tmp/h bench --backend cuda --n 131072 --heads 24 --modes hyper --causal no --repeats 10 2>&1 | tee -a $O/bench-ab.log | grep -A1 "^ *131072"
done; done
HYPERATTN_LAB_KERNEL_SOURCE=$R/.device/lab/src/new.cu scripts/test-gpu.sh /tmp/h > $O/test-gpu.log 2>&1; tail -16 $O/test-gpu.log
for r in 1 2; do for b in base new; do
  echo "== causal $b round $r" | tee -a $O/bench-ab-causal.log
  HYPERATTN_LAB_KERNEL_SOURCE=$R/.device/lab/src/$b.cu HYPERATTN_GPU_PROFILE=1 /tmp/h bench --backend cuda --n 131072 --heads 24 --modes hyper --causal yes --repeats 5 2>&1 | tee -a $O/bench-ab-causal.log | grep -A1 "^ *131072"
done; done
HYPERATTN_LAB_KERNEL_SOURCE=$R/.device/lab/src/new.cu python3 scripts/gpu-compare.py --bin /tmp/h --repeats 10 --json $O/gpu-compare.json > $O/gpu-compare.log 2>&1; echo "gpu-compare rc $?"
tail -25 $O/gpu-compare.log
