#!/usr/bin/env bash
# --sample-parts blocks (default) against owners, and the default build's strong scaling, on a device
# machine's 16 CPU cores. Run from the repository root with .device/carry carried: mpi.tar.xz
# (../shared/device/openmpi-bundle.sh .device/mpi, then tar -C .device -cJf .device/carry/mpi.tar.xz mpi),
# hyperattn-old.xz (8768ed1, before the sample-parts work) and hyperattn-new.xz (e862e7f or later),
# both static, haswell.
#   1. P = 16 causal, n = 2^20, h = 8, one call each, alternating old / new blocks / new owners, $ROUNDS
#      rounds (default 2);
#   2. unless SWEEP=0, the new build's strong sweep (default options): causal P = 16 and 1, then
#      (unless NC=0) non-causal P = 1 and 16.
set -u
cd "$(dirname "$0")/../../../.."
. docs/results/scaling/device-cpu-env.sh
for r in $(seq 1 ${ROUNDS:-2}); do for v in "ho" "hn blocks" "hn owners"; do
  set -- $v; extra=(); [ $# -gt 1 ] && extra=(--sample-parts "$2")
  echo "== $v round $r" | tee -a "$O/ab-c16.log"
  mpirun -np 16 --bind-to core /tmp/$1 bench --n 1048576 --heads 8 --modes hyper --causal yes --repeats 1 \
    --threads 1 --error-rows 0 --peak-ms 100 --per-rank true "${extra[@]}" 2>&1 | grep -v "pmix\|dlopen\|Perhaps" | tee -a "$O/ab-c16.log" | grep -E "^hyper|phases|bytes:|imbalance"
done; done
echo "elapsed $SECONDS s"
[ "${SWEEP:-1}" = 0 ] && exit 0
python3 scripts/scaling-sweep.py --cores 16 --ranks 16,1 --modes hyper --causal yes --kinds strong --heads 8 \
  --repeats 1 --peak-ms 100 --binary /tmp/hn --out "$O/strong-c" --timeout-per-run 240 > "$O/strong-c.log" 2>&1
tail -4 "$O/strong-c.log"; echo "elapsed $SECONDS s"
[ "${NC:-1}" = 0 ] && exit 0
python3 scripts/scaling-sweep.py --cores 16 --ranks 1,16 --modes hyper --causal no --kinds strong --heads 8 \
  --repeats 2 --peak-ms 100 --binary /tmp/hn --out "$O/strong-nc" --timeout-per-run 120 > "$O/strong-nc.log" 2>&1
tail -4 "$O/strong-nc.log"; uptime > "$O/uptime-after.txt"; echo "elapsed $SECONDS s"
