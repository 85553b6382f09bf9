#!/usr/bin/env bash
# Strong scaling P = 1 against P = 16 on a device machine's 16 CPU cores, with several P = 16 calls, because
# single runs on these shared hosts vary by up to 40%. Run from the repository root with .device/carry
# carried: mpi.tar.xz and hyperattn-new.xz (a clean static build of the commit measured). n = 2^20, h = 8,
# default options, 1 thread per rank, --bind-to core.
#   causal: $CN (default 5) calls at P = 16, one run each (a call's first run), then P = 1 once;
#   non-causal: $NN (default 4) calls at P = 16 and 2 at P = 1, best of 2 runs each (as the sweeps).
set -u
cd "$(dirname "$0")/../../../.."
. docs/results/scaling/device-cpu-env.sh
run() {  # log ranks causal repeats tag
  echo "== $5" | tee -a "$O/$1.log"
  mpirun -np "$2" --bind-to core /tmp/hn bench --n 1048576 --heads 8 --modes hyper --causal "$3" --repeats "$4" \
    --threads 1 --error-rows 0 --peak-ms 100 --per-rank true 2>&1 | grep -v "pmix\|dlopen\|Perhaps" | tee -a "$O/$1.log" | grep -E "^hyper|phases|imbalance"
}
for i in $(seq 1 ${CN:-5}); do run causal 16 yes 1 "causal P=16 call $i"; done
run causal 1 yes 1 "causal P=1"
echo "elapsed $SECONDS s"
for i in $(seq 1 ${NN:-4}); do run noncausal 16 no 2 "non-causal P=16 call $i"; done
for i in 1 2; do run noncausal 1 no 2 "non-causal P=1 call $i"; done
uptime > "$O/uptime-after.txt"; echo "elapsed $SECONDS s"
