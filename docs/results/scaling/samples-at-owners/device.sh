#!/usr/bin/env bash
# Sample parts at the query rows' owners (causal rectangles), on a device machine's 16 CPU cores.
# Run from the repository root with .device/carry carried: mpi.tar.xz (../shared/device/openmpi-bundle.sh
# .device/mpi, then tar -C .device -cJf .device/carry/mpi.tar.xz mpi) and hyperattn-old.xz /
# hyperattn-new.xz (static builds before / after the change, haswell).
#   1. P = 16 causal, n = 2^20, h = 8: old and new alternating, $ROUNDS rounds (default 3), one call each;
#   2. unless SWEEP=0, the new build's strong sweep at P = 1 and 16, causal then (unless NC=0) non-causal.
set -u
cd "$(dirname "$0")/../../../.."
. docs/results/scaling/device-cpu-env.sh
for r in $(seq 1 ${ROUNDS:-3}); do for b in ho hn; do
  echo "== $b round $r" | tee -a "$O/ab-c16.log"
  mpirun -np 16 --bind-to core /tmp/$b bench --n 1048576 --heads 8 --modes hyper --causal yes --repeats 1 \
    --threads 1 --error-rows 0 --peak-ms 100 --per-rank true 2>&1 | tee -a "$O/ab-c16.log" | grep -E "^hyper|phases|bytes:|imbalance"
done; done
echo "elapsed $SECONDS s"
[ "${SWEEP:-1}" = 0 ] && exit 0   # SWEEP=0: the alternating rounds only
python3 scripts/scaling-sweep.py --cores 16 --ranks 16,1 --modes hyper --causal yes --kinds strong --heads 8 \
  --repeats 1 --peak-ms 100 --binary /tmp/hn --out "$O/strong-c" --timeout-per-run 240 > "$O/strong-c.log" 2>&1
tail -4 "$O/strong-c.log"; echo "elapsed $SECONDS s"
[ "${NC:-1}" = 0 ] && exit 0   # NC=0: skip the non-causal sweep (short device budget)
python3 scripts/scaling-sweep.py --cores 16 --ranks 1,16 --modes hyper --causal no --kinds strong --heads 8 \
  --repeats 2 --peak-ms 100 --binary /tmp/hn --out "$O/strong-nc" --timeout-per-run 120 > "$O/strong-nc.log" 2>&1
tail -4 "$O/strong-nc.log"; uptime > "$O/uptime-after.txt"; echo "elapsed $SECONDS s"
