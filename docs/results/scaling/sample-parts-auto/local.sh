#!/usr/bin/env bash
# --sample-parts blocks / owners / auto on this machine's 2 cores (P = 2, causal, n = 262144, h = 4,
# --bind-to core, one call each, alternating), first as they are, then with a busy loop pinned to
# rank 1's core (taskset -c 1), so that one rank runs at about half speed. Binary: $1.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
B=$1
round() {
  for r in 1 2; do for s in blocks owners auto; do
    echo "== $1 $s round $r"
    mpirun -np 2 --bind-to core "$B" bench --n 262144 --modes hyper --causal yes --heads 4 --d 64 --repeats 1 --threads 1 \
      --error-rows 0 --peak-ms 50 --sample-parts $s 2>&1 | grep -E "hyper  yes|phases|bytes:|imbalance|sample parts"
  done; done
}
round even
taskset -c 1 sh -c 'while :; do :; done' & busy=$!
round "slow core"
kill $busy
