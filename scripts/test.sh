#!/usr/bin/env bash
# Runs the whole test suite in release mode (float64 references and the kernels are too slow in
# debug), with the same target CPU as scripts/build.sh. Exits non-zero on any failure.
#
#   scripts/test.sh [extra swift test args...]   e.g. --filter CLITests
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/build.sh --deps-only

echo "== swift test (release)"
swift test -c release -Xswiftc -enable-testing -Xswiftc -target-cpu -Xswiftc haswell "$@"
