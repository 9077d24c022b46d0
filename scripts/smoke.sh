#!/usr/bin/env bash
# `make smoke`: the runbook's chain at tiny size (train, evaluate, extract, train SAEs, evaluate them, compare
# them against the nulls), in well under a minute.
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
echo "smoke: train-sae (topk, 2 seeds in one pass) and eval-sae with the SAE spliced into the model"
"$HUSAI" train-sae --quiet --activations "$out/acts.safetensors" --architecture topk --expansion 4 --k 8 \
  --steps 200 --seeds 1,2 --out "$out/sae"
for f in manifest.json seed1/cfg.json seed1/sae_weights.safetensors seed1/metrics.json seed2/cfg.json; do
  [[ -s "$out/sae/$f" ]] || { echo "smoke: missing sae/$f" >&2; exit 1; }
done
"$HUSAI" eval-sae --quiet --sae "$out/sae/seed1" --activations "$out/acts.safetensors" --model "$out/model" \
  --out "$out/eval.json"
/usr/bin/python3 - "$out/eval.json" <<'PY'
import json, math, sys
e = json.load(open(sys.argv[1]))
m = e["metrics"]
for key in ["mse", "explained_variance", "explained_variance_per_dim", "explained_variance_uncentred", "l0", "l1",
            "frac_dead", "frac_dense", "cossim", "l2_ratio", "relative_reconstruction_bias", "ce_loss_score",
            "kl_div_score"]:
    assert key in m and m[key] is not None and math.isfinite(m[key]), key
assert m["l0"] <= 8 + 1e-9, m["l0"]
print(f"smoke: eval-sae EV {m['explained_variance']:.3f}, L0 {m['l0']:.1f}, CE loss score {m['ce_loss_score']:.3f}")
PY
echo "smoke: compare (2 seeds against the default nulls, geometry-matched ones included)"
"$HUSAI" compare --quiet "$out/sae/seed1" "$out/sae/seed2" --activations "$out/acts.safetensors" \
  --bootstrap 200 --no-figures --out "$out/compare"
/usr/bin/python3 - "$out/compare/stability.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert len(s["pairs"]) == 1, s["pairs"]
assert s["settings"]["nulls"] == ["gaussian", "untrained", "covariance", "second_moment", "axis_reflection",
                                  "rotation"], s["settings"]["nulls"]
m = s["summary"]["matched_mean_cos"]
d = m["decision_null"]
print(f"smoke: compare matched_mean_cos {m['trained']['mean']:.3f} vs {d} null {m['nulls'][d]['mean']:.3f}: "
      f"{m['nulls'][d]['verdict']}")
PY
echo "smoke: ok"
