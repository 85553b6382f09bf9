#!/usr/bin/env bash
# Builds hyperattn (scripts/build.sh) and runs it under mpirun on this machine; with no arguments
# it runs the built-in synthetic job (b=1, 8 heads, n=32768, d=64, causal HyperAttention)
# distributed over the ranks, and rank 0 prints one summary.
#
#   scripts/run.sh                                   # default job, HYPERATTN_RANKS ranks
#   HYPERATTN_RANKS=4 scripts/run.sh --n 1048576     # flags go to hyperattn
#   scripts/run.sh bench --n 65536 --json bench.json
#   HYPERATTN_RANKS=1 scripts/run.sh ...             # still under mpirun, one rank
#
# Ranks: HYPERATTN_RANKS (default: the number of cores, at least 2). Oversubscription is allowed
# (more ranks than cores) and ranks are not bound to cores; each rank gets cores/ranks threads
# (at least 1) unless --threads is given. Transport: shared memory (btl self,vader). Running as
# root is allowed (containers). HYPERATTN_BUILD_ARGS adds arguments to scripts/build.sh (e.g.
# "--scratch-path /tmp/build").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_args=()
[[ -n ${HYPERATTN_BUILD_ARGS:-} ]] && read -r -a build_args <<<"$HYPERATTN_BUILD_ARGS"
bash scripts/build.sh "${build_args[@]}" >&2
bin_dir=$(swift build -c release -Xswiftc -target-cpu -Xswiftc haswell "${build_args[@]}" --show-bin-path)

cores=$(nproc 2>/dev/null || echo 2)
ranks=${HYPERATTN_RANKS:-$(( cores < 2 ? 2 : cores ))}

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader}"
export OMPI_MCA_pml="${OMPI_MCA_pml:-ob1}"
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"
exec mpirun --oversubscribe --bind-to none -np "$ranks" "$bin_dir/hyperattn" "$@"
