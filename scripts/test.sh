#!/usr/bin/env bash
# Runs the whole test suite in release mode (float64 references and the kernels are too slow in
# debug), with the same target CPU as scripts/build.sh, then the MPI tests (scripts/test-mpi.sh:
# MPIChecks, DistributedChecks for P = 1..8, hyperattn under mpirun with bad inputs, the
# two-host network-namespace run) on the products of the same build. Exits non-zero on any
# failure and ends with one `N passed, N failed` line (suites: swift test, each mpirun).
#
#   scripts/test.sh [extra swift build/test args...]   e.g. --scratch-path /tmp/build
#   TEST_SWIFT_ARGS="--filter CLITests" scripts/test.sh   # filter the swift tests only
#   TEST_SKIP_MPI=1 scripts/test.sh                        # swift tests only
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/build.sh --deps-only || exit 1
flags=(-c release -Xswiftc -enable-testing -Xswiftc -target-cpu -Xswiftc haswell "$@")
swift_args=()
[ -n "${TEST_SWIFT_ARGS:-}" ] && read -r -a swift_args <<<"$TEST_SWIFT_ARGS"

passed=0 failed=0
start=$(date +%s)
echo "== swift build (release, all products)"
if ! swift build "${flags[@]}"; then
    echo "0 passed, 1 failed"
    exit 1
fi
echo "== swift test (release)"
swift test "${flags[@]}" "${swift_args[@]}" 2>&1 | tee /tmp/hyperattn-swift-test.$$.log
rc=${PIPESTATUS[0]}
# swift-testing prints "Test run with N tests ... passed/failed"; count the tests it ran.
tests_passed=$(grep -Eo 'Test run with [0-9]+ tests? (in [0-9]+ suites? )?passed' /tmp/hyperattn-swift-test.$$.log | grep -Eo '[0-9]+' | head -1)
tests_failed=$(grep -Eo 'Test run with [0-9]+ tests? (in [0-9]+ suites? )?failed' /tmp/hyperattn-swift-test.$$.log | grep -Eo '[0-9]+' | head -1)
rm -f /tmp/hyperattn-swift-test.$$.log
if [ "$rc" -eq 0 ]; then
    passed=$((passed + ${tests_passed:-1}))
else
    failed=$((failed + ${tests_failed:-1}))
    echo "-- swift test FAILED (exit $rc)"
fi
echo "-- swift test: $(( $(date +%s) - start ))s"

if [ -z "${TEST_SKIP_MPI:-}" ]; then
    mpi_start=$(date +%s)
    MPI_TEST_SKIP_BUILD=1 MPI_TEST_BUILD_ARGS="${flags[*]:2}" bash scripts/test-mpi.sh 2>&1 | tee /tmp/hyperattn-mpi-test.$$.log
    rc=${PIPESTATUS[0]}
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' /tmp/hyperattn-mpi-test.$$.log | tail -1)
    rm -f /tmp/hyperattn-mpi-test.$$.log
    if [ -n "$summary" ]; then
        passed=$((passed + ${summary%% passed*}))
        f=${summary#*, }
        failed=$((failed + ${f%% failed*}))
    fi
    if [ "$rc" -ne 0 ] && [ "${summary#*, }" = "0 failed" -o -z "$summary" ]; then
        failed=$((failed + 1))
    fi
    echo "-- test-mpi.sh: $(( $(date +%s) - mpi_start ))s"
fi
echo "total time $(( $(date +%s) - start ))s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
