#!/usr/bin/env bash
# `--sample-parts auto` deciding by predicted overload (NEW) against the rule before it, fastest
# over slowest speed ≤ 1.1 (OLD), on this machine's 2 cores: P = 2, causal n = 262144, h = 4,
# first calls (`--repeats 1`), --bind-to core, alternating ROUNDS rounds (default 3) with a busy
# loop pinned to rank 0's core (taskset -c 0: the key side of every spanning rectangle at about
# half speed), then ROUNDS rounds with the cores as they are.   bash local.sh OLD NEW
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
run() {  # label binary
  echo "== $1"
  mpirun -np 2 --bind-to core "$2" bench --n 262144 --modes hyper --causal yes --heads 4 --repeats 1 --threads 1 \
    --error-rows 0 --peak-ms 50 2>&1 | grep -E "^hyper|phases|imbalance|bytes:|sample parts"
}
taskset -c 0 sh -c 'while :; do :; done' & busy=$!
for r in $(seq 1 ${ROUNDS:-3}); do run "slow rank 0, old, round $r" "$1"; run "slow rank 0, new, round $r" "$2"; done
kill $busy
for r in $(seq 1 ${ROUNDS:-3}); do run "even cores, old, round $r" "$1"; run "even cores, new, round $r" "$2"; done
