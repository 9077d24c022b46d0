#!/usr/bin/env bash
# An experiment across MPI ranks (mpirun --oversubscribe -n 2, loopback): rank 0 runs the ablations sweep and
# the other rank takes its share of every SAE training (its seeds). Every SAE file in the artifact cache is
# byte-identical to the one-process run's, and results.json, the conditions and every stability.json hold the
# same numbers (wall times and run ids aside); the registry has one row. Killing rank 1 with SIGKILL mid-sweep,
# then `--resume` under 2 ranks, completes the same run with the same numbers and still one registry row.
set -euo pipefail
HUSAI=$1; WORK=$2
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
fail() { echo "FAIL: $*" >&2; exit 1; }
if ! command -v mpirun >/dev/null; then echo "SKIP: mpirun is not installed"; exit 0; fi
if ! "$HUSAI" --version | grep -q " with MPI"; then echo "SKIP: husai built without MPI"; exit 0; fi
MPI=(mpirun --allow-run-as-root --oversubscribe -n 2)
T=(--quiet --no-figures --threads 1
   --set transformer.task.modulus=31 --set transformer.training.epochs=40 --set transformer.model.n_layers=1
   --set transformer.model.d_model=32 --set transformer.model.d_mlp=128 --set transformer.model.n_heads=2
   --set transformer.training.batch_size=128 --set transformer.training.lr=3e-3
   --set experiment.allow_ungrokked=true
   --set sae.training.steps=400 --set sae.training.batch_size=128 --set sae.sae.l1_warmup_steps=10
   --set sae.training.checkpoint_every=50 --set compare.bootstrap=200
   --set ablations.seeds=[1,2,3] --set ablations.k_values=[2,3,4,6] --set ablations.k_sweep_d_sae=32
   --set ablations.d_sae_values=[16,24] --set ablations.d_sae_sweep_k=4)
# The same relative root in each folder: paths recorded in the artifacts are then the same.
mkdir one two killed
(cd one && "$HUSAI" experiment ablations "${T[@]}" --out root)
t0=$(date +%s%N)
(cd two && "${MPI[@]}" "$HUSAI" experiment ablations "${T[@]}" --out root)
ref_ms=$(( ($(date +%s%N) - t0) / 1000000 ))

same_sweep() {  # same_sweep DIR: DIR/root equals one/root (SAE files byte for byte, results by number)
  local n=0 f
  for f in $(cd one/root/cache/sae && find . -name sae_weights.safetensors -o -name cfg.json -o -name metrics.jsonl \
             -o -name split.safetensors | sort); do
    n=$((n + 1))
    cmp -s "one/root/cache/sae/$f" "$1/root/cache/sae/$f" || fail "$1: cache/sae/$f differs from the one-process run"
  done
  /usr/bin/python3 - one/root "$1/root" <<'PY'
import glob, json, os, sqlite3, sys
def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if "time" not in k and k not in ("run_id", "resumed")}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x
def run_dir(root):
    (d,) = glob.glob(os.path.join(root, "ablations", "*", ""))
    return d
a, b = run_dir(sys.argv[1]), run_dir(sys.argv[2])
files = sorted(os.path.relpath(f, a) for f in glob.glob(a + "**/*.json", recursive=True) if "manifest" not in f)
assert len(files) >= 10, files
for f in files:
    assert strip(json.load(open(os.path.join(a, f)))) == strip(json.load(open(os.path.join(b, f)))), f
rows = sqlite3.connect(os.path.join(sys.argv[2], "registry.sqlite")).execute("select status from runs").fetchall()
assert rows == [("completed",)], rows
print(f"{len(files)} result files with the same numbers; registry: one completed row")
PY
  echo "$1: $n SAE files identical to the one-process run"
}
same_sweep two
grep -q trainer_state.rank1-of-2.safetensors <(find two/root/cache/sae) || fail "rank 1 trained nothing"

# Kill rank 1 mid-sweep (after the first condition), then --resume under 2 ranks.
(cd killed && exec "${MPI[@]}" "$HUSAI" experiment ablations "${T[@]}" --out root) > killed.log 2>&1 & pid=$!
rank_pid=""
for _ in $(seq 1 2000); do
  if ls killed/root/ablations/*/conditions/*.json >/dev/null 2>&1; then
    rank_pid=$(pgrep -f -- "husai experiment ablations" | while read -r p; do
      if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -q '^OMPI_COMM_WORLD_RANK=1$'; then echo "$p"; fi
    done | head -n 1 || true)
    [[ -n "$rank_pid" ]] && break
  fi
  sleep 0.02
done
[[ -n "$rank_pid" ]] || fail "no condition finished while rank 1 ran"
kill -KILL "$rank_pid"
if wait "$pid"; then fail "the run finished although rank 1 was killed"; fi
[[ -e $(ls -d killed/root/ablations/*/)results.json ]] && fail "the killed run has results.json"
echo "rank 1 killed with $(ls killed/root/ablations/*/conditions/*.json | wc -l) condition(s) done (2-rank run: $ref_ms ms)"
(cd killed && "${MPI[@]}" "$HUSAI" experiment ablations "${T[@]}" --resume --out root)
same_sweep killed

# The demo under 2 ranks: the same SAE weights as one process and the same report, run ids and times aside.
D=(--threads 1 --quiet --no-figures
   --set transformer.task.modulus=31 --set transformer.training.epochs=40 --set transformer.model.n_layers=1
   --set transformer.model.d_model=32 --set transformer.model.d_mlp=128 --set transformer.model.n_heads=2
   --set transformer.training.batch_size=128 --set transformer.training.lr=3e-3 --set experiment.allow_ungrokked=true
   --set sae.training.batch_size=128 --set sae.sae.l1_warmup_steps=10 --set phase4a.relu_tune_iterations=2
   --seeds 1,2,3 --sae-steps 80 --d-sae 32 --k 4 --bootstrap 200)
mkdir demo1 demo2
(cd demo1 && "$HUSAI" demo "${D[@]}" --out root > out)
(cd demo2 && "${MPI[@]}" "$HUSAI" demo "${D[@]}" --out root > out)
n=0
for f in $(cd demo1/root/cache/sae && find . -name sae_weights.safetensors | sort); do
  n=$((n + 1)); cmp -s "demo1/root/cache/sae/$f" "demo2/root/cache/sae/$f" || fail "demo: cache/sae/$f differs"
done
[[ $n -ge 10 ]] || fail "demo: only $n SAE weight files"
norm() { sed -E 's/[0-9]{8}T[0-9]{6}Z-[0-9a-f]+//g' "$1" | grep -v -i -E "wall|time|seconds| s\)|end to end"; }
diff <(norm demo1/root/demo/REPORT.md) <(norm demo2/root/demo/REPORT.md) > /dev/null || fail "demo: REPORT.md differs"
echo "demo under 2 ranks: $n SAE weight files identical, same REPORT.md"
