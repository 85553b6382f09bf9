#!/usr/bin/env bash
# 128-key tiles, run on the device from the repository root with .device carried (build-pair.sh builds
# the binaries): clean build of the committed code (hyperattn.xz) against HEAD + tile128.patch
# (hyperattn-clean.xz), alternating; then test-gpu.sh and gpu-compare.py on the candidate.
set -u
cd "$(dirname "$0")/../../../.."
O=${OUT:-/tmp/out}; mkdir -p $O
{ grep -m1 'model name' /proc/cpuinfo; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $O/env.txt 2>&1; cat $O/env.txt
xz -dc .device/carry/hyperattn.xz > /tmp/hb; xz -dc .device/carry/hyperattn-clean.xz > /tmp/hn; chmod +x /tmp/hb /tmp/hn
for b in hb hn; do /tmp/$b bench --backend cuda --n 16384 --heads 24 --modes hyper --causal no --repeats 1 >/dev/null 2>&1; done
for r in 1 2 3; do for b in hb hn; do
  echo "== $b round $r" | tee -a $O/bench-ab.log
  HYPERATTN_GPU_PROFILE=1 /tmp/$b bench --backend cuda --n 131072 --heads 24 --modes hyper --causal no --repeats 20 2>&1 | tee -a $O/bench-ab.log | grep -A1 "^ *131072"
done; done
echo "elapsed $SECONDS s"
scripts/test-gpu.sh /tmp/hn > $O/test-gpu.log 2>&1; tail -16 $O/test-gpu.log
echo "elapsed $SECONDS s"
python3 scripts/gpu-compare.py --bin /tmp/hn --repeats 10 --json $O/gpu-compare.json > $O/gpu-compare.log 2>&1; echo "gpu-compare rc $?"
tail -22 $O/gpu-compare.log
echo "elapsed $SECONDS s"
for b in hb hn; do
  echo "== causal $b" | tee -a $O/bench-ab-causal.log
  HYPERATTN_GPU_PROFILE=1 /tmp/$b bench --backend cuda --n 131072 --heads 24 --modes hyper --causal yes --repeats 5 2>&1 | tee -a $O/bench-ab-causal.log | grep -A1 "^ *131072"
done
echo "elapsed $SECONDS s"
