#!/usr/bin/env bash
# First-call speed calibration on a 16-core device host: hyperattn-old.xz (ba0c6fc, no calibration)
# against hyperattn-new.xz (with it), P = 16, n = 2^20, h = 8, --repeats 1 (a first call each),
# --bind-to core, alternating: non-causal $ROUNDS rounds (default 4), causal 1; then the weak sweep
# of the new build (n = 65536·P, P = 1…16, both causal and non-causal, --calls $CALLS, default 1;
# WEAK=0 skips it).
set -u
cd "$(dirname "$0")/../../../.."
. docs/results/scaling/device-cpu-env.sh
run() {  # label binary causal
  echo "== $1 causal=$3" | tee -a "$O/p16.log"
  mpirun -np 16 --bind-to core "$2" bench --n 1048576 --heads 8 --modes hyper --causal $3 --repeats 1 --threads 1 \
    --error-rows 0 --peak-ms 100 2>&1 | grep -v "pmix\|dlopen\|Perhaps" | tee -a "$O/p16.log" | grep -E "^hyper|phases|imbalance"
}
for r in $(seq 1 ${ROUNDS:-4}); do run "old round $r" /tmp/ho no; run "new round $r" /tmp/hn no; done
run "old round 1" /tmp/ho yes; run "new round 1" /tmp/hn yes
echo "elapsed $SECONDS s"
[ "${WEAK:-1}" = 1 ] && python3 scripts/scaling-sweep.py --cores 16 --ranks 1,2,4,8,16 --modes hyper --causal both --kinds weak --heads 8 \
  --repeats 1 --calls ${CALLS:-1} --peak-ms 100 --binary /tmp/hn --out "$O/weak" --timeout-per-run 60 > "$O/weak.log" 2>&1
tail -2 "$O/weak.log"; uptime > "$O/uptime-after.txt"; echo "elapsed $SECONDS s"
