#!/usr/bin/env bash
# `make smoke`: the runbook's chain at tiny size (train, evaluate, extract, resume), in well under a minute.
set -euo pipefail
HUSAI=${1:-build/bin/husai}
out=$(mktemp -d /tmp/husai-smoke.XXXXXX)
trap 'rm -rf "$out"' EXIT
echo "smoke: train-transformer (p=47, 1 layer)"
"$HUSAI" train-transformer --quiet --out "$out/model" --modulus 47 --epochs 60 --train-fraction 0.8 \
  --set model.n_layers=1 --set model.d_model=64 --set model.d_mlp=256 --set training.batch_size=128 --set training.lr=2e-3
for f in model.safetensors config.json split.safetensors metrics.json metrics.jsonl manifest.json grokking.png; do
  [[ -s "$out/model/$f" ]] || { echo "smoke: missing $f" >&2; exit 1; }
done
echo "smoke: eval-transformer"
"$HUSAI" eval-transformer --model "$out/model"
echo "smoke: extract (answer position, and all positions)"
"$HUSAI" extract --quiet --model "$out/model" --out "$out/acts.safetensors"
"$HUSAI" extract --quiet --model "$out/model" --layer 0 --site mlp_out --position all --out "$out/acts_all.safetensors"
echo "smoke: ok"
