#!/usr/bin/env bash
# husai experiment transformer-seeds at tiny size (p 31, 1-layer transformer trained 20 epochs, so it does not
# generalise: allow_ungrokked; 3 transformer seeds x 3 SAE seeds, d_sae 32, k 4, 80 SAE steps, 2000 bootstrap
# resamples). Checks the run folder and results.json keys, that within/across means and pair kinds follow from
# the pairs, the bootstrap interval against the exact (ideal) bootstrap distribution enumerated in Python, that
# an ungrokked transformer is flagged (and refused without allow_ungrokked), and recomputes one
# across-transformer pair's activation similarity with NumPy/SciPy from the SAE and activation files. A second,
# 2 x 3 run must give verdict `undetermined` (7 distinct resamples).
set -euo pipefail
HUSAI=$1; WORK=$2
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
R=$WORK/root
fail() { echo "FAIL: $*" >&2; exit 1; }

T=(--quiet --no-figures --threads 2
   --set transformer.task.modulus=31 --set transformer.training.epochs=20 --set transformer.model.n_layers=1
   --set transformer.model.d_model=32 --set transformer.model.d_mlp=128 --set transformer.model.n_heads=2
   --set transformer.training.batch_size=128 --set transformer.training.lr=3e-3
   --set sae.training.steps=80 --set sae.training.batch_size=128
   --set transformer_seeds.d_sae=32 --set transformer_seeds.k=4)
T3=(--set transformer_seeds.transformer_seeds=[0,1,2] --set transformer_seeds.seeds=[1,2,3]
    --set transformer_seeds.bootstrap=2000)

"$HUSAI" experiment transformer-seeds "${T[@]}" --set experiment.allow_ungrokked=true "${T3[@]}" --out "$R" \
  > run.log 2>&1 || { cat run.log; fail "transformer-seeds run"; }
run=$(ls -d "$R"/transformer-seeds/*/ | tail -1)
for f in config.json results.json summary.md pairs.csv manifest.json; do
  [[ -s "$run/$f" ]] || fail "missing $f"
done

/usr/bin/python3 - "$run" <<'PY'
import json, os, struct, sys
import numpy as np
from scipy.optimize import linear_sum_assignment
run = sys.argv[1]
r = json.load(open(os.path.join(run, "results.json")))
assert r["schema_version"] == 1 and r["experiment"] == "transformer-seeds"
assert r["transformer_seeds"] == [0, 1, 2] and r["sae_seeds"] == [1, 2, 3]
assert len(r["transformers"]) == 3 and len(r["saes"]) == 9 and len(r["pairs"]) == 36, (len(r["pairs"]))
kinds = [p["kind"] for p in r["pairs"]]
assert kinds.count("within") == 9 and kinds.count("across") == 27, kinds
assert len(r["chance_pairs"]) == 3
for p in r["pairs"]:
    assert (p["kind"] == "within") == (p["transformer_a"] == p["transformer_b"]), p
    for k in ["act_pwmcc", "act_pwmcc_ab", "act_pwmcc_ba", "act_matched_mean_corr", "act_shared_frac_05",
              "act_shared_frac_07", "act_shared_frac_09"]:
        assert 0 <= p[k] <= 1, (k, p[k])
    assert abs(p["act_pwmcc"] - 0.5 * (p["act_pwmcc_ab"] + p["act_pwmcc_ba"])) < 1e-12
s = r["summary"]
for m in ["act_pwmcc", "act_matched_mean_corr"]:
    e = s[m]
    for k in ["within", "within_ci", "across", "across_ci", "difference", "difference_ci", "across_over_within",
              "across_over_within_ci", "chance", "specific_fraction_above_chance", "verdict", "bootstrap"]:
        assert k in e, (m, k)
    w = np.mean([p[m] for p in r["pairs"] if p["kind"] == "within"])
    a = np.mean([p[m] for p in r["pairs"] if p["kind"] == "across"])
    assert abs(e["within"] - w) < 1e-12 and abs(e["across"] - a) < 1e-12, (e["within"], w, e["across"], a)
    assert abs(e["difference"] - (w - a)) < 1e-12
    assert e["bootstrap"]["resamples"] == 2000 and e["bootstrap"]["distinct_resamples"] == 49, e["bootstrap"]
    # Ideal bootstrap: every ordered draw of 3 transformers and 3 seeds with at least two distinct of each,
    # equally likely; the reported percentile interval must sit between its 1% / 5% and 95% / 99% quantiles.
    import itertools
    M = 9
    sim = np.zeros((M, M))
    for p in r["pairs"]:
        sim[p["a"], p["b"]] = sim[p["b"], p["a"]] = p[m]
    diffs = []
    for ts in itertools.product(range(3), repeat=3):
        if len(set(ts)) < 2: continue
        for ss in itertools.product(range(3), repeat=3):
            if len(set(ss)) < 2: continue
            wv = [sim[t * 3 + ss[x], t * 3 + ss[y]] for t in ts for x in range(3) for y in range(x + 1, 3) if ss[x] != ss[y]]
            av = [sim[ts[x] * 3 + sp, ts[y] * 3 + sq] for x in range(3) for y in range(x + 1, 3) if ts[x] != ts[y]
                  for sp in ss for sq in ss]
            diffs.append(np.mean(wv) - np.mean(av))
    q = np.quantile(diffs, [0.01, 0.05, 0.95, 0.99])
    lo, hi = e["difference_ci"]
    assert q[0] - 1e-12 <= lo <= q[1] + 1e-12 and q[2] - 1e-12 <= hi <= q[3] + 1e-12, (m, lo, hi, q)
    want = "within_higher" if lo > 0 else ("across_higher" if hi < 0 else "indistinguishable")
    assert e["verdict"] == want, (e["verdict"], want)
for t in r["transformers"]:
    tr = t["transformer"]
    assert tr["grokked"] == (tr["val_acc"] >= 0.99), tr
    assert len(t["decoder_within"]["pairs"]) == 3
ung = [t["transformer_seed"] for t in r["transformers"] if not t["transformer"]["grokked"]]
assert s["ungrokked_transformer_seeds"] == ung, (s["ungrokked_transformer_seeds"], ung)
md = open(os.path.join(run, "summary.md")).read()
assert ("**NO**" in md) == bool(ung) and "What this does not show" in md
assert "## Conclusion" in r["conclusion"]
open(os.path.join(os.getcwd(), "ungrokked.txt"), "w").write(" ".join(map(str, ung)))

# Independent recomputation of one across-transformer pair from the files: NumPy TopK encode, np.corrcoef,
# SciPy assignment.
def st(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    h = json.loads(raw[8:8 + n]); h.pop("__metadata__", None)
    dt = {"F32": np.float32, "I64": np.int64}
    return {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], dtype=dt[v["dtype"]]).reshape(v["shape"]) for k, v in h.items()}
def latents(t, seed):
    x = st(t["activations"])["activations"].astype(np.float64)
    d = os.path.join(t["sae_run"], f"seed{seed}")
    w = st(os.path.join(d, "sae_weights.safetensors")); cfg = json.load(open(os.path.join(d, "cfg.json")))
    z = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    k = cfg["k"]
    kth = np.sort(z, axis=1)[:, -k][:, None]
    return np.where(z >= kth, np.maximum(z, 0), 0.0)
p = next(p for p in r["pairs"] if p["kind"] == "across")
ta = next(t for t in r["transformers"] if t["transformer_seed"] == p["transformer_a"])
tb = next(t for t in r["transformers"] if t["transformer_seed"] == p["transformer_b"])
za, zb = latents(ta, p["sae_seed_a"]), latents(tb, p["sae_seed_b"])
assert np.array_equal(st(ta["activations"])["a"], st(tb["activations"])["a"])
fa = za.shape[1]
with np.errstate(invalid="ignore", divide="ignore"):
    c = np.abs(np.nan_to_num(np.corrcoef(za, zb, rowvar=False)[:fa, fa:]))
c[za.std(0) == 0, :] = 0; c[:, zb.std(0) == 0] = 0
pw = 0.5 * (c.max(1).mean() + c.max(0).mean())
ri, ci = linear_sum_assignment(c, maximize=True)
mm = c[ri, ci].mean()
assert abs(pw - p["act_pwmcc"]) < 1e-4 and abs(mm - p["act_matched_mean_corr"]) < 1e-4, (pw, p["act_pwmcc"], mm, p["act_matched_mean_corr"])
print(f"transformer-seeds: keys, pair kinds, within/across means, ungrokked flag {ung}, NumPy recomputation "
      f"(act_pwmcc {pw:.6f} vs {p['act_pwmcc']:.6f}, matched {mm:.6f} vs {p['act_matched_mean_corr']:.6f}) ok")
PY

# 2 transformers x 3 seeds: 1 x 7 distinct resamples (both transformers must be drawn), too few for a verdict.
# Transformers, activations and SAE runs are all reused from the cache.
"$HUSAI" experiment transformer-seeds "${T[@]}" --set experiment.allow_ungrokked=true \
  --set transformer_seeds.transformer_seeds=[0,1] --set transformer_seeds.seeds=[1,2,3] --set transformer_seeds.bootstrap=200 \
  --out "$R" > run2.log 2>&1 || { cat run2.log; fail "transformer-seeds 2 x 3 run"; }
run2=$(ls -d "$R"/transformer-seeds/*/ | tail -1)
/usr/bin/python3 - "$run2" <<'PY'
import json, os, sys
r = json.load(open(os.path.join(sys.argv[1], "results.json")))
for m in ["act_pwmcc", "act_matched_mean_corr"]:
    e = r["summary"][m]
    assert e["verdict"] == "undetermined" and e["bootstrap"]["distinct_resamples"] == 7, e
assert "no verdict is drawn" in open(os.path.join(sys.argv[1], "summary.md")).read()
print("transformer-seeds: 2 x 3 run is undetermined ok")
PY

# Without allow_ungrokked an ungrokked transformer stops the run, naming its seed (the transformer is cached).
ung=$(cat ungrokked.txt)
if [[ -n "$ung" ]]; then
  first=${ung%% *}
  if "$HUSAI" experiment transformer-seeds "${T[@]}" "${T3[@]}" --out "$R" > refuse.log 2>&1; then
    fail "an ungrokked transformer was not refused"
  fi
  grep -q "seed $first reached held-out accuracy" refuse.log || { cat refuse.log; fail "refusal does not name seed $first"; }
  echo "transformer-seeds: ungrokked transformer seed $first refused without allow_ungrokked ok"
fi
echo "transformer_seeds.sh: all ok"
