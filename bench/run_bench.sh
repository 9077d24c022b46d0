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
# 4. SAE: husai train-sae (topk, default settings: AuxK, Adam, gradient clipping, decoder renorm) against
#    bench/peer_sae.py doing the usual dense PyTorch computation of the same steps on the same `husai synth`
#    activations; d_in 128, d_sae 1024, k 32, batch 4096, the same number of optimizer steps on both sides
#    (the peer adds untimed warm-up steps). Then husai_bench's encoder GEMM (husai tiled, T threads) next to
#    one plain single-threaded Eigen sgemm of the same shape, measured in the same run.
#
# Environment: BENCH_EPOCHS=N  use N epochs on both sides and skip the probes.
#              BENCH_THREADS=T override nproc.
#              BENCH_TARGET_S=S seconds each side should run (default 30).
#              BENCH_SAE_STEPS=N optimizer steps of each SAE side (default 100).
#              BENCH_SKIP_TRANSFORMER=1 only the SAE sections.
#              BENCH_LARGE_STEPS=N steps of the language-model-size SAE section (default 20); 0 skips it.
#
# 5. SAE at a language-model size: topk, d_in 768 -> d_sae 16,384, k 64, batch 4,096, on 32,768 synthetic rows,
#    husai train-sae (peak RSS from /usr/bin/time) against bench/peer_sae.py, BENCH_LARGE_STEPS steps each, and
#    the encoder product at that size (husai's kernel on all threads vs one single-threaded Eigen sgemm).
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
SAE_STEPS=${BENCH_SAE_STEPS:-100}
LARGE_STEPS=${BENCH_LARGE_STEPS:-20}

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

if [[ -z "${BENCH_SKIP_TRANSFORMER:-}" && -x "$BUILD/bin/husai_bench" ]]; then
  echo "== husai_bench (transformer kernels; the SAE ones run in the SAE section)"
  "$BUILD/bin/husai_bench" --benchmark_filter='BM_TiledGemm|BM_EigenGemmOneCore|BM_TransformerTrainStep'
  echo
fi

transformer_section() {

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
}
[[ -n "${BENCH_SKIP_TRANSFORMER:-}" ]] || transformer_section

# ---- SAE: TopK training, husai's fused sparse path vs PyTorch's dense computation -------------------
SAE_SHAPE=(--d-sae 1024 --k 32 --batch-size 4096)
echo
echo "== sae: data (husai synth: d_in 128, 65536 rows)"
"$HUSAI" synth --quiet --d-in 128 --n-features 2048 --active 16 --rows 65536 --seed 1 --out "$TMP/sae.safetensors"
echo "== sae husai: train-sae topk, $SAE_STEPS steps, $THREADS threads"
"$HUSAI" train-sae --quiet --activations "$TMP/sae.safetensors" --architecture topk "${SAE_SHAPE[@]}" \
  --steps "$SAE_STEPS" --threads "$THREADS" --set training.checkpoint_every=0 --out "$TMP/sae-husai"
echo "== sae pytorch: $SAE_STEPS steps (+3 warm-up), $THREADS threads"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" bench/peer_sae.py --activations "$TMP/sae.safetensors" \
  "${SAE_SHAPE[@]}" --steps "$SAE_STEPS" --warmup 3 --threads "$THREADS" >"$TMP/sae-peer.json"
GEMM_JSON=""
if [[ -x "$BUILD/bin/husai_bench" ]]; then
  echo "== sae kernels: husai_bench encoder GEMM (husai tiled, $THREADS threads) vs one Eigen sgemm (1 thread)"
  GEMM_JSON="$TMP/sae-kernels.json"
  OMP_NUM_THREADS=$THREADS "$BUILD/bin/husai_bench" --benchmark_filter='BM_EncoderGemm|BM_TopKTrainStep|ReluTrainStep' \
    --benchmark_min_time=0.5 --benchmark_out="$GEMM_JSON" --benchmark_out_format=json
fi
SAE_LOAD_AFTER=$(load_note)
"$PY" - "$TMP/sae-husai/seed42/metrics.json" "$TMP/sae-peer.json" "$THREADS" "$SAE_LOAD_AFTER" "$GEMM_JSON" <<'EOF'
import json, sys
h, p = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
threads = int(sys.argv[3])
bs = p["batch_size"]
rows = [
    ("husai", h["samples_per_s"], h["steps"], h["final_batch"]["frac_dead"], "fused sparse TopK path (own encoder kernel)"),
    ("pytorch", p["samples_per_s"], p["steps"], p["final_frac_dead"], f"torch {p['torch']}: {p['blas']['summary']}"),
]
print()
print(f"SAE topk: d_in {p['d_in']}, d_sae {p['d_sae']}, k {p['k']}, batch {bs}, AuxK + clip + Adam + decoder "
      f"renorm, {threads} threads")
print(f"{'side':<8} {'samples/s':>11} {'ms/step':>8} {'steps':>6} {'dead':>6}  kernels")
for side, sps, steps, dead, what in rows:
    print(f"{side:<8} {sps:>11.1f} {1e3 * bs / sps:>8.2f} {steps:>6} {dead:>6.3f}  {what}")
print(f"machine after the runs: {sys.argv[4]}")
print(f"ratio (husai / pytorch): {h['samples_per_s'] / p['samples_per_s']:.2f}x (target >= 10x)")
if sys.argv[5]:
    bm = {b["name"].split("/")[0]: b for b in json.load(open(sys.argv[5]))["benchmarks"]}
    gflops = lambda b: b["GFLOP/s"]  # noqa: E731  (the counter already counts GFLOP)
    peak = bm.get("BM_EncoderGemm_EigenSgemm")
    for name, what in (("BM_EncoderGemm_husai_topk_blocks", "as TopK training runs it (packed panels, 64-row blocks)"),
                       ("BM_EncoderGemm_husai", "husai tiled gemm")):
        enc = bm.get(name)
        if enc and peak:
            e, pk, t = gflops(enc), gflops(peak), int(enc.get("threads", threads))
            print(f"encoder GEMM [4096 x 128] x [128 x 1024], {what}: {e:.1f} GFLOP/s on {t} threads "
                  f"({e / t:.1f} per thread); Eigen single-call sgemm peak {pk:.1f} GFLOP/s on 1 thread "
                  f"(per-thread {100 * e / t / pk:.0f}% of it)")
    step = bm.get("BM_TopKTrainStep")
    if step:
        print(f"husai_bench TopK loss + gradient step (AuxK off, no optimizer): {step['real_time']:.2f} ms")
    for arch, bname in (("relu", "BM_ReluTrainStep"), ("jumprelu", "BM_JumpReluTrainStep")):
        sp, de = bm.get(bname + "_sparse"), bm.get(bname + "_dense")
        if sp and de:
            print(f"{arch} loss + gradient step at L0 {sp['l0']:.1f}: sparse path {sp['real_time']:.2f} ms, dense "
                  f"reference {de['real_time']:.2f} ms: {de['real_time'] / sp['real_time']:.2f}x (target >= 2.5x)")
EOF

# ---- SAE at a language-model size -------------------------------------------------------------------
if [[ "$LARGE_STEPS" -gt 0 ]]; then
  LARGE_SHAPE=(--d-sae 16384 --k 64 --batch-size 4096)
  echo
  echo "== sae large: data (husai synth: d_in 768, 32768 rows)"
  "$HUSAI" synth --quiet --d-in 768 --n-features 24576 --active 32 --rows 32768 --seed 2 --out "$TMP/large.safetensors"
  echo "== sae large husai: train-sae topk, $LARGE_STEPS steps, $THREADS threads"
  /usr/bin/time -f "%M" -o "$TMP/large-husai.rss" "$HUSAI" train-sae --quiet --activations "$TMP/large.safetensors" \
    --architecture topk "${LARGE_SHAPE[@]}" --steps "$LARGE_STEPS" --threads "$THREADS" \
    --set training.checkpoint_every=0 --set data.eval_fraction=0.05 --out "$TMP/large-husai"
  echo "== sae large pytorch: $LARGE_STEPS steps (+2 warm-up), $THREADS threads"
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/time -f "%M" -o "$TMP/large-peer.rss" "$PY" bench/peer_sae.py \
    --activations "$TMP/large.safetensors" "${LARGE_SHAPE[@]}" --steps "$LARGE_STEPS" --warmup 2 \
    --threads "$THREADS" >"$TMP/large-peer.json"
  LARGE_GEMM=""
  if [[ -x "$BUILD/bin/husai_bench" ]]; then
    LARGE_GEMM="$TMP/large-kernels.json"
    OMP_NUM_THREADS=$THREADS "$BUILD/bin/husai_bench" --benchmark_filter='BM_EncoderGemmBig' \
      --benchmark_out="$LARGE_GEMM" --benchmark_out_format=json >/dev/null
  fi
  LARGE_LOAD=$(load_note)
  "$PY" - "$TMP/large-husai/seed42/metrics.json" "$TMP/large-peer.json" "$TMP/large-husai.rss" "$TMP/large-peer.rss" \
    "$THREADS" "$LARGE_LOAD" "$LARGE_GEMM" <<'EOF'
import json, sys
h, p = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
rss_h, rss_p = (int(open(f).read().split()[-1]) / 1024 for f in sys.argv[3:5])
bs = p["batch_size"]
print()
print(f"SAE topk at a language-model size: d_in {p['d_in']}, d_sae {p['d_sae']}, k {p['k']}, batch {bs}, "
      f"{sys.argv[5]} threads")
print(f"{'side':<8} {'samples/s':>11} {'ms/step':>9} {'steps':>6} {'peak RSS MB':>12}")
print(f"{'husai':<8} {h['samples_per_s']:>11.1f} {1e3 * bs / h['samples_per_s']:>9.1f} {h['steps']:>6} {rss_h:>12.0f}")
print(f"{'pytorch':<8} {p['samples_per_s']:>11.1f} {1e3 * bs / p['samples_per_s']:>9.1f} {p['steps']:>6} {rss_p:>12.0f}")
print(f"machine after the runs: {sys.argv[6]}")
print(f"ratio (husai / pytorch): {h['samples_per_s'] / p['samples_per_s']:.2f}x (target >= 5x)")
if sys.argv[7]:
    bm = {b["name"].split("/")[0]: b for b in json.load(open(sys.argv[7]))["benchmarks"]}
    enc, peak = bm.get("BM_EncoderGemmBig_husai_topk_blocks"), bm.get("BM_EncoderGemmBig_EigenSgemm")
    if enc and peak:
        t = int(enc.get("threads", 1))
        print(f"encoder product [4096 x 768] x [768 x 16384]: husai {enc['GFLOP/s']:.1f} GFLOP/s on {t} threads "
              f"({enc['real_time']:.0f} ms); one Eigen sgemm {peak['GFLOP/s']:.1f} GFLOP/s on 1 thread; per step "
              f"the product is {enc['real_time']:.0f} of husai's {1e3 * bs / h['samples_per_s']:.0f} ms")
EOF
fi
