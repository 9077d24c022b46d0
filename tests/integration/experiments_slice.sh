#!/usr/bin/env bash
# benchmark-slice and consistency-sweep through `husai experiment` at tiny size (untrained-ish transformer,
# allow_ungrokked): run folder files, manifest inputs/outputs, registry rows and metrics; the causal proxy's
# stability is compare's per_feature.csv; the consistency reference is in no pair and the penalty raises the
# alignment to it; a second sweep reuses every cached SAE run (the reference is trained once); audit re-derives
# their claims.
set -euo pipefail
HUSAI=$1; WORK=$2
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
common=(--out root --quiet --no-figures
  --set experiment.allow_ungrokked=true
  --set transformer.task.modulus=23 --set transformer.model.n_layers=1 --set transformer.model.d_model=32
  --set transformer.model.n_heads=2 --set transformer.model.d_mlp=64 --set transformer.training.epochs=3
  --set transformer.training.batch_size=128 --set transformer.training.checkpoint_every=0
  --set sae.training.steps=60 --set sae.training.batch_size=64 --set sae.training.checkpoint_every=0
  --set sae.training.lr_warmup_steps=0 --set compare.bootstrap=200)
"$HUSAI" experiment benchmark-slice "${common[@]}" --set 'benchmark.seeds=[1, 2, 3]' \
  --set benchmark.d_sae=32 --set benchmark.k=3 --set 'benchmark.probe_k=[1, 2]' \
  --set benchmark.n_key_frequencies=2 --set 'benchmark.fourier_m=[0, 4]' --set benchmark.causal_m=4 \
  --set benchmark.causal_random_repeats=2
sweep=("$HUSAI" experiment consistency-sweep "${common[@]}" --set consistency.d_sae=32 --set consistency.k=3
  --set consistency.reference_seed=9 --set 'consistency.seeds=[1, 2, 3]'
  --set 'consistency.lambda_ratios=[0.0, 20.0]' --set consistency.max_ev_drop=1.0)
"${sweep[@]}"
sleep 1  # a distinct run id
"${sweep[@]}"
# The reference seed may not be an evaluated seed: refused before anything runs.
if "$HUSAI" experiment consistency-sweep --out bad --quiet --set 'consistency.seeds=[9, 1]' \
  --set consistency.reference_seed=9 2>err.txt; then
  echo "FAIL: reference seed among the evaluated seeds accepted" >&2; exit 1
fi
grep -q "reference seed" err.txt || { echo "FAIL: unclear error: $(cat err.txt)" >&2; exit 1; }
[[ ! -e bad/consistency-sweep ]] || { echo "FAIL: refused config left a run folder" >&2; exit 1; }

/usr/bin/python3 - <<'PY'
import csv, glob, json, math, os, sqlite3, sys

def fail(msg):
    print("FAIL:", msg, file=sys.stderr)
    sys.exit(1)

db = sqlite3.connect("root/registry.sqlite")
runs = {}
for rid, exp, status, run_dir in db.execute("SELECT id, experiment, status, run_dir FROM runs"):
    # The registry stores run folders relative to ROOT.
    runs.setdefault(exp, []).append((rid, status, os.path.join("root", run_dir)))
if len(runs.get("benchmark-slice", [])) != 1 or len(runs.get("consistency-sweep", [])) != 2:
    fail(f"registry runs: {runs}")
for exp, rs in runs.items():
    for rid, status, run_dir in rs:
        if status != "completed": fail(f"{exp} {rid} status {status}")
        if os.path.basename(run_dir.rstrip("/")) != rid: fail(f"run dir {run_dir} vs id {rid}")

def check_folder(exp, rid, run_dir, files):
    for f in ["config.json", "results.json", "summary.md", "manifest.json"] + files:
        p = os.path.join(run_dir, f)
        if not os.path.isfile(p) or os.path.getsize(p) == 0: fail(f"{exp}: {f} missing or empty")
    man = json.load(open(os.path.join(run_dir, "manifest.json")))
    outs = {os.path.relpath(o["path"], run_dir) if os.path.isabs(o["path"]) else o["path"]: o
            for o in man["outputs"]}
    for f in ["results.json", "summary.md"] + files:
        if not any(k.endswith(f) for k in outs): fail(f"{exp}: manifest outputs lack {f}")
    if man["experiment"] != exp or man["run_id"] != rid: fail(f"{exp}: manifest names {man['experiment']} {man['run_id']}")
    arts = {p for (p,) in db.execute("SELECT path FROM artifacts WHERE run_id=? AND kind='output'", (rid,))}
    if not any(a.endswith("results.json") for a in arts): fail(f"{exp}: registry artifacts lack results.json")
    n_metrics = db.execute("SELECT COUNT(*) FROM metrics WHERE run_id=?", (rid,)).fetchone()[0]
    if n_metrics == 0: fail(f"{exp}: no registry metrics")
    return man

# benchmark-slice
rid, _, run_dir = runs["benchmark-slice"][0]
files = ["saebench_core.csv", "sparse_probing.csv", "fourier.csv", "causal_proxy.csv",
         "compare/stability.json", "compare/per_feature.csv", "conditions/compare.json"]
man = check_folder("benchmark-slice", rid, run_dir, files)
if not any(i["path"].endswith("sae_weights.safetensors") for i in man["inputs"]): fail("slice: SAE weights not inputs")
r = json.load(open(os.path.join(run_dir, "results.json")))
if r["run_id"] != rid or len(r["saes"]) != 3: fail("slice: results.json run_id / saes")
pf = {}
for row in csv.DictReader(open(os.path.join(run_dir, "compare/per_feature.csv"))):
    pf[(int(row["sae"]), int(row["latent"]))] = float(row["stability"])
for s, sae in enumerate(r["saes"]):
    for key in ["l0", "l1", "mse", "explained_variance", "cossim", "l2_ratio", "relative_reconstruction_bias",
                "ce_loss_score", "kl_div_score", "frac_alive", "feature_density"]:
        if key not in sae["saebench_core"]: fail(f"slice: saebench_core lacks {key}")
    conds = sae["causal_proxy"]["conditions"]
    for name in ["most_stable", "least_stable"]:
        lat = conds[name]["latents"]
        want = sum(pf[(s, l)] for l in lat) / len(lat)
        if abs(conds[name]["mean_stability"] - want) > 1e-6:
            fail(f"slice: {name} stability {conds[name]['mean_stability']} is not compare's {want}")
    mean_pf = sum(v for (i, _), v in pf.items() if i == s) / sae["d_sae"]
    if abs(sae["mean_feature_stability"] - mean_pf) > 1e-6: fail("slice: mean stability is not compare's")
    if conds["most_stable"]["mean_stability"] < conds["least_stable"]["mean_stability"]: fail("slice: most < least")
md = open(os.path.join(run_dir, "summary.md")).read()
if "| mse | 0.0000 |" in md: fail("slice: mse printed as 0.0000")
if "Seed stability" not in md: fail("slice: summary.md lacks the compare line")
names = {n for (n,) in db.execute("SELECT name FROM metrics WHERE run_id=?", (rid,))}
for n in ["saebench_core.mse", "causal.delta_ce_vs_clean", "pwmcc.delta"]:
    if n not in names: fail(f"slice: registry metric {n} missing")
print(f"benchmark-slice: EV {r['summary']['saebench_core']['explained_variance']:.3f}, "
      f"mse {r['summary']['saebench_core']['mse']:.4g}, causal stability = compare's per_feature.csv")

# consistency-sweep
(rid1, _, dir1), (rid2, _, dir2) = sorted(runs["consistency-sweep"], key=lambda x: x[0])
files = ["sweep.csv", "pairs.csv", "compare/ratio_0/stability.json", "compare/ratio_1/stability.json",
         "conditions/ratio_0.json", "conditions/ratio_1.json"]
check_folder("consistency-sweep", rid1, dir1, files)
man2 = check_folder("consistency-sweep", rid2, dir2, files)
r = json.load(open(os.path.join(dir1, "results.json")))
if r["reference"]["seed"] != 9 or not r["reference"]["excluded_from_pairs"]: fail("sweep: reference")
for row in r["sweep"]:
    seeds = {p["seed_a"] for p in row["pairs"]} | {p["seed_b"] for p in row["pairs"]}
    if len(row["pairs"]) != 3 or 9 in seeds: fail(f"sweep: pairs {row['pairs']}")
    st = row["stability"]["pwmcc"]
    if not (st["trained_ci"][0] <= st["trained"] <= st["trained_ci"][1]): fail(f"sweep: CI {st}")
    geometry = {"second_moment", "axis_reflection", "rotation"}
    if st["null"] not in geometry: fail(f"sweep: decision null {st['null']} is not geometry-matched")
    best = max(geometry, key=lambda n: st["all_nulls"][n]["mean"])
    if st["null"] != best: fail(f"sweep: decision null {st['null']} is not the most conservative ({best})")
    if set(st["all_nulls"]) != {"gaussian", "untrained", "covariance"} | geometry: fail(f"sweep: nulls {list(st['all_nulls'])}")
# One Holm family over every ratio x null x tested metric: 2 ratios x 6 nulls x 2 metrics.
if r["holm_family_size"] != 2 * 6 * 2: fail(f"sweep: Holm family size {r['holm_family_size']}")
for row in r["sweep"]:
    st = row["stability"]["pwmcc"]
    if st["holm_family_size"] != r["holm_family_size"] or st["p_holm"] < st["p_permutation"]:
        fail(f"sweep: Holm not pooled across ratios {st}")
s0, s1 = r["sweep"]
if s0["lambda"] != 0 or not s1["lambda"] > 0: fail("sweep: lambdas")
if not s1["mean_alignment_to_reference"] > s0["mean_alignment_to_reference"]: fail("sweep: penalty did not align")
if "ratio" not in r["selected"]: fail("sweep: no selection")
# The second run trained nothing: every SAE cache entry (reference and both ratios) was reused.
sae_events = [e for e in man2["cache"] if e["kind"] == "sae"]
if len(sae_events) != 3 or not all(e["reused"] for e in sae_events): fail(f"sweep: cache events {sae_events}")
ref_dirs = {os.path.dirname(r["reference"]["path"])}
if len(ref_dirs) != 1: fail("sweep: reference path")
print(f"consistency-sweep: alignment {s0['mean_alignment_to_reference']:.3f} -> {s1['mean_alignment_to_reference']:.3f}, "
      f"pwmcc {s0['stability']['pwmcc']['trained']:.3f} -> {s1['stability']['pwmcc']['trained']:.3f}; rerun reused 3 SAE runs")
PY
# husai audit re-derives the claims of both experiments from their stored compare files.
"$HUSAI" audit --root root > audit.txt
for id in benchmark-slice.above_null consistency-sweep.unpenalised.above_null consistency-sweep.selected.above_null; do
  grep "$id" audit.txt | grep -qv "cannot check" || { echo "FAIL: audit did not re-derive $id" >&2; cat audit.txt >&2; exit 1; }
done
# Same config, a fresh root: the same numbers (paths, hashes and times aside). Probe fits once took a different
# number of L-BFGS iterations from one process to the next.
slice=(--set 'benchmark.seeds=[1, 2, 3]' --set benchmark.d_sae=32 --set benchmark.k=3 --set 'benchmark.probe_k=[1, 2]'
  --set benchmark.n_key_frequencies=2 --set 'benchmark.fourier_m=[0, 4]' --set benchmark.causal_m=4
  --set benchmark.causal_random_repeats=2)
"$HUSAI" experiment benchmark-slice "${common[@]/root/root2}" "${slice[@]}"
/usr/bin/python3 - <<'PY'
import glob, json, re, sys
def load(root):
    (p,) = glob.glob(root + "/benchmark-slice/*/results.json")
    text = re.sub(r'"(path|sae_run|dir|run_id|sha256)": "[^"]*"', '"X": ""', open(p).read())
    return json.loads(text)
if load("root") != load("root2"):
    sys.exit("FAIL: benchmark-slice gave other numbers in a second process")
print("benchmark-slice: identical numbers in a second process")
PY
echo "experiments_slice: ok"
