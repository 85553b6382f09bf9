#!/usr/bin/env bash
# ncu source-level SASS counters for the HyperAttention tile kernel of variant $1 (n = 131072, nc)
set -u
cd "$(dirname "$0")/../.."
R=$PWD; O=${OUT:-/tmp/out}
[ -x /tmp/h ] || { xz -dc .device/lab/hyperattn.xz > /tmp/h; chmod +x /tmp/h; }
v=$1
HYPERATTN_LAB_KERNEL_SOURCE=$R/.device/lab/src/$v.cu timeout 200 ncu --section SourceCounters --section WarpStateStats --section LaunchStats --section Occupancy --import-source no -k regex:"${K:-attn_bf16_d64_hw}" -c 1 -o /tmp/rep-$v -f /tmp/h bench --backend cuda --n 131072 --heads 24 --modes hyper --causal no --repeats 1 > $O/ncu-src-$v.log 2>&1
ncu -i /tmp/rep-$v.ncu-rep --page source --csv --print-source sass > $O/sass-$v.csv 2>&1
ncu -i /tmp/rep-$v.ncu-rep --page details > $O/details-$v.txt 2>&1
ls -la $O/sass-$v.csv; head -3 $O/sass-$v.csv | cut -c1-400
