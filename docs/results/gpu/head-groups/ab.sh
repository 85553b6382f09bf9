#!/usr/bin/env bash
# Query heads in groups, each group's preparation (hash, sort, control variate) on a high-priority
# stream beside the previous group's tiles: A/B over the number of groups on one binary.
# Run on a GPU device machine from the repository root with .device/carry carried:
#   hyperattn-gpu.xz  static build of the working tree (HYPERATTN_GPU_HEAD_GROUPS picks the groups;
#                     the lab-only HYPERATTN_LAB_PREP_PRIORITY=normal puts the preparations on a
#                     normal-priority stream: variant "4n")
# ROUNDS alternating rounds (default 3) of non-causal n = 131072, h = 24 (median of 20 calls);
# causal once per variant; scripts/test-gpu.sh (each case also at ALT_GROUPS head groups, compared
# bit for bit); gpu-compare.py with COMPARE groups (default 4).
set -u
cd "$(dirname "$0")/../../../.."
O=${OUT:-/tmp/out}/gpu; mkdir -p "$O"; V=${VARIANTS:-1 2 3 4 6 8 4n}
{ grep -m1 'model name' /proc/cpuinfo; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > "$O/env.txt" 2>&1; cat "$O/env.txt"
xz -dc .device/carry/hyperattn-gpu.xz > /tmp/hg; chmod +x /tmp/hg
run() {  # variant, then bench arguments
  local v=$1; shift
  local g=${v%n} p=high; [ "$v" != "$g" ] && p=normal
  HYPERATTN_GPU_HEAD_GROUPS=$g HYPERATTN_LAB_PREP_PRIORITY=$p /tmp/hg bench --backend cuda --heads 24 "$@"
}
run 1 --n 16384 --modes hyper --causal no --repeats 1 > /dev/null 2>&1
for r in $(seq 1 ${ROUNDS:-3}); do for v in $V; do
  echo "== $v round $r" >> "$O/bench-ab.log"
  echo "$v r$r $(run $v --n 131072 --modes hyper --causal no --repeats 20 2>&1 | tee -a "$O/bench-ab.log" | grep "^ *131072")"
done; done
echo "elapsed $SECONDS s"
for v in $V; do
  echo "== $v" >> "$O/causal.log"
  echo "$v causal $(run $v --n 131072 --modes hyper --causal yes --repeats 10 2>&1 | tee -a "$O/causal.log" | grep "^ *131072")"
done
echo "elapsed $SECONDS s"
ALT_GROUPS=${ALT_GROUPS:-3} scripts/test-gpu.sh /tmp/hg > "$O/test-gpu.log" 2>&1; echo "test-gpu:"; tail -2 "$O/test-gpu.log"
echo "elapsed $SECONDS s"
HYPERATTN_GPU_HEAD_GROUPS=${COMPARE:-4} python3 scripts/gpu-compare.py --bin /tmp/hg --repeats 10 --json "$O/gpu-compare.json" > "$O/gpu-compare.log" 2>&1
echo "gpu-compare rc $?"; tail -14 "$O/gpu-compare.log"
echo "elapsed $SECONDS s"
