#!/usr/bin/env bash
# The project's one test command: builds everything, then runs every test of the workspace —
# unit tests, namespace tests and the end-to-end tests on the fake internet (those need root and
# report themselves as skipped otherwise). Extra arguments go to the test binaries, e.g. a
# filter: ./tests/run-all.sh testbed
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Tests append "test: reason" here when they skip (pallium_tests::skip).
export PALLIUM_TEST_SKIP_LOG="$tmp/skipped"
: >"$PALLIUM_TEST_SKIP_LOG"

echo "== cargo build --workspace --all-targets"
cargo build --workspace --all-targets

echo "== cargo test --workspace -- --test-threads=4 $*"
set +e
# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --workspace --no-fail-fast -- --test-threads=4 "$@" 2>&1 | tee "$tmp/log"
status=${PIPESTATUS[0]}
set -e

passed=0 failed=0 ignored=0
while read -r p f i; do
    passed=$((passed + p)) failed=$((failed + f)) ignored=$((ignored + i))
done < <(sed -n 's/^test result: .*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' "$tmp/log")
skipped=$(sort -u "$PALLIUM_TEST_SKIP_LOG" | grep -c . || true)

echo
echo "================ summary ================"
echo "passed:  $passed (of which skipped at run time: $skipped)"
echo "failed:  $failed"
echo "ignored: $ignored"
if [ "$skipped" -gt 0 ]; then
    echo "skipped:"
    sort -u "$PALLIUM_TEST_SKIP_LOG" | sed 's/^/  /'
fi
if [ "$failed" -gt 0 ] || [ "$status" -ne 0 ]; then
    echo "failures:"
    grep -E '^test .* FAILED$|^error: (test failed|could not compile)' "$tmp/log" | sed 's/^/  /' || true
fi
if [ "$(id -u)" != 0 ]; then
    echo "note: not root, so the namespace and end-to-end tests were skipped"
fi
echo "time:    $((SECONDS - start))s"
if [ "$status" -ne 0 ]; then
    echo "RESULT: FAIL (cargo test exited $status)"
else
    echo "RESULT: OK"
fi
exit "$status"
