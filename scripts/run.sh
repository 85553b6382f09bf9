#!/usr/bin/env bash
# Builds hyperattn (scripts/build.sh) and runs it with the given arguments; with none it runs the
# built-in synthetic job (b=1, 8 heads, n=32768, d=64, causal HyperAttention).
#
#   scripts/run.sh                       # default job
#   scripts/run.sh bench --n 16384,65536 --json bench.json
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/build.sh >&2
exec .build/release/hyperattn "$@"
