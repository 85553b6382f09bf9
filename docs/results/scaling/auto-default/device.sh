#!/usr/bin/env bash
# The build with --sample-parts auto as the default (hyperattn-new.xz) on a 16-core device host:
# P = 16 causal, n = 2^20, h = 8, auto (default) and blocks alternating ($ROUNDS rounds, default 2),
# then the weak sweep (n = 65536·P, P = 1…16, both causal and non-causal, best of --calls 2 per point).
# The FMA peak per rank in each bench row tells whether the host was quiet (94–95 GFLOP/s).
set -u
cd "$(dirname "$0")/../../../.."
. docs/results/scaling/device-cpu-env.sh
for r in $(seq 1 ${ROUNDS:-2}); do for s in auto blocks; do
  echo "== $s round $r" | tee -a "$O/p16.log"
  mpirun -np 16 --bind-to core /tmp/hn bench --n 1048576 --heads 8 --modes hyper --causal yes --repeats 1 --threads 1 \
    --error-rows 0 --peak-ms 100 --sample-parts $s 2>&1 | grep -v "pmix\|dlopen\|Perhaps" | tee -a "$O/p16.log" | grep -E "^hyper|bytes:|imbalance|sample parts"
done; done
echo "elapsed $SECONDS s"
python3 scripts/scaling-sweep.py --cores 16 --ranks 1,2,4,8,16 --modes hyper --causal both --kinds weak --heads 8 \
  --repeats 1 --calls ${CALLS:-2} --peak-ms 100 --binary /tmp/hn --out "$O/weak" --timeout-per-run 60 > "$O/weak.log" 2>&1
tail -2 "$O/weak.log"; uptime > "$O/uptime-after.txt"; echo "elapsed $SECONDS s"
