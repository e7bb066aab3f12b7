#!/usr/bin/env bash
# Build every fuzz target (fuzz/fuzz_targets/*.rs) and run each for a bounded
# time from its committed seeds (fuzz/seeds/NAME) plus a working corpus
# (fuzz/corpus/NAME, not committed). Fails on the first target that crashes,
# leaves the crashing input in fuzz/artifacts/NAME/ and says how to replay it.
#
#   fuzz/run.sh [SECONDS_PER_TARGET [TARGET…]]     (default 20 s, all targets)
#
# Uses the nightly toolchain with AddressSanitizer when rustup has one; else
# the default toolchain with RUSTC_BOOTSTRAP=1 and no sanitizer (libFuzzer's
# coverage instrumentation needs only stable codegen flags). FUZZ_SANITIZER
# overrides (address, none, …); FUZZ_NIGHTLY=0 takes the stable way even where
# nightly is installed. Installs cargo-fuzz when it is missing.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-20}"
shift || true

tc=()
if [ "${FUZZ_NIGHTLY:-1}" != 0 ] && command -v rustup >/dev/null \
    && rustup toolchain list | grep -q '^nightly'; then
    tc=(+nightly)
    sanitizer="${FUZZ_SANITIZER:-address}"
else
    export RUSTC_BOOTSTRAP=1
    sanitizer="${FUZZ_SANITIZER:-none}"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "${tc[@]}" fuzz list)
fi
echo "fuzz: ${#targets[@]} targets, ${secs}s each, sanitizer $sanitizer, $(cargo "${tc[@]}" --version)"
# `cargo fuzz build` takes one target or none (all).
if [ $# -eq 1 ]; then
    cargo "${tc[@]}" fuzz build --sanitizer "$sanitizer" "$1"
else
    cargo "${tc[@]}" fuzz build --sanitizer "$sanitizer"
fi

failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    log=$(mktemp)
    set +e
    cargo "${tc[@]}" fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=256 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    # (A crash on a seed comes before any "cov:" line: no match is no error.)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1 || true)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
    if [ "$rc" -ne 0 ]; then
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -n 8 || tail -n 20 "$log"
        echo "fuzz: $t CRASHED after ${runs:-?} executions; replay: cargo ${tc[*]} fuzz run $t fuzz/artifacts/$t/<file>"
        failed+=("$t")
    else
        echo "fuzz: $t ok, ${runs:-?} executions in ${secs}s, ${cov:-cov: ?}, corpus $(ls "corpus/$t" | wc -l)"
    fi
    rm -f "$log"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashed: ${failed[*]}"
    exit 1
fi
