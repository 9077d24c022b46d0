#!/usr/bin/env bash
# Divergence guard: a training run whose loss (or weights) stops being finite ends with exit 1 and one message
# naming the step, keeps the last good checkpoint intact (and says where it is), and publishes no final
# weights. Transformer: no LayerNorm with AdamW at lr 10 overflows within a few epochs; SAE: lr 1e30.
set -uo pipefail
HUSAI=$1; WORK=$2
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK" || exit 1

# check NAME RUN_DIR CHECKPOINT FINAL_WEIGHTS -- command...
check() {
  local name=$1 dir=$2 ckpt=$3 final=$4; shift 5
  local rc=0
  "$@" > /dev/null 2> "$name.err" || rc=$?
  local msg; msg=$(grep '^husai: error:' "$name.err")
  [[ $rc -eq 1 ]] || { echo "FAIL: $name: exit code $rc, expected 1" >&2; cat "$name.err" >&2; exit 1; }
  [[ $(grep -c '^husai: error:' "$name.err") -eq 1 ]] || { echo "FAIL: $name: not one error line" >&2; cat "$name.err" >&2; exit 1; }
  grep -qE 'training diverged: .* at step [0-9]+' <<< "$msg" || { echo "FAIL: $name: $msg" >&2; exit 1; }
  [[ ! -e $dir/$final ]] || { echo "FAIL: $name: final weights $final were written" >&2; exit 1; }
  /usr/bin/python3 "$HERE/check_complete.py" "$dir" || { echo "FAIL: $name: half-written files" >&2; exit 1; }
  local step
  step=$(grep -oE 'at step [0-9]+' <<< "$msg" | head -n 1 | grep -oE '[0-9]+')
  if grep -q "last good checkpoint" <<< "$msg"; then
    local kept
    kept=$(grep -oE 'last good checkpoint \(step [0-9]+\)' <<< "$msg" | grep -oE '[0-9]+')
    grep -qF "is kept in $dir/$ckpt" <<< "$msg" || { echo "FAIL: $name: checkpoint path not named: $msg" >&2; exit 1; }
    # The kept checkpoint is from before the divergence and every weight in it is finite.
    /usr/bin/python3 - "$dir/$ckpt" "$kept" "$step" <<'PY' || { echo "FAIL: $name: bad kept checkpoint" >&2; exit 1; }
import json, math, struct, sys
b = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", b[:8])
h = json.loads(b[8:8 + n])
kept, diverged = int(sys.argv[2]), int(sys.argv[3])
assert int(h["__metadata__"]["step"]) == kept < diverged + 1, (h["__metadata__"]["step"], kept, diverged)
for name, t in h.items():
    if name != "__metadata__" and t["dtype"] == "F32":
        s, e = t["data_offsets"]
        vals = struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])
        assert all(math.isfinite(v) for v in vals), name
PY
  else
    grep -q "no checkpoint had been written yet" <<< "$msg" || { echo "FAIL: $name: $msg" >&2; exit 1; }
    [[ ! -e $dir/$ckpt ]] || { echo "FAIL: $name: says no checkpoint, but $ckpt exists" >&2; exit 1; }
  fi
  echo "ok $name: $msg"
}

check transformer t checkpoint.safetensors model.safetensors -- \
  "$HUSAI" train-transformer --quiet --out t --modulus 23 --epochs 200 --train-fraction 0.6 --checkpoint-every 1 \
  --lr 10 --weight-decay 0 --set model.normalization_type=none --set training.warmup_steps=0 \
  --set training.lr_schedule=constant --set model.d_model=32 --set model.n_heads=2 --set model.d_mlp=64 \
  --set training.batch_size=128

"$HUSAI" synth --quiet --d-in 16 --n-features 32 --active 3 --rows 2000 --seed 3 --out synth.safetensors
check sae s trainer_state.safetensors seed1/sae_weights.safetensors -- \
  "$HUSAI" train-sae --quiet --out s --activations synth.safetensors --d-sae 32 --k 3 --batch-size 64 \
  --steps 500 --checkpoint-every 1 --seeds 1,2 --lr 1e30 --set training.lr_warmup_steps=20 \
  --set training.grad_clip_norm=0
echo "divergence: all checks passed"
