#!/usr/bin/env bash
# Activations from others: a folder (and a glob) of float16 .npy and safetensors shards trains the same SAE bytes as
# the same values widened into one float32 file (same rows in the same order); a bfloat16 safetensors file likewise;
# both also when streamed through a window smaller than the file; shards that disagree on d_in or dtype, a
# truncated .npy, a Fortran-order .npy and a NaN in a later shard (in memory or streamed) are refused naming the
# file (and the row).
set -euo pipefail
HUSAI=$1; WORK=$2
source "$(cd "$(dirname "$0")" && pwd)/lib.bash"
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
/usr/bin/python3 - <<'PY'
import json, os, struct
import numpy as np
def save_st(path, arrays, meta=None):
    header, blob = {}, b""
    for k, (v, dt) in arrays.items():
        raw = v.tobytes()
        header[k] = {"dtype": dt, "shape": list(v.shape), "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    if meta: header["__metadata__"] = meta
    h = json.dumps(header).encode(); h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + blob)
rng = np.random.default_rng(3)
x16 = (0.5 * rng.standard_normal((6000, 32))).astype(np.float16)
os.makedirs("shards", exist_ok=True)
np.save("shards/shard_00.npy", x16[:2000])
save_st("shards/shard_01.safetensors", {"activations": (x16[2000:4000], "F16")})
np.save("shards/shard_02.npy", x16[4000:])
save_st("widened.safetensors", {"activations": (x16.astype(np.float32), "F32")})
# bfloat16: the top 16 bits of float32 values (exactly representable ones, so widening is exact).
x32 = (0.5 * rng.standard_normal((3000, 32))).astype(np.float32)
bf = (x32.view(np.uint32) >> 16).astype(np.uint16)
save_st("bf16.safetensors", {"activations": (bf, "BF16")})
save_st("bf16_widened.safetensors", {"activations": ((bf.astype(np.uint32) << 16).view(np.float32), "F32")})
# Bad shard sets.
os.makedirs("bad_width", exist_ok=True); np.save("bad_width/a.npy", x16[:100]); np.save("bad_width/b.npy", x16[:100, :16])
os.makedirs("bad_dtype", exist_ok=True); np.save("bad_dtype/a.npy", x16[:100]); np.save("bad_dtype/b.npy", x16[:100].astype(np.float32))
os.makedirs("bad_nan", exist_ok=True); y = x16.copy(); y[4005, 7] = np.nan
np.save("bad_nan/s0.npy", y[:4000]); np.save("bad_nan/s1.npy", y[4000:])
np.save("trunc.npy", x16[:100]); open("trunc.npy", "r+b").truncate(os.path.getsize("trunc.npy") - 10)
np.save("fortran.npy", np.asfortranarray(x16[:100].astype(np.float32)))
PY
args=(train-sae --quiet --d-sae 64 --k 4 --steps 200 --batch-size 128 --threads 2 --seeds 1,2)
"$HUSAI" "${args[@]}" --activations shards --out from_folder
"$HUSAI" "${args[@]}" --activations 'shards/shard_*' --out from_glob
"$HUSAI" "${args[@]}" --activations widened.safetensors --out from_f32
for s in 1 2; do
  cmp "from_folder/seed$s/sae_weights.safetensors" "from_f32/seed$s/sae_weights.safetensors" ||
    { echo "FAIL: float16 shards gave other weights than the widened float32 file" >&2; exit 1; }
  cmp "from_glob/seed$s/sae_weights.safetensors" "from_f32/seed$s/sae_weights.safetensors" ||
    { echo "FAIL: a glob of shards gave other weights" >&2; exit 1; }
done
echo "3 float16 shards (2 .npy, 1 safetensors) = one float32 file: identical SAE bytes (folder and glob)"
# The same, streamed: 6,000 rows through a 1,024-row window (held-out blocks, windowed shuffle).
"$HUSAI" "${args[@]}" --buffer-rows 1024 --activations shards --out streamed_folder
"$HUSAI" "${args[@]}" --buffer-rows 1024 --activations widened.safetensors --out streamed_f32
for s in 1 2; do
  cmp "streamed_folder/seed$s/sae_weights.safetensors" "streamed_f32/seed$s/sae_weights.safetensors" ||
    { echo "FAIL: streamed float16 shards gave other weights than the widened float32 file" >&2; exit 1; }
done
grep -q '"mode": "streamed"' streamed_folder/seed1/metrics.json || { echo "FAIL: not streamed" >&2; exit 1; }
echo "streamed (--buffer-rows 1024): float16 shards = widened float32 file, identical SAE bytes"
"$HUSAI" "${args[@]}" --activations bf16.safetensors --out from_bf16
"$HUSAI" "${args[@]}" --activations bf16_widened.safetensors --out from_bf16_f32
cmp from_bf16/seed1/sae_weights.safetensors from_bf16_f32/seed1/sae_weights.safetensors ||
  { echo "FAIL: bfloat16 gave other weights than its widened float32 values" >&2; exit 1; }
echo "bfloat16 safetensors = widened float32: identical SAE bytes"

expect_fail width "bad_width/b.npy" o1 -- "$HUSAI" "${args[@]}" --activations bad_width --out o1
expect_fail dtype "every shard must have the same d_in and dtype" o2 -- "$HUSAI" "${args[@]}" --activations bad_dtype --out o2
expect_fail nan "row 5 (0-based), column 7 (row 4005 of all shards)" o3 -- "$HUSAI" "${args[@]}" --activations bad_nan --out o3
expect_fail nan_streamed "row 5 (0-based), column 7 (row 4005 of all shards)" o7 -- \
  "$HUSAI" "${args[@]}" --buffer-rows 1024 --activations bad_nan --out o7
expect_fail trunc "truncated" o4 -- "$HUSAI" "${args[@]}" --activations trunc.npy --out o4
expect_fail fortran "Fortran-order" o5 -- "$HUSAI" "${args[@]}" --activations fortran.npy --out o5
expect_fail empty_glob "no file matches" o6 -- "$HUSAI" "${args[@]}" --activations 'shards/none_*' --out o6
echo "activation_shards: all checks passed"
