#!/usr/bin/env bash
# `--sample-parts auto` by predicted overload (hyperattn-new.xz) against the rule before it
# (hyperattn-old.xz = 3d0b8ae, "owners while the speeds are within 10%") on a 16-core device host:
# P = 16, causal n = 2^20, h = 8, first calls, --bind-to core, alternating ROUNDS rounds (default
# 2); then, if the 16-rank FMA peak says the host is quiet (≥ MIN GFLOP/s per rank, default 90),
# the weak sweep of the new build (docs/results/scaling/quiet-weak/device.sh).
set -u
cd "$(dirname "$0")/../../../.."
. docs/results/scaling/device-cpu-env.sh
run() {  # label binary
  echo "== $1" | tee -a "$O/p16.log"
  mpirun -np 16 --bind-to core "$2" bench --n 1048576 --heads 8 --modes hyper --causal yes --repeats 1 --threads 1 \
    --error-rows 0 --peak-ms 100 2>&1 | grep -v "pmix\|dlopen\|Perhaps" | tee -a "$O/p16.log" | grep -E "^hyper|peak:|bytes:|imbalance|sample parts"
}
for r in $(seq 1 ${ROUNDS:-2}); do run "old round $r" /tmp/ho; run "new round $r" /tmp/hn; done
echo "elapsed $SECONDS s"
bash docs/results/scaling/quiet-weak/device.sh
