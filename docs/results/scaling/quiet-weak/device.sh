#!/usr/bin/env bash
# The weak sweep (n = 65536·P, P = 1…16, hyper, causal and not) on a 16-core device host, run
# only if the host is quiet: first the fp32 FMA peak with 16 ranks at once; at ≥ $MIN GFLOP/s per
# rank (default 90; a quiet host gives 94–95) the sweep of hyperattn-new.xz runs, else the script
# stops after ~10 s.
set -u
cd "$(dirname "$0")/../../../.."
. docs/results/scaling/device-cpu-env.sh
peak=$(mpirun -np 16 --bind-to core /tmp/hn bench --n 8192 --heads 1 --modes hyper --causal no --repeats 1 --threads 1 \
  --error-rows 0 --peak-ms 100 2>&1 | tee "$O/peak.log" | sed -n 's/.*fp32 FMA peak: \([0-9.]*\) GFLOP.*/\1/p' | head -1)
per=$(python3 -c "print(round(${peak:-0} / 16, 1))")
echo "FMA peak with 16 ranks: ${peak:-?} GFLOP/s, $per per rank" | tee "$O/quiet.txt"
python3 -c "import sys; sys.exit(0 if $per >= ${MIN:-90} else 1)" || { echo "busy: no sweep"; exit 0; }
python3 scripts/scaling-sweep.py --cores 16 --ranks 1,2,4,8,16 --modes hyper --causal both --kinds weak --heads 8 \
  --repeats 1 --calls 1 --peak-ms 100 --binary /tmp/hn --out "$O/weak" --timeout-per-run 60 > "$O/weak.log" 2>&1
tail -2 "$O/weak.log"
uptime > "$O/uptime-after.txt"; echo "elapsed $SECONDS s"
