#!/usr/bin/env bash
# A small transformer learns (a + b) mod 47 to > 0.99 accuracy on held-out pairs within seconds.
set -euo pipefail
HUSAI=$1; WORK=$2
rm -rf "$WORK"; mkdir -p "$WORK"
"$HUSAI" train-transformer --quiet --out "$WORK/run" --modulus 47 --epochs 100 --train-fraction 0.8 \
  --set model.n_layers=1 --set model.d_model=64 --set model.d_mlp=256 --set training.batch_size=128 \
  --set training.lr=2e-3 --set training.weight_decay=1.0
val_acc=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['val_acc'])" "$WORK/run/metrics.json")
grok=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['grok_epoch'])" "$WORK/run/metrics.json")
echo "p=47: val_acc=$val_acc grok_epoch=$grok"
/usr/bin/python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0.99 else 1)" "$val_acc" || {
  echo "FAIL: held-out accuracy $val_acc <= 0.99" >&2; exit 1; }
# eval-transformer agrees with metrics.json.
"$HUSAI" eval-transformer --model "$WORK/run" --json | /usr/bin/python3 -c "
import json,sys
ev=json.load(sys.stdin); m=json.load(open(sys.argv[1]))
assert abs(ev['val_acc']-m['val_acc'])<1e-9, (ev, m)
print('eval-transformer agrees:', ev['val_acc'])" "$WORK/run/metrics.json"

# Extraction matches an independent PyTorch forward pass, for the answer position and for all positions.
"$HUSAI" extract --quiet --model "$WORK/run" --out "$WORK/answer.safetensors"
"$HUSAI" extract --quiet --model "$WORK/run" --layer 0 --site mlp_out --position all --out "$WORK/all_l0.safetensors"
"$HUSAI" extract --quiet --model "$WORK/run" --layer 0 --site mlp_out --position answer --out "$WORK/answer_l0.safetensors"
/usr/bin/python3 "$(dirname "$0")/extract_check.py" "$WORK/run" "$WORK/answer.safetensors" "$WORK/all_l0.safetensors" \
  "$WORK/answer_l0.safetensors"

# Bad input: an existing output file is refused; a missing model folder is a clear error.
if "$HUSAI" extract --quiet --model "$WORK/run" --out "$WORK/answer.safetensors" 2> "$WORK/err.txt"; then
  echo "FAIL: existing output accepted" >&2; exit 1
fi
grep -q "output file exists" "$WORK/err.txt"
if "$HUSAI" extract --quiet --model "$WORK/nope" --out "$WORK/x.safetensors" 2> "$WORK/err.txt"; then
  echo "FAIL: missing model accepted" >&2; exit 1
fi
grep -q "nope" "$WORK/err.txt"
echo "small_grok: ok"
