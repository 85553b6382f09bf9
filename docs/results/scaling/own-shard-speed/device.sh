#!/usr/bin/env bash
# Own-shard blocks in the speed history, A/B on a device machine's 16 CPU cores, with each CPU's steal
# time, then (GPU=1, default) the control variate's fp32 batch sums on its GPU. Run from the repository
# root with .device/carry carried: mpi.tar.xz, hyperattn-old.xz (e862e7f: the speed history sees the
# rectangles' blocks only), hyperattn-new.xz (the own-shard blocks counted too; built with
# docs/results/gpu/tile-probes-h100/host-lab-hook.patch, inert unless HYPERATTN_LAB_KERNEL_SOURCE is
# set), and for the GPU part lab/base.cu (the committed kernel source) and lab/cvf.cu (the variant).
#   1. P = 16 causal, n = 2^20, h = 8, one call each (a call's first run: the case the change is for),
#      alternating old / new, $ROUNDS rounds (default 2); then new with --bind-to none once.
#      /proc/stat's cpu lines before and after every run go to stat.log (steal = 8th field).
#   2. GPU: non-causal n = 131072, h = 24, $GROUNDS alternating rounds of base / cvf (20 calls each,
#      HYPERATTN_GPU_PROFILE=1), scripts/test-gpu.sh with cvf, gpu-compare.py with cvf if it passed.
set -u
cd "$(dirname "$0")/../../../.."
. docs/results/scaling/device-cpu-env.sh
snap() { { echo "== $1"; grep '^cpu' /proc/stat; } >> "$O/stat.log"; }
run() {  # tag binary bind
  echo "== $1" | tee -a "$O/ab-c16.log"; snap "$1 before"
  mpirun -np 16 --bind-to "$3" "$2" bench --n 1048576 --heads 8 --modes hyper --causal yes --repeats 1 \
    --threads 1 --error-rows 0 --peak-ms 100 --per-rank true 2>&1 | grep -v "pmix\|dlopen\|Perhaps" | tee -a "$O/ab-c16.log" | grep -E "^hyper|phases|imbalance"
  snap "$1 after"
}
for r in $(seq 1 ${ROUNDS:-2}); do run "old round $r" /tmp/ho core; run "new round $r" /tmp/hn core; done
[ "${BINDNONE:-1}" = 1 ] && run "new bind-to none" /tmp/hn none
echo "elapsed $SECONDS s"
[ "${GPU:-1}" = 0 ] && exit 0
L=$PWD/.device/carry/lab; G=$O/gpu; mkdir -p "$G"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee "$G/bench-ab.log"
for v in base cvf; do HYPERATTN_LAB_KERNEL_SOURCE=$L/$v.cu /tmp/hn bench --backend cuda --n 16384 --heads 24 --modes hyper --causal no --repeats 1 >/dev/null 2>&1; done
for r in $(seq 1 ${GROUNDS:-3}); do for v in base cvf; do
  echo "== $v round $r" | tee -a "$G/bench-ab.log"
  HYPERATTN_LAB_KERNEL_SOURCE=$L/$v.cu HYPERATTN_GPU_PROFILE=1 /tmp/hn bench --backend cuda --n 131072 --heads 24 \
    --modes hyper --causal no --repeats 20 2>&1 | tee -a "$G/bench-ab.log" | grep -A1 "^ *131072"
done; done
for v in base cvf; do
  echo "== $v causal" | tee -a "$G/bench-ab.log"
  HYPERATTN_LAB_KERNEL_SOURCE=$L/$v.cu HYPERATTN_GPU_PROFILE=1 /tmp/hn bench --backend cuda --n 131072 --heads 24 \
    --modes hyper --causal yes --repeats 5 2>&1 | tee -a "$G/bench-ab.log" | grep -A1 "^ *131072"
done
echo "elapsed $SECONDS s"
HYPERATTN_LAB_KERNEL_SOURCE=$L/cvf.cu scripts/test-gpu.sh /tmp/hn > "$G/test-gpu-cvf.log" 2>&1; echo "test-gpu cvf:"; tail -3 "$G/test-gpu-cvf.log"
echo "elapsed $SECONDS s"
if grep -q " 0 failed" "$G/test-gpu-cvf.log" && [ "${COMPARE:-1}" = 1 ]; then
  HYPERATTN_LAB_KERNEL_SOURCE=$L/cvf.cu python3 scripts/gpu-compare.py --bin /tmp/hn --repeats 10 --json "$G/gpu-compare-cvf.json" > "$G/gpu-compare-cvf.log" 2>&1
  echo "gpu-compare cvf rc $?"; tail -14 "$G/gpu-compare-cvf.log"
fi
echo "elapsed $SECONDS s"
