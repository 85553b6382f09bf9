#!/usr/bin/env bash
# First-call speed calibration, A/B on this machine's 2 cores: P = 2, n = 262144, h = 4, one call
# per run (`--repeats 1`, so each run is a DistributedAttention's first call), --bind-to core,
# alternating OLD and NEW binaries; first with a busy loop pinned to rank 1's core (taskset -c 1,
# rank 1 at about half speed), non-causal ROUNDS rounds (default 4) and causal 2; then the cores as
# they are, non-causal ROUNDS rounds.   bash local.sh OLD NEW
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
run() {  # label binary causal
  echo "== $1 causal=$3"
  mpirun -np 2 --bind-to core "$2" bench --n 262144 --modes hyper --causal $3 --heads 4 --repeats 1 --threads 1 \
    --error-rows 0 --peak-ms 50 2>&1 | grep -E "^hyper|phases|imbalance"
}
taskset -c 1 sh -c 'while :; do :; done' & busy=$!
for r in $(seq 1 ${ROUNDS:-4}); do run "slow core, old, round $r" "$1" no; run "slow core, new, round $r" "$2" no; done
for r in 1 2; do run "slow core, old, round $r" "$1" yes; run "slow core, new, round $r" "$2" yes; done
kill $busy
for r in $(seq 1 ${ROUNDS:-4}); do run "even cores, old, round $r" "$1" no; run "even cores, new, round $r" "$2" no; done
