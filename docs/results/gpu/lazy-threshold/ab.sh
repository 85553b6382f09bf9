#!/usr/bin/env bash
# FlashAttention-4's rescale threshold in the tile kernels, A/B on one binary.
# Run on a GPU device machine from the repository root with .device/carry carried:
#   hyperattn-new.xz  static build of HEAD + ../tile-probes-h100/host-lab-hook.patch (the hook reads
#                     HYPERATTN_LAB_KERNEL_SOURCE, so all kernel sources run in one binary)
#   lab/base.cu       the committed kernel source (../tile-probes-h100/extract-kernel-source.py)
#   lab/thr.cu        base.cu + lazy-threshold.patch (HyperAttention tile kernels)
#   lab/thrx.cu       thr.cu + exact-lazy.patch (the exact wgmma kernels lazy too, with the threshold)
#   lab/rs.cu         thrx.cu + tc-rowsums.patch (wgmma kernels: row sums by the tensor cores, P times
#                     a ones column, instead of adds in the softmax)
# ROUNDS alternating rounds (default 3) of the non-causal n = 131072, h = 24 call; the exact kernel
# at n = 16384 and causal hyper at n = 131072 once per variant; scripts/test-gpu.sh on each of
# TESTV (default: rs, then thrx).
set -u
cd "$(dirname "$0")/../../../.."
O=${OUT:-/tmp/out}/gpu; mkdir -p "$O"; L=$PWD/.device/carry/lab; V=${VARIANTS:-base thr thrx rs}
{ grep -m1 'model name' /proc/cpuinfo; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > "$O/env.txt" 2>&1; cat "$O/env.txt"
xz -dc .device/carry/hyperattn-new.xz > /tmp/hl; chmod +x /tmp/hl
for v in $V; do HYPERATTN_LAB_KERNEL_SOURCE=$L/$v.cu /tmp/hl bench --backend cuda --n 16384 --heads 24 --modes hyper --causal no --repeats 1 >/dev/null 2>&1; done
for r in $(seq 1 ${ROUNDS:-3}); do for v in $V; do
  echo "== $v round $r" | tee -a "$O/bench-ab.log"
  HYPERATTN_LAB_KERNEL_SOURCE=$L/$v.cu HYPERATTN_GPU_PROFILE=1 /tmp/hl bench --backend cuda --n 131072 --heads 24 \
    --modes hyper --causal no --repeats 20 2>&1 | tee -a "$O/bench-ab.log" | grep -A1 "^ *131072"
done; done
echo "elapsed $SECONDS s"
for v in $V; do
  echo "== $v" | tee -a "$O/exact.log" | tee -a "$O/causal.log"
  HYPERATTN_LAB_KERNEL_SOURCE=$L/$v.cu /tmp/hl bench --backend cuda --n 16384 --heads 24 --modes exact --causal both \
    --repeats 10 2>&1 | tee -a "$O/exact.log" | grep "16384"
  HYPERATTN_LAB_KERNEL_SOURCE=$L/$v.cu HYPERATTN_GPU_PROFILE=1 /tmp/hl bench --backend cuda --n 131072 --heads 24 \
    --modes hyper --causal yes --repeats 5 2>&1 | tee -a "$O/causal.log" | grep -A1 "^ *131072"
done
echo "elapsed $SECONDS s"
for v in ${TESTV:-rs thrx}; do
  HYPERATTN_LAB_KERNEL_SOURCE=$L/$v.cu scripts/test-gpu.sh /tmp/hl > "$O/test-gpu-$v.log" 2>&1; echo "test-gpu $v:"; tail -3 "$O/test-gpu-$v.log"
done
echo "elapsed $SECONDS s"
# gpu-compare.py (SDPA side by side) with the COMPARE variant's kernels (default rs), if its test passed.
C=${COMPARE:-rs}
if grep -q " 0 failed" "$O/test-gpu-$C.log" 2>/dev/null; then
  HYPERATTN_LAB_KERNEL_SOURCE=$L/$C.cu python3 scripts/gpu-compare.py --bin /tmp/hl --repeats 10 --json "$O/gpu-compare-$C.json" > "$O/gpu-compare-$C.log" 2>&1
  echo "gpu-compare $C rc $?"; tail -14 "$O/gpu-compare-$C.log"
fi
echo "elapsed $SECONDS s"
