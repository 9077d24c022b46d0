# Shared helpers of the integration scripts (sourced, not run; $HUSAI must be set).

# expect_fail NAME PATTERN OUTPATH -- command...: the command must fail, its stderr must contain PATTERN, and
# OUTPATH (when not empty) must not exist afterwards.
expect_fail() {
  local name=$1 pattern=$2 out=$3; shift 4
  if "$@" 2> "$name.err"; then echo "FAIL: $name accepted" >&2; exit 1; fi
  grep -q -- "$pattern" "$name.err" || { echo "FAIL: $name: message lacks '$pattern'" >&2; cat "$name.err" >&2; exit 1; }
  if [[ -n "$out" && -e "$out" ]]; then echo "FAIL: $name wrote $out" >&2; exit 1; fi
  echo "refused ($name): $(head -c 200 "$name.err")"
}

# kill_resume_matches NAME REF OUT "DELAYS" "FILES" -- husai args (without --out): trains REF uninterrupted, then
# OUT killed with SIGKILL after each delay (seconds) and resumed each time; every file of FILES must be
# byte-identical in REF and OUT.
kill_resume_matches() {
  local name=$1 ref=$2 out=$3 delays=$4 files=$5 pid delay f; shift 6
  "$HUSAI" "$@" --out "$ref"
  "$HUSAI" "$@" --out "$out" &
  pid=$!
  for delay in $delays; do
    sleep "$delay"; kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    "$HUSAI" "$@" --out "$out" --resume &
    pid=$!
  done
  wait "$pid"
  for f in $files; do
    cmp "$ref/$f" "$out/$f" || { echo "FAIL: $name $f differs after kill -9 + resume" >&2; exit 1; }
  done
  echo "$name kill -9 + resume: identical bytes"
}
