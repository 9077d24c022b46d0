#!/usr/bin/env bash
# Activation files larger than the row buffer are streamed: train-sae's peak RSS does not grow with the file (a
# file 4x larger, same --buffer-rows, stays within a few MB and far below the file's size), a streamed run killed
# with -9 mid-epoch resumes to identical bytes, the held-out blocks are recorded, and a NaN deep in a streamed file
# is refused before anything is written. compare streams the rows of its activation-based nulls with the same
# numbers as in memory.
set -euo pipefail
HUSAI=$1; WORK=$2
source "$(cd "$(dirname "$0")" && pwd)/lib.bash"
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
"$HUSAI" synth --quiet --d-in 128 --n-features 256 --active 4 --rows 100000 --seed 1 --out small.safetensors
"$HUSAI" synth --quiet --d-in 128 --n-features 256 --active 4 --rows 400000 --seed 1 --out big.safetensors
args=(train-sae --quiet --architecture topk --d-sae 256 --k 8 --steps 300 --batch-size 512 --threads 2
      --buffer-rows 8192)
rss() { # peak resident set size (KiB) of a train-sae run
  /usr/bin/time -f "%M" -o "$1.rss" "$HUSAI" "${args[@]}" --activations "$2" --out "$1"
  cat "$1.rss"
}
small=$(rss run_small small.safetensors)
big=$(rss run_big big.safetensors)
size_kib=$(( $(stat -c %s big.safetensors) / 1024 ))
echo "peak RSS: 100,000 rows ${small} KiB, 400,000 rows ${big} KiB (file ${size_kib} KiB), buffer 8192 rows"
(( big < small + 16384 )) || { echo "FAIL: peak RSS grew with the file: $small -> $big KiB" >&2; exit 1; }
(( big < size_kib / 2 )) || { echo "FAIL: peak RSS $big KiB is not far below the file's $size_kib KiB" >&2; exit 1; }
/usr/bin/python3 - <<'PY'
import json, struct
m = json.load(open("run_big/seed42/metrics.json"))
d = m["data"]
assert d["mode"] == "streamed" and d["buffer_rows"] == 8192, d
assert d["n_train"] + d["n_eval"] == 400000, d
assert m["held_out"]["n_rows"] == d["n_eval"] and m["train_rows"]["n_rows"] == 8192, m
raw = open("run_big/split.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
assert h["__metadata__"]["mode"] == "streamed" and h["__metadata__"]["block_rows"] == "1024", h
blocks = h["eval_blocks"]["shape"][0]
assert blocks == round(0.1 * 391), blocks
print(f"streamed split: {blocks} held-out blocks of 1024 rows recorded; held-out EV {m['held_out']['explained_variance']:.4f}")
PY

# Mid-epoch kill -9 and resume: 2,000 steps of 512 rows over 360,448 training rows cross many windows and epochs.
kill_resume_matches streamed ref res "1.5 1.5" \
  "seed42/sae_weights.safetensors seed42/cfg.json seed42/metrics.jsonl trainer_state.safetensors" \
  -- train-sae --quiet --architecture topk --d-sae 256 --k 8 --steps 2000 --batch-size 512 --threads 2 \
  --buffer-rows 8192 --checkpoint-every 100 --activations big.safetensors

# compare streams the rows for the covariance (and axis_reflection) nulls: the same numbers as with every row in
# memory, in a fraction of the memory.
"$HUSAI" "${args[@]}" --seeds 1,2 --activations small.safetensors --out pair
for b in 8192 131072; do
  /usr/bin/time -f "%M" -o "cmp_$b.rss" "$HUSAI" compare --quiet pair/seed1 pair/seed2 --activations small.safetensors \
    --buffer-rows "$b" --null covariance,axis_reflection --null-seeds 4 --bootstrap 200 --no-figures --out "cmp_$b"
done
/usr/bin/python3 - <<'PY'
import json
a, b = (json.load(open(f"cmp_{n}/stability.json")) for n in (8192, 131072))
assert a["settings"]["activations"]["streamed"] and not b["settings"]["activations"]["streamed"]
count = 0
def same(x, y, path=""):
    global count
    if isinstance(x, dict):
        assert set(x) == set(y), path
        for k in x:
            if k not in ("settings", "timing"): same(x[k], y[k], path + "." + k)
    elif isinstance(x, list):
        assert len(x) == len(y), path
        for i, (u, v) in enumerate(zip(x, y)): same(u, v, f"{path}[{i}]")
    elif isinstance(x, float):
        count += 1
        assert abs(x - y) <= 1e-9 * max(1.0, abs(y)), (path, x, y)
same(a, b)
act = a["activation_similarity"]
assert act["rows"] == 16384 and len(act["pairs"]) == 1, act
p = act["pairs"][0]
assert p["act_matched_mean_corr"] > 5 * p["chance"]["act_matched_mean_corr"], p
print(f"activation similarity on 16,384 streamed rows: matched corr {p['act_matched_mean_corr']:.4f}, "
      f"chance {p['chance']['act_matched_mean_corr']:.4f}")
rss = [int(open(f"cmp_{n}.rss").read()) for n in (8192, 131072)]
assert rss[0] < rss[1], rss
print(f"compare streamed (--buffer-rows 8192) = in memory: {count} numbers agree; peak RSS {rss[0]} vs {rss[1]} KiB")
PY

/usr/bin/python3 - <<'PY'
import json, struct
import numpy as np
raw = bytearray(open("small.safetensors", "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
begin = 8 + n + h["activations"]["data_offsets"][0]
x = np.frombuffer(raw, dtype=np.float32, count=100000 * 128, offset=begin).copy()
x[(97001) * 128 + 5] = np.nan
raw[begin:begin + x.nbytes] = x.tobytes()
open("nan_late.safetensors", "wb").write(raw)
PY
expect_fail nan_streamed "row 97001 (0-based), column 5" nan_run -- \
  "$HUSAI" "${args[@]}" --activations nan_late.safetensors --out nan_run
echo "streaming: all checks passed"
