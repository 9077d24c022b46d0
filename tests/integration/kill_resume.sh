#!/usr/bin/env bash
# Kill and resume: train-transformer and train-sae (three seeds in one pass) are killed with SIGKILL at
# several random moments (fractions of the uninterrupted run's measured wall time, drawn from a fixed seed:
# every run of the test uses the same schedule relative to the machine's speed, so kills land mid-run on a
# quiet machine as on a loaded one; the first kill, on a fresh start, comes before half of that time),
# resumed each time with --resume (alternating 1 and 2 threads), and must end with weights byte-identical to an
# uninterrupted run. After every kill, nothing under a final name may be half-written.
# (determinism_resume.sh and sae_train.sh cover a fixed kill schedule and SIGINT; experiment runs interrupted
# between conditions are covered with `husai experiment`.)
set -euo pipefail
HUSAI=$1; WORK=$2
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
RANDOM=20240611  # seeds bash's $RANDOM: the kill schedule is the same on every run

# kill_and_resume NAME REFERENCE_DIR KILLS FILES -- husai args (without --out/--threads)
kill_and_resume() {
  local name=$1 ref=$2 kills=$3 files=$4; shift 5
  local out="kill_$name" landed=0 threads=2 delay rc pid t0 ref_ms pct
  t0=$(date +%s%N)
  "$HUSAI" "$@" --threads 2 --out "$ref"
  ref_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  for ((i = 0; i < kills; i++)); do
    if ((i == 0)); then pct=$((5 + RANDOM % 45)); else pct=$((5 + RANDOM % 80)); fi
    delay=$(awk -v ms="$ref_ms" -v p="$pct" 'BEGIN { printf "%.3f", ms * p / 100000 }')
    if ((i == 0)); then
      "$HUSAI" "$@" --threads "$threads" --out "$out" & pid=$!
    else
      "$HUSAI" "$@" --threads "$threads" --out "$out" --resume & pid=$!
    fi
    sleep "$delay"
    kill -KILL "$pid" 2>/dev/null || true
    rc=0; wait "$pid" || rc=$?
    if ((rc == 137)); then
      landed=$((landed + 1))
      /usr/bin/python3 "$HERE/check_complete.py" --allow-temp "$out" ||
        { echo "FAIL: $name: a half-written file after SIGKILL at ${delay}s" >&2; exit 1; }
    elif ((rc != 0)); then
      echo "FAIL: $name: run exited $rc before the kill" >&2; exit 1
    fi
    threads=$((3 - threads))
  done
  # The schedule is relative to one measured run; when the machine's speed changed under it (a build starting
  # beside the test) every kill may have come after the end. Then start over with early kills until one lands.
  for pct in 2 5 10 20 40; do
    ((landed > 0)) && break
    rm -rf "$out"
    delay=$(awk -v ms="$ref_ms" -v p="$pct" 'BEGIN { printf "%.3f", ms * p / 100000 }')
    "$HUSAI" "$@" --threads "$threads" --out "$out" & pid=$!
    sleep "$delay"
    kill -KILL "$pid" 2>/dev/null || true
    rc=0; wait "$pid" || rc=$?
    if ((rc == 137)); then
      landed=1
      /usr/bin/python3 "$HERE/check_complete.py" --allow-temp "$out" ||
        { echo "FAIL: $name: a half-written file after SIGKILL at ${delay}s" >&2; exit 1; }
    elif ((rc != 0)); then
      echo "FAIL: $name: run exited $rc before the kill" >&2; exit 1
    fi
  done
  "$HUSAI" "$@" --threads "$threads" --out "$out" --resume
  for f in $files; do
    cmp "$ref/$f" "$out/$f" || { echo "FAIL: $name: $f differs after $landed SIGKILL(s) + --resume" >&2; exit 1; }
  done
  /usr/bin/python3 "$HERE/check_complete.py" --allow-temp "$out"
  echo "$name: $landed of $kills SIGKILLs landed mid-run (uninterrupted run ${ref_ms} ms); after --resume every compared file is identical"
  if ((landed == 0)); then echo "FAIL: $name: no kill landed (the run is too short)" >&2; exit 1; fi
}

# Transformer: checkpoint every epoch so kills also land during checkpoint writes.
kill_and_resume transformer ref_transformer 6 "model.safetensors checkpoint.safetensors metrics.jsonl" -- \
  train-transformer --quiet --modulus 23 --epochs 60 --train-fraction 0.6 --checkpoint-every 1 \
  --set model.d_model=32 --set model.n_heads=2 --set model.d_mlp=64 --set training.batch_size=64

# SAE: three seeds in one pass, a checkpoint every 10 steps, stability snapshots.
"$HUSAI" synth --quiet --d-in 16 --n-features 48 --active 3 --rows 6000 --seed 7 --out synth.safetensors
sae_files="trainer_state.safetensors"
for s in 1 2 3; do
  sae_files+=" seed$s/sae_weights.safetensors seed$s/cfg.json seed$s/metrics.jsonl"
  # Stability snapshots at 1/8, 1/4, 1/2 of the 600 steps: those written before a kill are kept, later ones
  # written after the resume; all must equal the uninterrupted run's.
  for n in 75 150 300; do sae_files+=" seed$s/checkpoints/step_$n/sae_weights.safetensors seed$s/checkpoints/step_$n/cfg.json"; done
done
kill_and_resume sae ref_sae 6 "$sae_files" -- \
  train-sae --quiet --activations synth.safetensors --architecture topk --d-sae 64 --k 3 --batch-size 128 \
  --steps 600 --checkpoint-every 10 --seeds 1,2,3 --set sae.dead_window=3000
echo "kill_resume: all checks passed"
