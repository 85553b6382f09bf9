#!/usr/bin/env bash
# Next measurement (not run yet): --sample-parts blocks (default), owners and auto alternating at
# P = 16 causal (n = 2^20, h = 8, one run per call, $ROUNDS rounds, default 2; auto needs a build
# with it), then the weak sweep (n = 65536·P, P = 1…16, both causal and non-causal, one run per point).
set -u
cd "$(dirname "$0")/../../../.."
. docs/results/scaling/device-cpu-env.sh
for r in $(seq 1 ${ROUNDS:-2}); do for s in ${PLACEMENTS:-blocks owners auto}; do
  echo "== $s round $r" | tee -a "$O/owners.log"
  mpirun -np 16 --bind-to core /tmp/hn bench --n 1048576 --heads 8 --modes hyper --causal yes --repeats 1 --threads 1 \
    --error-rows 0 --peak-ms 100 --sample-parts $s 2>&1 | grep -v "pmix\|dlopen\|Perhaps" | tee -a "$O/owners.log" | grep -E "^hyper|phases|bytes:|imbalance|sample parts"
done; done
echo "elapsed $SECONDS s"
python3 scripts/scaling-sweep.py --cores 16 --ranks 1,2,4,8,16 --modes hyper --causal both --kinds weak --heads 8 \
  --repeats 1 --peak-ms 100 --binary /tmp/hn --out "$O/weak" --timeout-per-run 60 > "$O/weak.log" 2>&1
tail -3 "$O/weak.log"; echo "elapsed $SECONDS s"
