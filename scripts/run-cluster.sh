#!/usr/bin/env bash
# Runs hyperattn over several nodes with OpenMPI (TCP between nodes).
#
#   scripts/run-cluster.sh HOSTFILE NP [hyperattn args...]
#   scripts/run-cluster.sh hostfiles/example-cluster 4 bench --n 1048576 --modes hyper --json scale.json
#
# Needs: the same release build at the same path on every node (shared file system or copied;
# build with scripts/build.sh), password-less ssh from this node to the others (OpenMPI's
# default launcher), and OpenMPI on every node. Ranks are spread round-robin over the nodes
# (--map-by node); each rank uses cores/(ranks on its node) threads unless --threads is given.
#
# Environment:
#   HYPERATTN_BIN        the binary (default: .build/release/hyperattn)
#   HYPERATTN_TCP_IF     interfaces or subnet for MPI traffic, e.g. eth0 or 10.0.0.0/24
#                        (btl_tcp_if_include and oob_tcp_if_include); default: OpenMPI's choice
#   HYPERATTN_MPIRUN_ARGS extra mpirun arguments (e.g. "--mca plm_rsh_agent /path/to/agent")
# Forwarded to every rank (-x): HYPERATTN_*, OMP_NUM_THREADS, LD_LIBRARY_PATH, PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $# -lt 2 ]]; then
    echo "usage: scripts/run-cluster.sh HOSTFILE NP [hyperattn args...]" >&2
    exit 2
fi
hostfile=$1 np=$2
shift 2
[[ -r $hostfile ]] || { echo "run-cluster.sh: cannot read hostfile $hostfile" >&2; exit 2; }
[[ $np =~ ^[1-9][0-9]*$ ]] || { echo "run-cluster.sh: NP must be a positive integer, got '$np'" >&2; exit 2; }
binary=${HYPERATTN_BIN:-$PWD/.build/release/hyperattn}
[[ -x $binary ]] || { echo "run-cluster.sh: $binary not built (run scripts/build.sh)" >&2; exit 2; }

args=(--hostfile "$hostfile" -np "$np" --map-by node --bind-to none
      --mca pml ob1 --mca btl self,vader,tcp)
if [[ -n ${HYPERATTN_TCP_IF:-} ]]; then
    args+=(--mca btl_tcp_if_include "$HYPERATTN_TCP_IF" --mca oob_tcp_if_include "$HYPERATTN_TCP_IF")
fi
for var in $(compgen -e); do
    case $var in HYPERATTN_*|OMP_NUM_THREADS|LD_LIBRARY_PATH|PATH) args+=(-x "$var") ;; esac
done
extra=()
[[ -n ${HYPERATTN_MPIRUN_ARGS:-} ]] && read -r -a extra <<<"$HYPERATTN_MPIRUN_ARGS"
if [[ $(id -u) -eq 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
exec mpirun "${args[@]}" "${extra[@]}" "$binary" "$@"
