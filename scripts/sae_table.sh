#!/usr/bin/env bash
# Trains every SAE architecture with its built-in defaults on one activation file, evaluates each with the
# SAE spliced into the transformer, checks that training reached a plateau, and prints a markdown table.
#   scripts/sae_table.sh HUSAI ACTIVATIONS MODEL_DIR OUT_DIR
# Plateau: the mean training-batch explained variance of the last 5% of logged steps differs from that of
# the 5% before by less than 0.001 (i.e. EV changes < 0.001 over the last 10% of steps).
set -euo pipefail
HUSAI=$1; ACTS=$2; MODEL=$3; OUT=$4
mkdir -p "$OUT"
mapfile -t ARCHS < <("$HUSAI" architectures --names)
for arch in "${ARCHS[@]}"; do
  # Reuse an earlier SAE only when it was trained on these activations (cfg.json names its activation file).
  if [[ ! -f "$OUT/$arch/seed42/metrics.json" ]] || ! grep -qF "\"$ACTS\"" "$OUT/$arch/seed42/cfg.json"; then
    rm -rf "$OUT/$arch"
    start=$(date +%s%N)
    "$HUSAI" train-sae --quiet --activations "$ACTS" --architecture "$arch" --seeds 42 --out "$OUT/$arch"
    end=$(date +%s%N)
    echo "$(( (end - start) / 1000000 ))" > "$OUT/$arch/train_ms.txt"
  fi
  "$HUSAI" eval-sae --quiet --overwrite --sae "$OUT/$arch/seed42" --activations "$ACTS" --model "$MODEL" \
    --out "$OUT/$arch/eval.json"
done
/usr/bin/python3 - "$OUT" "${ARCHS[@]}" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| architecture | L0 | explained variance | dead fraction | CE loss score | KL div score | answer acc (spliced) | train time | plateau (dEV last 10%) |")
print("|---|---|---|---|---|---|---|---|---|")
ok = True
for arch in sys.argv[2:]:
    d = out / arch
    e = json.load(open(d / "eval.json"))
    m, s = e["metrics"], e["splice"]
    curve = [json.loads(l) for l in open(d / "seed42" / "metrics.jsonl")]
    n = max(2, len(curve) // 20)
    last = sum(c["explained_variance"] for c in curve[-n:]) / n
    prev = sum(c["explained_variance"] for c in curve[-2 * n:-n]) / n
    delta = last - prev
    plateau = abs(delta) < 1e-3
    ok &= plateau
    secs = float(open(d / "train_ms.txt").read()) / 1000
    print(f"| {arch} | {m['l0']:.1f} | {m['explained_variance']:.4f} | {m['frac_dead']:.3f} | "
          f"{s['ce_loss_score']:.4f} | {s['kl_div_score']:.4f} | {s['accuracy_sae']:.4f} | {secs:.0f} s | "
          f"{'yes' if plateau else 'NO'} ({delta:+.4f}) |")
print(f"\n(all rows of {e['activations']['path']}, hook {e['activations']['hook_name']}; clean answer accuracy "
      f"{s['accuracy_clean']:.4f}, zero-ablation {s['accuracy_zero_ablation']:.4f})")
sys.exit(0 if ok else 3)
PY
