#!/usr/bin/env bash
# husai experiment / runs / audit end to end at tiny size (p 31, 1-layer transformer, d_sae 32, 2-3 seeds,
# 200 bootstrap resamples): phase4a, ablations on a reduced grid, adaptive-l0, release-gate, audit and
# `husai runs list/show/log`. Checks the run folder contents and manifest keys, the registry rows, the artifact
# cache (an identical upstream is reused, a changed config is not), `--resume` after a SIGKILL between conditions
# (same results.json numbers as an uninterrupted run in a fresh root), release-gate exit 2 with
# --fail-on-gate-fail, and two experiment processes sharing one root without losing registry rows.
set -euo pipefail
HUSAI=$1; WORK=$2
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
R=$WORK/root
fail() { echo "FAIL: $*" >&2; exit 1; }

Q=(--quiet --no-figures)
T=(--threads 2
   --set transformer.task.modulus=31 --set transformer.training.epochs=40 --set transformer.model.n_layers=1
   --set transformer.model.d_model=32 --set transformer.model.d_mlp=128 --set transformer.model.n_heads=2
   --set transformer.training.batch_size=128 --set transformer.training.lr=3e-3
   --set experiment.allow_ungrokked=true
   --set sae.training.steps=80 --set sae.training.batch_size=128 --set sae.sae.l1_warmup_steps=10
   --set compare.bootstrap=200)

# phase4a with figures (one run renders them), splice on.
"$HUSAI" experiment phase4a "${T[@]}" --set experiment.splice=true --set phase4a.seeds=[1,2,3] \
  --set phase4a.d_sae=32 --set phase4a.k=4 --set phase4a.relu_tune_steps=40 --set phase4a.relu_tune_iterations=2 \
  --out "$R" 2>&1 | tee phase4a.log
run=$(ls -d "$R"/phase4a/*/ | tail -1)
for f in config.json results.json summary.md stability.csv manifest.json similarity.png similarity.svg \
         compare/topk/stability.json compare/relu/stability.json; do
  [[ -s "$run/$f" ]] || fail "phase4a: missing $f"
done
ls "$run"/conditions/*.json >/dev/null || fail "phase4a: no conditions/*.json"

/usr/bin/python3 - "$run" "$R/registry.sqlite" <<'PY'
import json, sys, sqlite3, hashlib, os
run, db = sys.argv[1], sys.argv[2]
m = json.load(open(os.path.join(run, "manifest.json")))
for k in ["schema_version", "timestamp_utc", "git_commit", "git_dirty", "command", "husai_version", "threads",
          "config_hash", "inputs", "outputs", "experiment", "run_id", "resumed", "exit_code", "cache"]:
    assert k in m, f"manifest key {k} missing"
cfg = json.load(open(os.path.join(run, "config.json")))
h = hashlib.sha256(json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
assert m["config_hash"] == h, ("config_hash is not the sha256 of config.json", m["config_hash"], h)
assert os.path.basename(run.rstrip("/")).endswith(h[:8])
outs = {o["path"]: o for o in m["outputs"]}
for f in ["results.json", "summary.md", "config.json", "stability.csv"]:
    assert f in outs, f
    data = open(os.path.join(run, f), "rb").read()
    assert outs[f]["sha256"] == hashlib.sha256(data).hexdigest() and outs[f]["bytes"] == len(data), f
assert m["inputs"], "no inputs (cached artifacts) in the manifest"
r = json.load(open(os.path.join(run, "results.json")))
assert r["schema_version"] == 2 and r["experiment"] == "phase4a"
geometry = {"second_moment", "axis_reflection", "rotation"}
docs = {c: json.load(open(os.path.join(run, "compare", c, "stability.json"))) for c in ["topk", "relu"]}
# Holm over both families' compares: every tested (metric, null) two-sided p, recomputed here.
keys = [(c, m, n) for c in ["topk", "relu"] for m in docs[c]["tested_metrics"]
        for n in [g["name"] for g in docs[c]["groups"] if g["role"] == "null"]]
ps = [docs[c]["summary"][m]["nulls"][n]["permutation"]["p_value_two_sided"] for c, m, n in keys]
order = sorted(range(len(ps)), key=lambda i: ps[i]); adj = [0.0] * len(ps); acc = 0.0
for rank, i in enumerate(order):
    acc = max(acc, min(1.0, (len(ps) - rank) * ps[i])); adj[i] = acc
holm = dict(zip(keys, adj))
# The smallest Holm-adjusted p this pooled family could give: its size x the smallest attainable raw p.
floor = len(ps) * min(docs[c]["summary"][m]["nulls"][n]["permutation"]["min_attainable_p"] for c, m, n in keys)
assert r["holm_families"]["nulls"] == len(ps), (r["holm_families"], len(ps))
for cond in ["topk", "relu"]:
    s = r["conditions"][cond]["stability"]["pwmcc"]
    st = docs[cond]
    dec = st["summary"]["pwmcc"]["decision_null"]
    assert s["null"] == dec and dec in geometry, (s["null"], dec)
    best = max(geometry, key=lambda n: st["summary"]["pwmcc"]["nulls"][n]["mean"])
    assert dec == best, ("decision null is not the most conservative", dec, best)
    ne = st["summary"]["pwmcc"]["nulls"][dec]
    assert abs(s["trained"] - st["summary"]["pwmcc"]["trained"]["mean"]) < 1e-12
    assert abs(s["delta"] - ne["difference"]["estimate"]) < 1e-12
    assert abs(s["delta_ci"][0] - ne["difference"]["ci_bca"][0]) < 1e-12
    assert abs(s["p_holm"] - holm[(cond, "pwmcc", dec)]) < 1e-12, (s["p_holm"], holm[(cond, "pwmcc", dec)])
    want = "undecidable" if floor > 0.05 else "indistinguishable"
    if s["p_holm"] <= 0.05: want = "above" if s["delta"] > 0 else "below"
    assert s["verdict_kind"] == want, (s["verdict_kind"], want)
    assert set(s["all_nulls"]) == {"gaussian", "untrained", "covariance"} | geometry | {"surrogate_gaussian"}, s["all_nulls"].keys()
    assert s["surrogate"]["verdict_kind"] in ("above", "below", "indistinguishable", "undecidable")
    assert 0 < s["trained"] < 1 and s["ratio"] > 0
    cv = r["conditions"][cond]["convergence"]
    assert len(cv["points"]) >= 2 and cv["points"][-1]["fraction"] == 1.0, cv["points"]
    assert isinstance(cv["plateaued"], bool)
    assert "feature_types" in st and st["feature_types"]["by_label"], "feature types"
assert r["relu_l0_match"]["target"] > 0
assert r["relu_tuning"] and r["claims"] and r["conclusion"]
con = sqlite3.connect(db)
row = con.execute("select status, experiment, config_hash from runs where id=?", (m["run_id"],)).fetchone()
assert row == ("completed", "phase4a", h), row
n_art = con.execute("select count(*) from artifacts where run_id=?", (m["run_id"],)).fetchone()[0]
n_met = con.execute("select count(*) from metrics where run_id=?", (m["run_id"],)).fetchone()[0]
assert n_art >= len(m["outputs"]) and n_met > 0, (n_art, n_met)
print(f"phase4a: files, manifest keys, config hash, stability.json numbers, registry ({n_art} artifacts, {n_met} metrics) ok")
PY
grep -q "cache transformer .*: building" phase4a.log || fail "first run did not build the transformer"

# ablations on a reduced grid: the identical upstream is reused, a changed SAE config is built.
ABL=(--set ablations.seeds=[1,2] --set ablations.k_values=[2,4] --set ablations.k_sweep_d_sae=32
     --set ablations.d_sae_values=[16] --set ablations.d_sae_sweep_k=4)
"$HUSAI" experiment ablations --no-figures "${T[@]}" "${ABL[@]}" --out "$R" > ablations.log 2>&1 || { cat ablations.log; fail "ablations"; }
grep -q "cache transformer .*: reused" ablations.log || fail "ablations did not reuse the cached transformer"
grep -q "cache activations .*: reused" ablations.log || fail "ablations did not reuse the cached activations"
arun=$(ls -d "$R"/ablations/*/ | tail -1)
for f in config.json results.json summary.md ablations.csv manifest.json; do [[ -s "$arun/$f" ]] || fail "ablations: missing $f"; done
[[ $(wc -l < "$arun/ablations.csv") -ge 4 ]] || fail "ablations.csv has fewer than 3 conditions"
grep -q "## Stability against training steps" "$arun/summary.md" || fail "ablations: no stability-vs-steps section"
grep -q "last change of pwmcc" "$arun/summary.md" || fail "ablations: no plateau test per condition"
"$HUSAI" experiment ablations --no-figures "${T[@]}" "${ABL[@]}" --set sae.training.steps=81 --out "$R" > ablations2.log 2>&1
grep -q "cache transformer .*: reused" ablations2.log || fail "changed SAE steps: transformer not reused"
grep -q "cache sae .*: reused" ablations2.log && fail "changed SAE steps reused a stale SAE"
echo "cache: identical upstream reused, changed SAE config rebuilt"

# adaptive-l0: choice, retrain on fresh seeds, Holm across candidates.
"$HUSAI" experiment adaptive-l0 "${Q[@]}" "${T[@]}" --set adaptive.k_candidates=[2,4,8] --set adaptive.d_sae=32 \
  --set adaptive.search_seeds=[1,2] --set adaptive.retrain_seeds=[3,4] --set adaptive.ev_floor=0 --out "$R"
adir=$(ls -d "$R"/adaptive-l0/*/ | tail -1)
/usr/bin/python3 - "$adir" <<'PY'
import json, sys, os
r = json.load(open(os.path.join(sys.argv[1], "results.json")))
assert r["chosen_k"] in (2, 4, 8) and r["retrain"]["seeds"] == [3, 4]
# Holm by hand (statsmodels' step-down, monotone, capped at 1) over one family: every search candidate x
# every null x both tested metrics, from the candidates' own stability.json files.
tests = []
for ci, c in enumerate(r["search"]):
    st = json.load(open(os.path.join(sys.argv[1], c["stability_file"])))
    for met in ("pwmcc", "matched_mean_cos"):
        for name, g in st["summary"][met]["nulls"].items():
            tests.append(((ci, met, name), g["permutation"]["p_value_two_sided"]))
order = sorted(range(len(tests)), key=lambda i: tests[i][1]); m = len(tests); adj = {}; run = 0.0
for rank, i in enumerate(order):
    run = max(run, min(1.0, (m - rank) * tests[i][1])); adj[tests[i][0]] = run
assert r["search_holm_family_size"] == m, (r["search_holm_family_size"], m)
for ci, c in enumerate(r["search"]):
    dn = c["stability"]["pwmcc"]["null"]
    assert abs(c["p_holm_across_candidates"] - adj[(ci, "pwmcc", dn)]) < 1e-12, (c["p_holm_across_candidates"], adj)
best = max((c for c in r["search"]), key=lambda c: (c["stability"]["pwmcc"]["delta_ci"][0], -c["k"]))
assert best["k"] == r["chosen_k"], (best["k"], r["chosen_k"])
print(f"adaptive-l0: chose k {r['chosen_k']}, Holm over {m} tests across {len(r['search'])} candidates ok")
PY
[[ -s "$adir/adaptive_l0.csv" ]] || fail "adaptive_l0.csv missing"
# The matched control (--k-candidates, one candidate) runs after the search: it is a variant of its own, so the
# audit below must still show the search run's claims next to the control's.
sleep 1
"$HUSAI" experiment adaptive-l0 "${Q[@]}" "${T[@]}" --k-candidates 4 --set adaptive.d_sae=32 \
  --set adaptive.search_seeds=[1,2] --set adaptive.retrain_seeds=[3,4] --set adaptive.ev_floor=0 --out "$R"
cdir=$(ls -d "$R"/adaptive-l0/*/ | tail -1)
[[ "$cdir" != "$adir" ]] || fail "the control run has no folder of its own"
grep -q '"variant": "control"' "$cdir/results.json" || fail "the control run is not marked as the control variant"
grep -q '"variant"' "$adir/results.json" && fail "the search run is marked as a variant"

# release-gate: an unreachable EV floor fails the gate; exit 2 only with --fail-on-gate-fail.
set +e
"$HUSAI" experiment release-gate --quiet --no-figures --set gate.reconstruction_ev_floor=1.0 --out "$R"; rc0=$?
"$HUSAI" experiment release-gate --quiet --no-figures --set gate.reconstruction_ev_floor=1.0 --fail-on-gate-fail --out "$R"; rc2=$?
set -e
[[ $rc0 == 0 && $rc2 == 2 ]] || fail "release-gate exit codes $rc0 (want 0) and $rc2 (want 2)"
grun=$(ls -d "$R"/release-gate/*/ | tail -1)
/usr/bin/python3 -c "
import json; r = json.load(open('$grun/results.json')); assert r['pass_all'] is False, r['pass_all']
g = {x['gate']: x for x in r['gates']}
assert set(g) == {'random_model', 'data_features', 'reconstruction', 'generalisation', 'causal'}, list(g)
assert g['reconstruction']['status'] == 'fail'
# data_features follows the source's surrogate verdict (phase4a runs the control by default).
p4 = json.load(open('$run/results.json'))['conditions']['topk']['stability']['pwmcc']
want = 'pass' if p4['surrogate']['verdict_kind'] == 'above' and p4['surrogate']['delta_ci'][0] > 0 else 'fail'
assert g['data_features']['status'] == want, (g['data_features'], p4['surrogate'])
print('release-gate: a failed gate gives pass_all false, exit 0 without and 2 with --fail-on-gate-fail')"

# audit and the registry commands.
"$HUSAI" audit --root "$R" > audit.out
[[ -s "$R/AUDIT.md" ]] || fail "audit wrote no AUDIT.md"
grep -q "adaptive-l0 .* holds .*adaptive-l0.choice" audit.out || fail "audit: the adaptive-l0 choice should hold"
aid=$(basename "$adir"); cid=$(basename "$cdir")
grep -q "| adaptive-l0 | $aid | adaptive-l0.choice |" "$R/AUDIT.md" || fail "audit: the search run is not audited"
grep -q "| adaptive-l0 (control) | $cid | adaptive-l0.choice |" "$R/AUDIT.md" || fail "audit: the control is not audited as a variant"
grep -q "no longer holds" audit.out && fail "audit: a claim recorded as not holding was reported as 'no longer holds'"
"$HUSAI" runs list --root "$R" > list.out
grep -q phase4a list.out && grep -q adaptive-l0 list.out || fail "runs list misses runs"
rid=$(basename "$run")
"$HUSAI" runs show "$rid" --root "$R" > show.out; grep -q "status: *completed" show.out || fail "runs show"
rm -f "$R/EXPERIMENT_LOG.md"; "$HUSAI" runs log --root "$R"
grep -q "$rid" "$R/EXPERIMENT_LOG.md" || fail "runs log did not regenerate EXPERIMENT_LOG.md"
echo "audit, runs list/show/log ok"

# --resume after SIGKILL between conditions == an uninterrupted run in a fresh root.
RES=(--set ablations.seeds=[5,6] --set ablations.k_values=[2,3,4,6] --set ablations.k_sweep_d_sae=32
     --set ablations.d_sae_values=[24] --set ablations.d_sae_sweep_k=4 --set sae.training.steps=150)
"$HUSAI" experiment ablations "${Q[@]}" "${T[@]}" "${RES[@]}" --out "$R" & pid=$!
krun=""
for _ in $(seq 1 1200); do
  for d in "$R"/ablations/*/; do
    [[ -e "$d/results.json" ]] && continue
    ls "$d"conditions/*.json >/dev/null 2>&1 && krun=$d
  done
  [[ -n "$krun" ]] && break
  sleep 0.05
done
[[ -n "$krun" ]] || fail "no condition finished in time"
kill -KILL $pid; wait $pid 2>/dev/null || true
[[ -e "$krun/results.json" ]] && fail "the run finished before it could be killed"
nk=$(ls "$krun"/conditions/*.json | wc -l); echo "killed with $nk condition(s) done"
"$HUSAI" experiment ablations "${Q[@]}" "${T[@]}" "${RES[@]}" --resume --out "$R"
[[ -s "$krun/results.json" ]] || fail "--resume did not finish the killed run"
"$HUSAI" experiment ablations "${Q[@]}" "${T[@]}" "${RES[@]}" --out "$WORK/fresh"
frun=$(ls -d "$WORK"/fresh/ablations/*/ | tail -1)
/usr/bin/python3 - "$krun" "$frun" "$R/registry.sqlite" <<'PY'
import json, sys, os, sqlite3
def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if "time" not in k and k not in ("run_id", "sae_run", "dir")}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x
a = json.load(open(os.path.join(sys.argv[1], "results.json")))
b = json.load(open(os.path.join(sys.argv[2], "results.json")))
assert strip(a) == strip(b), "resumed results differ from the uninterrupted run"
m = json.load(open(os.path.join(sys.argv[1], "manifest.json")))
assert m["resumed"] is True
st = sqlite3.connect(sys.argv[3]).execute("select status from runs where id=?", (m["run_id"],)).fetchone()[0]
assert st == "completed", st
print("resume after SIGKILL: same results.json numbers as an uninterrupted run")
PY

# Two experiment processes on one root at once: no registry row lost, database intact.
before=$(sqlite3 "$R/registry.sqlite" "select count(*) from runs")
"$HUSAI" experiment adaptive-l0 "${Q[@]}" "${T[@]}" --set adaptive.k_candidates=[2,4] --set adaptive.d_sae=32 \
  --set adaptive.search_seeds=[1,2] --set adaptive.retrain_seeds=[7,8] --set adaptive.ev_floor=0 --out "$R" & p1=$!
"$HUSAI" experiment ablations "${Q[@]}" "${T[@]}" "${ABL[@]}" --set ablations.seeds=[8,9] --out "$R" & p2=$!
"$HUSAI" experiment ablations "${Q[@]}" "${T[@]}" "${ABL[@]}" --set ablations.seeds=[10,11] --out "$R" & p3=$!
wait $p1; wait $p2; wait $p3
/usr/bin/python3 - "$R/registry.sqlite" "$before" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
n = con.execute("select count(*) from runs").fetchone()[0]
assert n == int(sys.argv[2]) + 3, (n, sys.argv[2])
new = con.execute("select id, status from runs order by started_utc desc limit 3").fetchall()
assert all(s == "completed" for _, s in new), new
for rid, _ in new:
    assert con.execute("select count(*) from metrics where run_id=?", (rid,)).fetchone()[0] > 0, rid
    assert con.execute("select count(*) from artifacts where run_id=?", (rid,)).fetchone()[0] > 0, rid
print(f"concurrency: 3 processes on one root, {n} runs, every row present, integrity ok")
PY
echo "experiments: ok"
