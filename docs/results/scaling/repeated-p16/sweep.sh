#!/usr/bin/env bash
# The strong sweep of the same build right after device.sh, on the same (then quiet) machine:
# P = 1, 2, 4, 8, 16, n = 2^20, h = 8; non-causal best of 2 runs per point, causal one run.
set -u
cd "$(dirname "$0")/../../../.."
. docs/results/scaling/device-cpu-env.sh
python3 scripts/scaling-sweep.py --cores 16 --ranks 1,2,4,8,16 --modes hyper --causal no --kinds strong --heads 8 \
  --repeats 2 --peak-ms 100 --binary /tmp/hn --out "$O/strong-nc" --timeout-per-run 120 > "$O/strong-nc.log" 2>&1
tail -3 "$O/strong-nc.log"; echo "elapsed $SECONDS s"
python3 scripts/scaling-sweep.py --cores 16 --ranks 16,8,4,2,1 --modes hyper --causal yes --kinds strong --heads 8 \
  --repeats 1 --peak-ms 100 --binary /tmp/hn --out "$O/strong-c" --timeout-per-run 240 > "$O/strong-c.log" 2>&1
tail -3 "$O/strong-c.log"; uptime > "$O/uptime-after.txt"; echo "elapsed $SECONDS s"
