#!/usr/bin/env bash
# Runs every fuzz target (fuzz/Cargo.toml) for a bounded time from the
# committed corpus (fuzz/corpus/<target>/), with AddressSanitizer (leaks
# included) and libFuzzer's per-input timeout; fails on any crash, leak or
# timeout and leaves the input under target/fuzz/artifacts/. New inputs found
# in the run go to target/fuzz/corpus/<target>/, not into the repository: a
# crash worth keeping becomes fuzz/corpus/<target>/regress-<name> by hand.
#
#   ci/fuzz.sh                 every target, FUZZ_SECONDS (default 20) each
#   ci/fuzz.sh names http_head some targets
#
# cargo-fuzz is not needed: this is the build it would make (sancov coverage,
# ASan, --cfg fuzzing), with RUSTC_BOOTSTRAP letting the stable compiler take
# the -Z flags.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${FUZZ_SECONDS:-20}"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
OUT="$PWD/target/fuzz"
mkdir -p "$OUT/artifacts" "$OUT/corpus"

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(sed -n '/^\[\[bin\]\]/,/^path/ s/^name = "\(.*\)"/\1/p' fuzz/Cargo.toml)
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$OUT/build"
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks \
-Zsanitizer=address" \
  cargo build --release --locked --manifest-path fuzz/Cargo.toml --target "$HOST" \
  $(printf -- '--bin %s ' "${targets[@]}")

failed=()
for t in "${targets[@]}"; do
  seeds="fuzz/corpus/$t"
  [ -d "$seeds" ] && [ -n "$(ls -A "$seeds")" ] || { echo "fuzz: no committed corpus for $t ($seeds)" >&2; exit 1; }
  mkdir -p "$OUT/corpus/$t"
  log="$OUT/$t.log"
  printf '%-16s ' "$t"
  # The first directory receives new inputs; the committed seeds are read only.
  if ASAN_OPTIONS="detect_leaks=1" "$CARGO_TARGET_DIR/$HOST/release/$t" \
      -max_total_time="$SECS" -timeout=5 -rss_limit_mb=1024 -print_final_stats=1 \
      -artifact_prefix="$OUT/artifacts/$t-" "$OUT/corpus/$t" "$seeds" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "ok: ${runs:-?} executions in ${SECS}s, $cov, 0 crashes"
  else
    echo "FAILED (log: $log)"
    grep -E 'ERROR|panicked|SUMMARY|Test unit written' "$log" | head -20 >&2 || true
    failed+=("$t")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: crash, leak or timeout in: ${failed[*]}" >&2
  exit 1
fi
