#!/usr/bin/env bash
# train-sae across MPI ranks (mpirun --oversubscribe -n 2, loopback only): the seeds are spread over the ranks
# and every seed's files (weights, cfg.json, metrics.jsonl, stability snapshots) and the split are byte-identical
# to the one-process run; a rank that fails makes the run exit non-zero with one line naming the rank, its seeds
# and the reason; a run whose rank is killed with SIGKILL resumes, under 2 ranks or as one process, to the same
# bytes. Without MPI in the build, husai refuses to run as several processes.
set -euo pipefail
HUSAI=$1; WORK=$2
source "$(cd "$(dirname "$0")" && pwd)/lib.bash"
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
if ! command -v mpirun >/dev/null; then
  echo "SKIP: mpirun is not installed (scripts/setup.sh installs openmpi-bin)"; exit 0
fi
MPI=(mpirun --allow-run-as-root --oversubscribe -n 2)
"$HUSAI" synth --quiet --d-in 24 --n-features 96 --active 4 --rows 6000 --seed 5 --out acts.safetensors
args=(train-sae --quiet --activations acts.safetensors --architecture topk --d-sae 384 --k 4 --steps 1200
      --batch-size 256 --seeds 11,12,13 --threads 1 --checkpoint-every 40 --set sae.dead_window=256)
if ! "$HUSAI" --version | grep -q " with MPI"; then
  expect_fail no_mpi "built without MPI" nompi -- "${MPI[@]}" "$HUSAI" "${args[@]}" --out nompi
  echo "husai built without MPI: refuses to run as 2 processes"; exit 0
fi

"$HUSAI" "${args[@]}" --out single
t0=$(date +%s%N)
"${MPI[@]}" "$HUSAI" "${args[@]}" --out ranks
ref_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
files="split.safetensors"
for s in 11 12 13; do
  files+=" seed$s/sae_weights.safetensors seed$s/cfg.json seed$s/metrics.jsonl"
  for step in 150 300 600; do files+=" seed$s/checkpoints/step_$step/sae_weights.safetensors"; done
done
for f in $files; do
  cmp "single/$f" "ranks/$f" || { echo "FAIL: $f differs between 1 process and 2 ranks" >&2; exit 1; }
done
ls ranks/trainer_state.rank0-of-2.safetensors ranks/trainer_state.rank1-of-2.safetensors >/dev/null
grep -q '"mpi_ranks": 2' ranks/manifest.json || { echo "FAIL: manifest lacks mpi_ranks" >&2; exit 1; }
for s in 11 12 13; do grep -q "seed$s/sae_weights.safetensors" ranks/manifest.json; done
grep -q -E '"aux":(0\.[0-9]*[1-9]|[1-9])' single/seed12/metrics.jsonl || { echo "FAIL: AuxK never active (no dead latents)" >&2; exit 1; }
echo "1 process vs 2 ranks: identical bytes ($(echo $files | wc -w) files)"

# A failing rank: seed 12 (rank 1's) cannot get its folder; the run fails with one line naming rank 1.
mkdir fail && : > fail/seed12
if "${MPI[@]}" "$HUSAI" "${args[@]}" --out fail --resume 2> fail.err; then echo "FAIL: rank failure accepted" >&2; exit 1; fi
grep -q "^husai: error: rank 1 of 2 (seeds 12): " fail.err || { echo "FAIL: no rank line" >&2; cat fail.err >&2; exit 1; }
[[ $(grep -c "husai: error" fail.err) -eq 1 ]] || { echo "FAIL: more than one error line" >&2; cat fail.err >&2; exit 1; }
echo "failing rank: $(grep "husai: error" fail.err | head -c 200)"

# Commands that do not spread over ranks refuse to run as several processes (rank 0 says so once).
expect_fail not_spread "husai compare runs as one process" cmp_out -- "${MPI[@]}" "$HUSAI" compare single/seed11 single/seed12 --out cmp_out
[[ $(grep -c "husai: error" not_spread.err) -eq 1 ]] || { echo "FAIL: more than one error line" >&2; exit 1; }

# Kill rank 1 with SIGKILL mid-run (mpirun then ends the job), resume under 2 ranks, kill again, resume as
# one process: the same bytes as the uninterrupted run.
kill_rank1() {  # kill_rank1 DELAY_PCT OUT -- starts the command in the background first
  local pct=$1 out=$2 rank_pid
  sleep "$(awk -v ms="$ref_ms" -v p="$pct" 'BEGIN { printf "%.3f", ms * p / 100000 }')"
  rank_pid=$(pgrep -f -- "--out $out" | while read -r p; do
    if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -q '^OMPI_COMM_WORLD_RANK=1$'; then echo "$p"; fi
  done | head -n 1 || true)
  [[ -n "$rank_pid" ]] && kill -KILL "$rank_pid" 2>/dev/null || true
}
killed_runs=0
"${MPI[@]}" "$HUSAI" "${args[@]}" --out killed > /dev/null 2>&1 &
pid=$!; kill_rank1 70 killed; wait "$pid" 2>/dev/null || killed_runs=$((killed_runs + 1))
"${MPI[@]}" "$HUSAI" "${args[@]}" --out killed --resume > /dev/null 2>&1 &
pid=$!; kill_rank1 60 killed; wait "$pid" 2>/dev/null || killed_runs=$((killed_runs + 1))
[[ $killed_runs -ge 1 ]] || { echo "FAIL: no run was killed (the runs finished first)" >&2; exit 1; }
ls killed/trainer_state.rank1-of-2.safetensors > /dev/null || { echo "FAIL: no rank-1 state after the killed runs" >&2; ls -la killed >&2; exit 1; }
"$HUSAI" "${args[@]}" --out killed --resume
"${MPI[@]}" "$HUSAI" "${args[@]}" --out killed --resume
for f in $files; do
  cmp "single/$f" "killed/$f" || { echo "FAIL: $f differs after killing a rank and resuming" >&2; exit 1; }
done
echo "rank killed with SIGKILL ($killed_runs of 2 runs), resumed under 2 ranks and as 1 process: identical bytes (uninterrupted 2-rank run: $ref_ms ms)"

# --data-parallel: both ranks train every seed, each encoding half of every batch; rank 0 writes. Same bytes
# as one process, the trainer state included; a killed run resumes to them; only topk is accepted.
"${MPI[@]}" "$HUSAI" "${args[@]}" --data-parallel --out dp
for f in $files trainer_state.safetensors; do
  cmp "single/$f" "dp/$f" || { echo "FAIL: $f differs between 1 process and 2 data-parallel ranks" >&2; exit 1; }
done
[[ ! -e dp/trainer_state.rank0-of-2.safetensors ]] || { echo "FAIL: per-rank state in data-parallel mode" >&2; exit 1; }
echo "data-parallel on 2 ranks: identical bytes ($(echo $files | wc -w) files and the trainer state)"
"${MPI[@]}" "$HUSAI" "${args[@]}" --data-parallel --out dpk > /dev/null 2>&1 &
pid=$!; kill_rank1 60 dpk; wait "$pid" 2>/dev/null || echo "data-parallel run killed"
"${MPI[@]}" "$HUSAI" "${args[@]}" --data-parallel --out dpk --resume
for f in $files; do cmp "single/$f" "dpk/$f" || { echo "FAIL: $f differs after a data-parallel resume" >&2; exit 1; }; done
echo "data-parallel kill + resume: identical bytes"
relu=("${args[@]}"); relu[5]=relu
expect_fail dp_relu "needs a per-row selection" "" -- "${MPI[@]}" "$HUSAI" "${relu[@]}" --data-parallel --out dp_relu
