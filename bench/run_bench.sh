#!/usr/bin/env bash
# `make bench`: training throughput of husai against a PyTorch peer doing the same work.
#
#   bash bench/run_bench.sh BUILD_DIR
#
# 1. BUILD_DIR/bin/husai_bench (Google Benchmark kernels), when it was built.
# 2. husai train-transformer on configs/transformer/default.yaml; husai writes metrics.json with
#    samples_per_s / wall_time_s / train_samples and the run's config.json.
# 3. bench/peer_transformer.py on that same config.json (same architecture, task, batch size,
#    optimizer settings), under the Debian interpreter that has python3-torch.
# Both sides get T = nproc threads. Each side runs its own number of epochs, sized from a short
# probe so that it runs ~30 s: the sides can differ in speed by a large factor, one shared epoch
# count could not keep both in the 20-40 s window, and samples/s is per-epoch-count independent.
#
# Environment: BENCH_EPOCHS=N  use N epochs on both sides and skip the probes.
#              BENCH_THREADS=T override nproc.
#              BENCH_TARGET_S=S seconds each side should run (default 30).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
BUILD=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

HUSAI="$BUILD/bin/husai"
PY=/usr/bin/python3 # Debian's python3-torch lives here, not in a pyenv python3 that may be on PATH
CONFIG=configs/transformer/default.yaml
THREADS=${BENCH_THREADS:-$(nproc)}
TARGET_S=${BENCH_TARGET_S:-30}

[[ -x "$HUSAI" ]] || { echo "bench: $HUSAI not found; build first (make build)" >&2; exit 1; }
[[ -f "$CONFIG" ]] || { echo "bench: $CONFIG not found" >&2; exit 1; }
"$PY" -c 'import torch' 2>/dev/null || { echo "bench: $PY cannot import torch (make deps-test)" >&2; exit 1; }

# Both sides use OpenMP, whose threads spin-wait at barriers: on a machine already busy with other
# work, T = nproc threads then fight for the cores and multi-threaded throughput can collapse several
# fold (measured: the peer at 2 threads on a 2-core machine under load ~8 ran 7x slower than with
# OMP_WAIT_POLICY=PASSIVE). Say so rather than report such numbers silently.
load_note() {
  "$PY" -c '
import os, sys
load, cores = os.getloadavg()[0], os.cpu_count()
msg = f"load average {load:.2f} on {cores} cores"
if load > 0.5 * cores:
    msg += f"; WARNING: machine busy, {sys.argv[1]}-thread numbers are unreliable (OpenMP spin-waiting)"
print(msg)' "$THREADS"
}
echo "== bench: $(load_note)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/husai-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# json_get FILE EXPR: evaluate a Python expression over the JSON object `j` in FILE.
json_get() { "$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

# epochs_for SECONDS_PER_EPOCH: how many epochs make about TARGET_S seconds (at least 1).
epochs_for() { "$PY" -c 'import sys; print(max(1, round(float(sys.argv[2]) / max(float(sys.argv[1]), 1e-9))))' "$1" "$TARGET_S"; }

# The peer's threads must be the only knob: a stray OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the
# environment would pin OpenBLAS to another CPU's kernels and blocking, so the peer runs without them.
peer() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" bench/peer_transformer.py "$@"; }

if [[ -x "$BUILD/bin/husai_bench" ]]; then
  echo "== husai_bench (kernels)"
  "$BUILD/bin/husai_bench"
  echo
fi

# ---- husai -------------------------------------------------------------------------------------
if [[ -n "${BENCH_EPOCHS:-}" ]]; then
  H_EPOCHS=$BENCH_EPOCHS
else
  echo "== husai: probe (1 epoch)"
  "$HUSAI" train-transformer --config "$CONFIG" --epochs 1 --out "$TMP/husai-probe" --quiet --threads "$THREADS"
  # wall_time_s of a 1-epoch run includes start-up, so this errs towards fewer epochs.
  H_EPOCHS=$(epochs_for "$(json_get "$TMP/husai-probe/metrics.json" 'j["wall_time_s"]')")
fi
echo "== husai: $H_EPOCHS epochs, $THREADS threads"
"$HUSAI" train-transformer --config "$CONFIG" --epochs "$H_EPOCHS" --out "$TMP/husai" --quiet --threads "$THREADS"
[[ -f "$TMP/husai/metrics.json" && -f "$TMP/husai/config.json" ]] ||
  { echo "bench: husai wrote no metrics.json/config.json in $TMP/husai" >&2; exit 1; }

# ---- PyTorch peer ------------------------------------------------------------------------------
if [[ -n "${BENCH_EPOCHS:-}" ]]; then
  P_EPOCHS=$BENCH_EPOCHS
else
  echo "== pytorch: probe (1 warm-up + 1 timed epoch)"
  peer --config-json "$TMP/husai/config.json" --epochs 1 --threads "$THREADS" >"$TMP/peer-probe.json"
  P_EPOCHS=$(epochs_for "$(json_get "$TMP/peer-probe.json" 'j["wall_s"]')")
fi
echo "== pytorch: $P_EPOCHS epochs (+1 warm-up), $THREADS threads"
peer --config-json "$TMP/husai/config.json" --epochs "$P_EPOCHS" --threads "$THREADS" >"$TMP/peer.json"

LOAD_AFTER=$(load_note)

# ---- report ------------------------------------------------------------------------------------
"$PY" - "$TMP/husai/metrics.json" "$TMP/peer.json" "$H_EPOCHS" "$THREADS" "$LOAD_AFTER" <<'EOF'
import json, sys
h, p = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
h_epochs, threads = int(sys.argv[3]), int(sys.argv[4])
# husai may describe its kernels in metrics.json; if not, they are its own Eigen-based ones.
h_blas = h.get("blas") or h.get("kernels") or "husai kernels (Eigen, no external BLAS)"
if not isinstance(h_blas, str):
    h_blas = json.dumps(h_blas)
rows = [
    ("husai", h["samples_per_s"], h["wall_time_s"], h_epochs, h.get("threads", threads), h_blas),
    ("pytorch", p["samples_per_s"], p["wall_s"], p["epochs"], p["threads"],
     f"torch {p['torch']}: {p['blas']['summary']}"),
]
print()
print(f"{'side':<8} {'samples/s':>11} {'wall s':>8} {'epochs':>6} {'threads':>7}  BLAS")
for side, sps, wall, ep, thr, blas in rows:
    print(f"{side:<8} {sps:>11.1f} {wall:>8.1f} {ep:>6} {thr:>7}  {blas}")
if h.get("n_train") not in (None, p["n_train"]):
    print(f"note: train set sizes differ (husai {h['n_train']}, pytorch {p['n_train']})")
print(f"machine after the runs: {sys.argv[5]}")
print(f"ratio (husai / pytorch): {h['samples_per_s'] / p['samples_per_s']:.2f}x")
EOF
