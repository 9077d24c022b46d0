#!/usr/bin/env bash
# `husai demo` end to end at tiny size (p 31, 1-layer transformer, d_sae 32, 3 seeds, 200 bootstrap resamples),
# figures on: the demo is a phase4a run (registry row, run folder) plus ROOT/demo/<run_id>/ with REPORT.md,
# config.json, manifest.json and the copied figures; every link of both reports (the run's and the latest copy
# ROOT/demo/REPORT.md) resolves to a file; the report states the transformer, both SAE families and a verdict
# per family; a second demo with the same settings reuses every cached artifact; bad options fail cleanly.
set -euo pipefail
HUSAI=$1; WORK=$2
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
R=$WORK/root
fail() { echo "FAIL: $*" >&2; exit 1; }

T=(--threads 2
   --set transformer.task.modulus=31 --set transformer.training.epochs=40 --set transformer.model.n_layers=1
   --set transformer.model.d_model=32 --set transformer.model.d_mlp=128 --set transformer.model.n_heads=2
   --set transformer.training.batch_size=128 --set transformer.training.lr=3e-3
   --set experiment.allow_ungrokked=true
   --set sae.training.batch_size=128 --set sae.sae.l1_warmup_steps=10
   --set phase4a.relu_tune_iterations=2
   --seeds 1,2,3 --sae-steps 80 --d-sae 32 --k 4 --bootstrap 200)

rc=0; "$HUSAI" demo "${T[@]}" --out "$R" > demo.out 2> demo.err || rc=$?
[[ $rc -eq 0 ]] || { cat demo.err >&2; fail "demo exited $rc"; }
grep -q "report: *$R/demo/REPORT.md" demo.out || fail "demo does not print where the report is: $(cat demo.out)"
grep -q "train-sae" demo.err || fail "no progress on stderr"
run=$(ls -d "$R"/demo/*/ | tail -1); run=${run%/}
id=$(basename "$run")
[[ -d "$R/phase4a/$id" ]] || fail "no phase4a run folder $R/phase4a/$id"
for f in REPORT.md config.json manifest.json figures/grokking.png figures/topk_trained_vs_nulls.png \
         figures/relu_per_feature_hist.png; do
  [[ -s "$run/$f" ]] || fail "demo: missing $f"
done
[[ -s "$R/demo/REPORT.md" ]] || fail "no latest report"

/usr/bin/python3 - "$R" "$run" <<'PY'
import json, os, re, sqlite3, sys
root, run = sys.argv[1], sys.argv[2]
rid = os.path.basename(run)
for report in [os.path.join(run, "REPORT.md"), os.path.join(root, "demo", "REPORT.md")]:
    text = open(report).read()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert len(links) >= 8, (report, links)
    for link in links:
        p = os.path.normpath(os.path.join(os.path.dirname(report), link))
        assert os.path.exists(p), f"{report}: link {link} -> {p} does not exist"
    for needle in ["## 1. The transformer", "held-out accuracy", "TopK (k 4)", "ReLU + L1 ", "Verdict (`pwmcc`",
                   "## 5. In plain words", "covariance", rid]:
        assert needle in text, (report, needle)
    assert text.count("Verdict: ") >= 3, report   # transformer + one per family
m = json.load(open(os.path.join(run, "manifest.json")))
for key in ["command", "config_hash", "inputs", "outputs", "git_commit", "timestamp_utc"]:
    assert key in m, key
outs = {o["path"] for o in m["outputs"]}
assert "REPORT.md" in outs and "figures/grokking.png" in outs, outs
assert any(i["path"].endswith("results.json") for i in m["inputs"]), m["inputs"]
db = sqlite3.connect(os.path.join(root, "registry.sqlite"))
rows = db.execute("SELECT status, experiment FROM runs WHERE id = ?", (rid,)).fetchall()
assert rows == [("completed", "phase4a")], rows
r = json.load(open(os.path.join(root, "phase4a", rid, "results.json")))
assert sorted(r["conditions"]) == ["relu", "topk"], list(r["conditions"])
print(f"demo: report links, manifest, registry ok ({len(outs)} outputs)")
PY

# The same demo again: a new run id, every upstream artifact reused from the cache.
sleep 1
"$HUSAI" demo "${T[@]}" --out "$R" > demo2.out 2> demo2.err || { cat demo2.err >&2; fail "second demo failed"; }
[[ $(ls -d "$R"/demo/*/ | wc -l) -eq 2 ]] || fail "second demo did not get its own folder"
grep -q "cache transformer .*: reused" demo2.out || fail "second demo did not reuse the transformer"
grep -q "cache sae .*: building" demo2.out && fail "second demo retrained an SAE"
grep -q "reused from the artifact cache" "$R/demo/REPORT.md" || fail "latest report does not say the transformer was reused"

# Figures off, no ReLU family, no splicing: the report links no figure and says so; no staging folder is left.
"$HUSAI" demo "${T[@]}" --no-figures --set phase4a.relu=false --set experiment.splice=false --out "$R" \
  > demo3.out 2> demo3.err || { cat demo3.err >&2; fail "demo --no-figures failed"; }
run3=$(ls -d "$R"/demo/*/ | tail -1)
[[ ! -e "$run3/figures" ]] || fail "--no-figures wrote figures"
grep -q '!\[' "$run3/REPORT.md" && fail "--no-figures report links figures"
grep -q "ReLU" "$run3/REPORT.md" && fail "phase4a.relu=false report mentions a ReLU family"
grep -q "no splicing" "$run3/REPORT.md" || fail "splice=false report does not say so"
ls -a "$R/demo" | grep -q partial && fail "a staging folder was left behind"
/usr/bin/python3 - "$R" "$run3" <<'PY'
import json, os, sys
root, run = sys.argv[1], sys.argv[2]
r = json.load(open(os.path.join(root, "phase4a", os.path.basename(run.rstrip("/")), "results.json")))
assert sorted(r["conditions"]) == ["topk"], list(r["conditions"])
# The first demo's tuning ran at the default length (relu_tune_steps null): as long as the evaluated runs.
first = sorted(d for d in os.listdir(os.path.join(root, "phase4a")))[0]
t = json.load(open(os.path.join(root, "phase4a", first, "results.json")))["relu_tuning"]
assert t["steps"] == 80, t
print("demo: --no-figures / relu=false / splice=false report ok; tuning runs as long as the evaluated runs")
PY

# Bad options: clear error, non-zero exit, no new demo folder.
n=$(ls -d "$R"/demo/*/ | wc -l)
if "$HUSAI" demo "${T[@]}" --set phase4a.d_sae=0 --out "$R" > bad.out 2> bad.err; then fail "d_sae 0 accepted"; fi
grep -q "phase4a.d_sae" bad.err || fail "error does not name the key: $(cat bad.err)"
if "$HUSAI" demo --set phase4a.nope=1 --out "$R" > bad.out 2> bad.err; then fail "unknown key accepted"; fi
grep -q "nope" bad.err || fail "error does not name the unknown key"
[[ $(ls -d "$R"/demo/*/ | wc -l) -eq $n ]] || fail "a failed demo left a folder"
echo "demo: ok"
