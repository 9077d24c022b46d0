#!/usr/bin/env bash
# train-sae end to end on planted-dictionary data: recovery (topk, batchtopk, relu, gated), identical bytes (final SAEs
# and stability snapshots) for 1 vs 2 threads, for several seeds in one pass vs separate runs (each seed its own
# data order, and one shared order), and after kill -9 + --resume; every bad input refused with a clear error
# and nothing written.
set -euo pipefail
HUSAI=$1; WORK=$2
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.bash"
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
"$HUSAI" synth --quiet --d-in 32 --n-features 64 --active 3 --rows 20000 --seed 1 --out synth.safetensors
common=(train-sae --quiet --activations synth.safetensors --d-sae 128 --k 3 --batch-size 256)

for arch in topk batchtopk relu; do
  "$HUSAI" "${common[@]}" --architecture "$arch" --steps 1500 --threads 1 --out "rec_$arch"
  /usr/bin/python3 "$HERE/sae_recovery.py" synth.safetensors "rec_$arch/seed42" 0.9
done
# gated: its L1 penalises the gate pre-activations, a different quantity from relu's latents, so it takes its own
# coefficient (6 gives L0 ~3, the planted number of active features).
gated=("${common[@]}" --architecture gated --l1 6)
"$HUSAI" "${gated[@]}" --steps 1500 --threads 1 --out rec_gated
/usr/bin/python3 "$HERE/sae_recovery.py" synth.safetensors rec_gated/seed42 0.9
# gated after kill -9 + --resume: the same bytes as an uninterrupted run.
kill_resume_matches gated g1 gk "0.15 0.2" \
  "seed42/sae_weights.safetensors seed42/cfg.json seed42/metrics.jsonl trainer_state.safetensors" -- \
  "${gated[@]}" --steps 400 --checkpoint-every 25 --threads 2

args=("${common[@]}" --architecture topk --steps 400 --checkpoint-every 25 --set sae.dead_window=5000)
"$HUSAI" "${args[@]}" --threads 1 --out t1
"$HUSAI" "${args[@]}" --threads 2 --out t2
# Stability snapshots at 1/8, 1/4, 1/2 of the 400 steps.
snaps=""
for n in 50 100 200; do snaps+=" seed42/checkpoints/step_$n/sae_weights.safetensors seed42/checkpoints/step_$n/cfg.json"; done
for n in 50 100 200; do
  grep -q "\"steps\": $n," "t1/seed42/checkpoints/step_$n/cfg.json" || { echo "FAIL: snapshot step_$n lacks steps $n" >&2; exit 1; }
done
for f in seed42/sae_weights.safetensors seed42/metrics.jsonl seed42/cfg.json trainer_state.safetensors $snaps; do
  cmp "t1/$f" "t2/$f" || { echo "FAIL: $f differs between 1 and 2 threads" >&2; exit 1; }
done
echo "1 vs 2 threads: identical bytes"

# Three seeds in one pass vs three separate runs (each seed its own data order, the default).
start=$(date +%s.%N)
"$HUSAI" "${args[@]}" --threads 1 --seeds 42,123,456 --out multi
mid=$(date +%s.%N)
for s in 42 123 456; do "$HUSAI" "${args[@]}" --threads 1 --seeds $s --out "sep_$s"; done
end=$(date +%s.%N)
for s in 42 123 456; do
  cmp "multi/seed$s/sae_weights.safetensors" "sep_$s/seed$s/sae_weights.safetensors" ||
    { echo "FAIL: seed $s differs between one pass and a separate run" >&2; exit 1; }
done
/usr/bin/python3 -c "import sys; a,b,c=map(float,sys.argv[1:]); print('multi-seed one pass: %.2f s, separate: %.2f s, speedup %.2fx' % (b-a, c-b, (c-b)/(b-a)))" "$start" "$mid" "$end"
# One data order shared by all seeds: still the same bytes as a separate run, and not those of the own order.
"$HUSAI" "${args[@]}" --threads 1 --seeds 42,123 --data-order-seed 7 --out multi_shared
"$HUSAI" "${args[@]}" --threads 1 --seeds 123 --data-order-seed 7 --out sep_shared
cmp multi_shared/seed123/sae_weights.safetensors sep_shared/seed123/sae_weights.safetensors ||
  { echo "FAIL: seed 123 differs between one pass and a separate run with a shared data order" >&2; exit 1; }
if cmp -s multi_shared/seed123/sae_weights.safetensors multi/seed123/sae_weights.safetensors; then
  echo "FAIL: a shared data order gave the same SAE as the seed's own order" >&2; exit 1
fi
grep -q '"data_order_seed": 123,' multi/seed123/cfg.json || { echo "FAIL: cfg.json lacks data_order_seed 123" >&2; exit 1; }
grep -q '"data_order_seed": 7,' multi_shared/seed123/cfg.json || { echo "FAIL: cfg.json lacks data_order_seed 7" >&2; exit 1; }
echo "data order: own per seed by default, shared with --data-order-seed; recorded in cfg.json"

# kill -9 at a few moments, resume each time, compare with the uninterrupted run.
"$HUSAI" "${args[@]}" --threads 2 --out k &
pid=$!
for delay in 0.4 0.6 0.8; do
  sleep "$delay"; kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  "$HUSAI" "${args[@]}" --threads 2 --out k --resume &
  pid=$!
done
wait "$pid"
for f in seed42/sae_weights.safetensors seed42/metrics.jsonl $snaps; do
  cmp "t1/$f" "k/$f" || { echo "FAIL: $f differs after kill -9 + resume" >&2; exit 1; }
done
echo "kill -9 + resume: identical bytes"
# A snapshot before the resumed step is never rewritten: removed by hand, it stays missing, with a warning, and
# the manifest lists only the snapshots that exist.
rm -rf k/seed42/checkpoints/step_100
"$HUSAI" "${args[@]}" --threads 2 --out k --resume 2> resume_missing.err
grep -q "checkpoints/step_100 is missing" resume_missing.err || { echo "FAIL: no warning for a missing snapshot" >&2; cat resume_missing.err >&2; exit 1; }
[[ ! -e k/seed42/checkpoints/step_100 ]] || { echo "FAIL: a snapshot before the resumed step was rewritten" >&2; exit 1; }
grep -q "step_100" k/manifest.json && { echo "FAIL: the manifest lists a missing snapshot" >&2; exit 1; }
cmp t1/seed42/sae_weights.safetensors k/seed42/sae_weights.safetensors
echo "resume with a snapshot removed: warned, not recreated, not in the manifest"

/usr/bin/python3 - <<'PY'
import json, struct, array
def write(path, rows, cols, bad_row=None):
    a = array.array('f', [0.5] * (rows * cols))
    if bad_row is not None: a[bad_row * cols + 1] = float('nan')
    h = json.dumps({'activations': {'dtype': 'F32', 'shape': [rows, cols], 'data_offsets': [0, 4 * rows * cols]}}).encode()
    h += b' ' * (-len(h) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(h)) + h + a.tobytes())
write('nan.safetensors', 50, 4, bad_row=17)
write('d16.safetensors', 200, 16)
PY
expect_fail nan "row 17" bad_nan -- "$HUSAI" train-sae --quiet --activations nan.safetensors --out bad_nan
expect_fail key "activations" bad_key -- "$HUSAI" "${common[@]}" --key acts --out bad_key
expect_fail k "exceeds d_sae" bad_k -- "$HUSAI" train-sae --quiet --activations synth.safetensors --d-sae 64 --k 500 --out bad_k
expect_fail resume_d_in "d_in = 32" "" -- "$HUSAI" train-sae --quiet --activations d16.safetensors --d-sae 128 --k 3 \
  --batch-size 256 --architecture topk --steps 400 --checkpoint-every 25 --set sae.dead_window=5000 --out t1 --resume
expect_fail nonempty "not empty" "" -- "$HUSAI" "${args[@]}" --out t1
cmp t1/seed42/sae_weights.safetensors t2/seed42/sae_weights.safetensors
echo "sae_train: all checks passed"
