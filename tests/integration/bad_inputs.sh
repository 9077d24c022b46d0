#!/usr/bin/env bash
# The catalogue of bad inputs in docs/errors.md, one case each. Every case must: exit 1 (CONTRACTS), never by
# a signal (exit < 128), print exactly one "husai: error:" line naming the offending file (and key, row or
# offset), leave no temp file behind and nothing under the output's final name, and leave earlier results
# untouched (sha256 of every earlier file compared at the end).
set -uo pipefail
HUSAI=$1; WORK=$2
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$WORK"; mkdir -p "$WORK/err"; cd "$WORK" || exit 1
n=0; bad=0

fail() { echo "FAIL: $*" >&2; bad=$((bad + 1)); }

# expect_error NAME MUST_NOT_EXIST PATTERN... -- COMMAND...   (MUST_NOT_EXIST may be "")
# With NAME starting "usage:", the message comes from the option parser (CLI11) with the usage text after it.
expect_error() {
  local name=$1 absent=$2; shift 2
  local patterns=()
  while [[ $1 != -- ]]; do patterns+=("$1"); shift; done
  shift
  n=$((n + 1))
  local err="err/${name#usage:}.err" rc=0
  "$@" > /dev/null 2> "$err" || rc=$?
  if ((rc >= 128)); then fail "$name: killed by signal $((rc - 128))"; cat "$err" >&2; return; fi
  if ((rc != 1)); then fail "$name: exit code $rc, expected 1"; cat "$err" >&2; return; fi
  local msg
  if [[ $name == usage:* ]]; then
    msg=$(head -n 1 "$err")
  else
    if [[ $(grep -c '^husai: error:' "$err") -ne 1 ]]; then
      fail "$name: expected exactly one 'husai: error:' line"; cat "$err" >&2; return
    fi
    msg=$(grep '^husai: error:' "$err")
  fi
  local p
  for p in "${patterns[@]}"; do
    grep -qF -- "$p" <<< "$msg" || { fail "$name: message lacks '$p': $msg"; return; }
  done
  if [[ -n $absent && -e $absent ]]; then fail "$name: $absent was written"; return; fi
  if [[ -n $(find . -name '*.tmp.*' -print -quit) ]]; then fail "$name: temp file left: $(find . -name '*.tmp.*')"; return; fi
  echo "ok $n $name: $msg"
}

# ---------------------------------------------------------------------------------------- earlier results
"$HUSAI" synth --quiet --d-in 8 --n-features 16 --active 2 --rows 400 --seed 1 --out good.safetensors
"$HUSAI" synth --quiet --d-in 16 --n-features 16 --active 2 --rows 200 --seed 1 --out d16.safetensors
sae_args=(train-sae --quiet --d-sae 16 --k 2 --steps 20 --batch-size 64)
"$HUSAI" "${sae_args[@]}" --activations good.safetensors --out sae_run
SAE=sae_run/seed42
tiny=(--quiet --modulus 11 --train-fraction 0.5 --set model.n_layers=1 --set model.d_model=16
      --set model.n_heads=2 --set model.d_mlp=32 --set training.batch_size=32)
"$HUSAI" train-transformer "${tiny[@]}" --epochs 3 --out model_run
"$HUSAI" eval-sae --quiet --sae "$SAE" --activations good.safetensors --out eval.json
snapshot() { find good.safetensors d16.safetensors sae_run model_run eval.json -type f | sort | xargs sha256sum; }
snapshot > before.sha

# Corrupt activation files and SAE folders, built from the good ones.
/usr/bin/python3 - <<'PY'
import json, os, shutil, struct
good = open("good.safetensors", "rb").read()
(n,) = struct.unpack("<Q", good[:8])
header = json.loads(good[8:8 + n])
data = good[8 + n:]
def st(h, d, size=None):
    hb = json.dumps(h).encode()
    hb += b" " * (-len(hb) % 8)
    return struct.pack("<Q", len(hb) if size is None else size) + hb + d
def w(name, b):
    open(name, "wb").write(b)
w("truncated.safetensors", good[:-100])
w("header_beyond.safetensors", struct.pack("<Q", len(good) + 1000) + good[8:])
w("header_huge.safetensors", struct.pack("<Q", 1 << 40) + good[8:])
w("short.safetensors", good[:5])
w("not_json.safetensors", st({}, b"")[:8] + b"{oops   ")
a = header["activations"]; d0, d1 = a["data_offsets"]
rows, cols = a["shape"]
h = dict(header); h["alias"] = {"dtype": "F32", "shape": [4], "data_offsets": [d0, d0 + 16]}
w("overlap.safetensors", st(h, data))
h = dict(header); h["activations"] = dict(a, data_offsets=[d0 + len(data), d1 + len(data)])
w("outside.safetensors", st(h, data))
h = dict(header); h["activations"] = dict(a, shape=[rows + 1, cols])
w("shape_bytes.safetensors", st(h, data))
h = dict(header); h["activations"] = dict(a, dtype="F8_E4M3")
w("dtype_unknown.safetensors", st(h, data))
h = dict(header); h["activations"] = dict(a, dtype="I32")
w("int_acts.safetensors", st(h, data))
h = dict(header); h["activations"] = dict(a, shape=[rows * cols])
w("acts_1d.safetensors", st(h, data))
def with_value(name, row, value):
    d = bytearray(data)
    struct.pack_into("<f", d, d0 + 4 * (row * cols + 1), value)
    w(name, st(header, bytes(d)))
with_value("nan.safetensors", 17, float("nan"))
with_value("inf.safetensors", 3, float("inf"))
def sae(name, cfg_edit=None, cfg_text=None, weights=True):
    shutil.copytree("sae_run/seed42", name)
    if not weights:
        os.remove(name + "/sae_weights.safetensors")
    if cfg_edit is not None or cfg_text is not None:
        cfg = json.load(open(name + "/cfg.json"))
        if cfg_edit: cfg.update(cfg_edit)
        open(name + "/cfg.json", "w").write(cfg_text if cfg_text is not None else json.dumps(cfg))
sae("sae_shape", {"d_in": 9})
sae("sae_type", {"d_in": "8"})
sae("sae_k", {"k": 99})
sae("sae_arch", {"architecture": "crosscoder"})
sae("sae_gated", {"architecture": "gated"})  # a topk folder's tensors: no b_gate / r_mag / b_mag
sae("sae_notjson", cfg_text="{\"d_in\": 8,")
sae("sae_noweights", weights=False)
os.remove("sae_noweights/cfg.json")
os.makedirs("sae_nocfg")
shutil.copy("sae_run/seed42/sae_weights.safetensors", "sae_nocfg/")
PY
printf 'model:\n  d_modle: 64\n' > cfg_unknown.yaml
printf 'model:\n  n_layers: 1\n  d_model: sixty-four\n' > cfg_type.yaml
printf 'task:\n  modulus: 1\n' > cfg_range.yaml
printf 'model:\n  d_model: [64\n' > cfg_syntax.yaml
printf 'training:\n  lr: 0.1\n  lr: 0.2\n' > cfg_twice.yaml
touch a_file
T=("$HUSAI" train-transformer "${tiny[@]}" --epochs 3)
T_epochs=("$HUSAI" train-transformer "${tiny[@]}")
S=("$HUSAI" train-sae --quiet --d-sae 16 --k 2 --steps 20 --batch-size 64)

# ------------------------------------------------------------------------------------------ missing files
expect_error missing_activations out_ma "missing.safetensors" "No such file" -- "${S[@]}" --activations missing.safetensors --out out_ma
expect_error missing_sae eval_ms.json "no_such_sae" "SAE folder not found" -- "$HUSAI" eval-sae --sae no_such_sae --activations good.safetensors --out eval_ms.json
expect_error missing_sae_files eval_mf.json "sae_noweights" "not an SAE folder" -- "$HUSAI" eval-sae --sae sae_noweights --activations good.safetensors --out eval_mf.json
expect_error missing_cfg_json eval_mc.json "sae_nocfg/cfg.json" "No such file" -- "$HUSAI" eval-sae --sae sae_nocfg --activations good.safetensors --out eval_mc.json
expect_error missing_model acts_mm.safetensors "no_such_run" "not found" -- "$HUSAI" extract --model no_such_run --out acts_mm.safetensors
expect_error usage:missing_config out_mcfg "missing.yaml" -- "${T[@]}" --config missing.yaml --out out_mcfg

# ------------------------------------------------------------------------------------ corrupt safetensors
expect_error truncated out_tr "truncated.safetensors" "data_offsets" "beyond the data buffer" -- "${S[@]}" --activations truncated.safetensors --out out_tr
expect_error header_beyond_file out_hb "header_beyond.safetensors" "header size" "larger than" -- "${S[@]}" --activations header_beyond.safetensors --out out_hb
expect_error header_size_huge out_hh "header_huge.safetensors" "exceeds the limit" -- "${S[@]}" --activations header_huge.safetensors --out out_hh
expect_error too_short out_sh "short.safetensors" "too short" -- "${S[@]}" --activations short.safetensors --out out_sh
expect_error header_not_json out_nj "not_json.safetensors" "not valid JSON" -- "${S[@]}" --activations not_json.safetensors --out out_nj
expect_error offsets_overlap out_ov "overlap.safetensors" "overlap" "[0, 16]" -- "${S[@]}" --activations overlap.safetensors --out out_ov
expect_error offsets_outside out_os "outside.safetensors" "tensor 'activations'" "beyond the data buffer" -- "${S[@]}" --activations outside.safetensors --out out_os
expect_error shape_vs_bytes out_sb "shape_bytes.safetensors" "tensor 'activations'" "bytes but data_offsets" -- "${S[@]}" --activations shape_bytes.safetensors --out out_sb
expect_error dtype_unknown out_du "dtype_unknown.safetensors" "unknown dtype 'F8_E4M3'" -- "${S[@]}" --activations dtype_unknown.safetensors --out out_du
expect_error dtype_integer out_di "int_acts.safetensors" "holds integers" -- "${S[@]}" --activations int_acts.safetensors --out out_di
expect_error shape_1d out_1d "acts_1d.safetensors" "must be 2-D" -- "${S[@]}" --activations acts_1d.safetensors --out out_1d
expect_error tensor_missing out_tm "good.safetensors" "'acts' not found" "available tensors: activations" -- "${S[@]}" --activations good.safetensors --key acts --out out_tm

# ----------------------------------------------------------------------------------------------- NaN / Inf
expect_error nan_row out_nan "nan.safetensors" "row 17" "NaN" -- "${S[@]}" --activations nan.safetensors --out out_nan
expect_error inf_row eval_inf.json "inf.safetensors" "row 3" "infinite" -- "$HUSAI" eval-sae --sae "$SAE" --activations inf.safetensors --out eval_inf.json
expect_error nan_resume "" "nan.safetensors" "row 17" -- "$HUSAI" "${sae_args[@]}" --activations nan.safetensors --out sae_run --resume

# ----------------------------------------------------------------------------------------------- SAE folder
expect_error sae_d_in_mismatch eval_dm.json "d16.safetensors" "d_in 16" "expects d_in 8" -- "$HUSAI" eval-sae --sae "$SAE" --activations d16.safetensors --out eval_dm.json
expect_error sae_resume_d_in "" "trainer_state.safetensors" "d_in = 8" -- "$HUSAI" "${sae_args[@]}" --activations d16.safetensors --out sae_run --resume
expect_error sae_weight_shape eval_ws.json "sae_shape/sae_weights.safetensors" "tensor 'W_enc' has shape [8, 16], expected [9, 16]" -- "$HUSAI" eval-sae --sae sae_shape --activations good.safetensors --out eval_ws.json
expect_error sae_cfg_mistyped eval_ct.json "sae_type/cfg.json" "key 'd_in'" -- "$HUSAI" eval-sae --sae sae_type --activations good.safetensors --out eval_ct.json
expect_error sae_cfg_k_range eval_ck.json "sae_k/cfg.json" "key 'k'" "exceeds d_sae = 16" -- "$HUSAI" eval-sae --sae sae_k --activations good.safetensors --out eval_ck.json
expect_error sae_cfg_architecture eval_ca.json "sae_arch/cfg.json" "key 'architecture'" "crosscoder" -- "$HUSAI" eval-sae --sae sae_arch --activations good.safetensors --out eval_ca.json
expect_error sae_gated_tensors eval_gt.json "sae_gated/sae_weights.safetensors" "tensor 'b_gate' not found" -- "$HUSAI" eval-sae --sae sae_gated --activations good.safetensors --out eval_gt.json
expect_error sae_cfg_not_json eval_cj.json "sae_notjson/cfg.json" "invalid JSON" -- "$HUSAI" eval-sae --sae sae_notjson --activations good.safetensors --out eval_cj.json

# ------------------------------------------------------------------------------------------------- config
expect_error config_unknown_key out_ck "cfg_unknown.yaml:2" "model.d_modle" "did you mean" -- "${T[@]}" --config cfg_unknown.yaml --out out_ck
expect_error config_unknown_set out_cs "--set training.lrr=0.1" "training.lrr" -- "${T[@]}" --set training.lrr=0.1 --out out_cs
expect_error config_mistyped out_ct "cfg_type.yaml:3" "model.d_model" "sixty-four" -- "${T[@]}" --config cfg_type.yaml --out out_ct
expect_error config_p_lt_2 out_cp "cfg_range.yaml:2" "task.modulus" "[2, 100000]" -- "${T[@]}" --config cfg_range.yaml --out out_cp
expect_error config_p_flag out_cf "--modulus" "task.modulus" -- "$HUSAI" train-transformer --quiet --modulus 1 --out out_cf
expect_error config_heads out_chd "divisible" "model.d_model" "model.n_heads" -- "${T[@]}" --set model.d_model=30 --set model.n_heads=4 --out out_chd
expect_error config_architecture out_ar "sae.architecture" "crosscoder" "gated" -- "$HUSAI" train-sae --quiet --activations good.safetensors --architecture crosscoder --out out_ar
expect_error config_k_gt_d_sae out_kd "sae.k" "exceeds d_sae = 16" -- "$HUSAI" train-sae --quiet --activations good.safetensors --d-sae 16 --k 32 --out out_kd
expect_error config_syntax out_cy "cfg_syntax.yaml" -- "${T[@]}" --config cfg_syntax.yaml --out out_cy
expect_error config_set_twice out_c2 "cfg_twice.yaml:3" "training.lr" "set twice" -- "${T[@]}" --config cfg_twice.yaml --out out_c2
expect_error config_seeds_repeated out_sr "training.seeds" "repeated" -- "${S[@]}" --activations good.safetensors --seeds 1,1 --out out_sr
expect_error config_resume_changed "" "model_run/checkpoint.safetensors" "different config" -- "${T[@]}" --lr 0.5 --out model_run --resume

# ------------------------------------------------------------------------------------------ output paths
expect_error out_parent_is_file "" "a_file/run" "Not a directory" -- "${T[@]}" --out a_file/run
expect_error out_is_file "" "a_file" "not a directory" -- "${S[@]}" --activations good.safetensors --out a_file
expect_error eval_out_parent_is_file "" "a_file/eval.json" "Not a directory" -- "$HUSAI" eval-sae --sae "$SAE" --activations good.safetensors --out a_file/eval.json
expect_error extract_out_parent_is_file "" "a_file/acts.safetensors" "Not a directory" -- "$HUSAI" extract --model model_run --out a_file/acts.safetensors
expect_error out_not_empty "" "model_run" "not empty" -- "${T[@]}" --out model_run
expect_error eval_out_exists "" "eval.json" "exists" -- "$HUSAI" eval-sae --sae "$SAE" --activations good.safetensors --out eval.json
if [[ $(id -u) -ne 0 ]]; then
  mkdir ro && chmod 555 ro
  expect_error out_read_only ro/run "ro/run" "Permission denied" -- "${T[@]}" --out ro/run
else
  echo "skip out_read_only: running as root, which ignores permission bits (the parent-is-a-file cases above cover an unwritable output)"
fi

# ------------------------------------------------------------------------- disk full (file-size limit)
# RLIMIT_FSIZE makes a write past the limit fail with EFBIG (husai ignores SIGXFSZ instead of dying by it).
# stderr goes through a pipe: the limit would also stop husai writing its message into a regular file.
limited() { local kib=$1; shift; (ulimit -f "$kib" && exec "$@" 2>&1 > /dev/null) | cat >&2; }
expect_error full_eval_overwrite "" "eval.json" "File too large" -- limited 0 "$HUSAI" eval-sae --sae "$SAE" --activations good.safetensors --out eval.json --overwrite
expect_error full_extract acts_full.safetensors "acts_full.safetensors" "File too large" -- limited 0 "$HUSAI" extract --model model_run --out acts_full.safetensors
expect_error full_train_sae "" "split.safetensors" "File too large" -- limited 0 "${S[@]}" --activations good.safetensors --out out_full_sae
expect_error full_train_transformer "" "checkpoint.safetensors" "File too large" "no checkpoint had been written yet" -- limited 24 "${T[@]}" --checkpoint-every 1 --out out_full_t
[[ -e out_full_t/checkpoint.safetensors ]] && fail "full_train_transformer: a checkpoint was published"
/usr/bin/python3 "$HERE/check_complete.py" out_full_sae out_full_t || fail "disk full: half-written files"
# A limit a little above a one-epoch checkpoint: the first checkpoints fit, a later one (its history grows each
# epoch) does not; the last good one must be kept, intact, and the message must say where it is.
"${T_epochs[@]}" --epochs 1 --out model_e1
ck_kib=$(( $(stat -c %s model_e1/checkpoint.safetensors) / 1024 + 2 ))
expect_error full_keeps_checkpoint "" "checkpoint.safetensors" "File too large" "the last good checkpoint (step" -- limited "$ck_kib" "${T_epochs[@]}" --epochs 200 --checkpoint-every 1 --out out_full_k
[[ -s out_full_k/checkpoint.safetensors ]] || fail "full_keeps_checkpoint: no checkpoint kept"
/usr/bin/python3 "$HERE/check_complete.py" out_full_k || fail "full_keeps_checkpoint: half-written files"

# ------------------------------------------------------------------------------------ corrupt checkpoint
cp -r model_run model_trunc
head -c 1000 model_run/checkpoint.safetensors > model_trunc/checkpoint.safetensors
expect_error checkpoint_truncated "" "model_trunc/checkpoint.safetensors" "truncated" -- "${T[@]}" --out model_trunc --resume

# ------------------------------------------------------------------------------------------ earlier results
snapshot > after.sha
cmp -s before.sha after.sha || { fail "earlier results changed:"; diff before.sha after.sha >&2; }
if ((bad)); then echo "bad_inputs: $bad of $n cases FAILED" >&2; exit 1; fi
echo "bad_inputs: all $n cases refused cleanly; earlier results untouched"
