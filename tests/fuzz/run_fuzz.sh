#!/usr/bin/env bash
# `make fuzz`: runs each libFuzzer target for SECONDS from its seed corpus. New coverage-increasing inputs are
# kept in BUILD/corpus/<target>/ (not in the repository), crashes in BUILD/artifacts/<target>/. A crash,
# sanitizer report or failed invariant fails the run; turn it into a fixed bug plus a regression input in
# tests/fuzz/corpus/<target>/regress-<what> (replayed by `make test`).
set -uo pipefail
BUILD=$1; SECONDS_EACH=$2; shift 2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
failed=()
summary=()
for t in "$@"; do
  mkdir -p "$BUILD/corpus/$t" "$BUILD/artifacts/$t"
  log="$BUILD/fuzz_$t.log"
  echo "fuzz: $t for ${SECONDS_EACH}s (log: $log)"
  start=$(date +%s)
  "$BUILD/bin/husai_fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$t/" \
    "$BUILD/corpus/$t" "$ROOT/tests/fuzz/corpus/$t" > "$log" 2>&1
  rc=$?
  end=$(date +%s)
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
  line="$t: $((end - start)) s, $execs executions, coverage $cov, exit $rc"
  summary+=("$line")
  if ((rc != 0)); then
    failed+=("$t")
    grep -E "ERROR|SUMMARY|invariant|Test unit written" "$log" | head -20
  fi
done
printf 'fuzz: %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (inputs in $BUILD/artifacts/)" >&2
  exit 1
fi
echo "fuzz: all targets clean"
