#!/usr/bin/env bash
# Second call: more alternating rounds of old / new (as device.sh, $ROUNDS, default 3), then two threads
# per rank on the same 16 cores (--threads 2 --bind-to none: 32 threads, each rank's blocks and tiles
# handed out dynamically to its two threads, so a slow core is shared by two ranks), once with
# --threads 1 --bind-to none, and (P1=1, default) the new build on one rank for T1.
set -u
cd "$(dirname "$0")/../../../.."
. docs/results/scaling/device-cpu-env.sh
run() {  # tag binary bind threads ranks
  echo "== $1" | tee -a "$O/ab2-c16.log"
  mpirun -np "$5" --bind-to "$3" "$2" bench --n 1048576 --heads 8 --modes hyper --causal yes --repeats 1 \
    --threads "$4" --error-rows 0 --peak-ms 100 --per-rank true 2>&1 | grep -v "pmix\|dlopen\|Perhaps" | tee -a "$O/ab2-c16.log" | grep -E "^hyper|phases|imbalance"
}
for r in $(seq 1 ${ROUNDS:-3}); do
  run "old round $r" /tmp/ho core 1 16; run "new round $r" /tmp/hn core 1 16
  [ "$r" -le 2 ] && run "new threads 2 bind-to none round $r" /tmp/hn none 2 16
done
run "new threads 1 bind-to none" /tmp/hn none 1 16
echo "elapsed $SECONDS s"
[ "${P1:-1}" = 1 ] && run "new P=1" /tmp/hn core 1 1
uptime > "$O/uptime-after.txt"; echo "elapsed $SECONDS s"
