#!/usr/bin/env bash
# Transcoders end to end: train-sae --target-activations on planted pairs (synth --transcoder) recovers the target
# dictionary (relu, topk); SAELens transcoder keys in cfg.json; kill -9 + --resume gives identical bytes; extract
# writes both sites in one pass, byte-identical to two single-site extracts, and as shards (--shard-rows) that
# concatenate to the same tensors and train the same transcoder bytes; the MLP of a ReLU model without
# LayerNorm, written as a SAELens "transcoder" folder, spliced in place of the MLP by eval-sae, reproduces the
# clean model (fvu 0, ce_loss_score 1, KL 0) -- so the splice reads resid_mid and writes mlp_out; a trained
# transcoder on that model gets its scores; bad inputs are refused with clear errors.
set -euo pipefail
HUSAI=$1; WORK=$2
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.bash"
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"

"$HUSAI" synth --quiet --d-in 32 --n-features 64 --active 3 --rows 20000 --seed 1 --transcoder --out synth.safetensors
common=(train-sae --quiet --activations synth.safetensors --target-activations synth.safetensors --target-key targets
        --d-sae 128 --k 3 --batch-size 256)
for arch in topk relu; do
  "$HUSAI" "${common[@]}" --architecture "$arch" --steps 1500 --threads 1 --out "rec_$arch"
  /usr/bin/python3 "$HERE/sae_recovery.py" synth.safetensors:target_dictionary "rec_$arch/seed42" 0.9
done
/usr/bin/python3 - <<'PY'
import json
for d, arch in (("rec_relu", "transcoder"), ("rec_topk", "topk")):
    c = json.load(open(d + "/seed42/cfg.json"))
    assert c["architecture"] == arch, (d, c["architecture"])
    assert c["d_out"] == 32 and c["apply_b_dec_to_input"] is False, c
    assert "hook_name_out" in c and c["hook_layer_out"] == 0 and c["hook_head_index_out"] is None, c
    assert c["metadata"]["transcoder"] is True and c["metadata"]["target_activations_sha256"], c["metadata"]
    m = json.load(open(d + "/seed42/metrics.json"))
    assert abs(m["transcoder"]["held_out_fvu"] - (1 - m["held_out"]["explained_variance"])) < 1e-12, m
print("cfg.json: SAELens transcoder keys (d_out, hook_name_out, hook_layer_out, hook_head_index_out)")
PY

# kill -9 + --resume: the same bytes as an uninterrupted run.
args=("${common[@]}" --architecture topk --steps 1000 --checkpoint-every 25 --threads 2)
kill_resume_matches transcoder t1 tk "0.15 0.25" \
  "seed42/sae_weights.safetensors seed42/cfg.json seed42/metrics.jsonl trainer_state.safetensors" -- "${args[@]}"

"$HUSAI" eval-sae --quiet --sae rec_topk/seed42 --activations synth.safetensors --target-activations synth.safetensors \
  --target-key targets --out eval_synth.json
/usr/bin/python3 -c "
import json; e=json.load(open('eval_synth.json')); m=e['metrics']
assert e['sae']['transcoder'] and abs(m['fvu']-(1-m['explained_variance']))<1e-12 and m['fvu']<0.1, m
print('eval-sae (synthetic transcoder): fvu %.4f' % m['fvu'])"

# A ReLU model without LayerNorm: its MLP is exactly a transcoder from resid_mid to mlp_out.
"$HUSAI" train-transformer --quiet --modulus 23 --epochs 30 --train-fraction 0.5 --set model.n_layers=1 \
  --set model.d_model=32 --set model.n_heads=2 --set model.d_mlp=64 --set model.normalization_type=none \
  --set model.act_fn=relu --set training.batch_size=64 --out model
"$HUSAI" extract --quiet --model model --layer 0 --site resid_mid --target-site mlp_out --out in.safetensors \
  --target-out out.safetensors
"$HUSAI" extract --quiet --model model --layer 0 --site resid_mid --out in_alone.safetensors
"$HUSAI" extract --quiet --model model --layer 0 --site mlp_out --out out_alone.safetensors
cmp in.safetensors in_alone.safetensors && cmp out.safetensors out_alone.safetensors ||
  { echo "FAIL: a two-site extract differs from single-site extracts" >&2; exit 1; }
echo "extract: both sites in one pass, identical bytes to two single-site extracts"
"$HUSAI" extract --quiet --model model --layer 0 --site resid_mid --target-site mlp_out --shard-rows 100 \
  --out in_shards --target-out out_shards
/usr/bin/python3 - <<'PY'
import glob, json, struct
import numpy as np
def tensors(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
    out = {k: np.frombuffer(b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]],
                            dtype={'F32': np.float32, 'I64': np.int64}[v['dtype']]).reshape(v['shape'])
           for k, v in h.items() if k != '__metadata__'}
    return out, h.get('__metadata__', {})
for one, folder in (('in.safetensors', 'in_shards'), ('out.safetensors', 'out_shards')):
    whole, meta = tensors(one)
    shards = sorted(glob.glob(folder + '/shard_*.safetensors'))
    assert len(shards) == 6, shards  # 529 rows in shards of 100
    parts = [tensors(s) for s in shards]
    for k in whole:
        assert np.array_equal(np.concatenate([p[0][k] for p in parts]), whole[k]), (folder, k)
    assert [p[1]['shard_first_row'] for p in parts] == [str(100 * i) for i in range(6)]
    assert all(p[1]['hook_name'] == meta['hook_name'] and p[1]['total_rows'] == '529' for p in parts)
print('extract --shard-rows 100: 6 shards per site, every tensor equal to the single file when concatenated')
PY
/usr/bin/python3 - <<'PY'
import json, struct, os
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: (v, b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]]) for k, v in h.items() if k != '__metadata__'}
t = load('model/model.safetensors')
order = [('W_enc', 'blocks.0.mlp.W_in'), ('b_enc', 'blocks.0.mlp.b_in'), ('W_dec', 'blocks.0.mlp.W_out'), ('b_dec', 'blocks.0.mlp.b_out')]
header, blob = {}, b''
for name, src in order:
    meta, data = t[src]
    assert meta['dtype'] == 'F32'
    header[name] = {'dtype': 'F32', 'shape': meta['shape'], 'data_offsets': [len(blob), len(blob) + len(data)]}
    blob += data
h = json.dumps(header).encode(); h += b' ' * (-len(h) % 8)
os.makedirs('mlp_tc', exist_ok=True)
open('mlp_tc/sae_weights.safetensors', 'wb').write(struct.pack('<Q', len(h)) + h + blob)
d_in, d_sae = header['W_enc']['shape']
json.dump({'architecture': 'transcoder', 'd_in': d_in, 'd_sae': d_sae, 'd_out': d_in, 'dtype': 'float32',
           'apply_b_dec_to_input': False, 'normalize_activations': 'none', 'hook_name': 'blocks.0.hook_resid_mid',
           'hook_name_out': 'blocks.0.hook_mlp_out', 'hook_layer_out': 0}, open('mlp_tc/cfg.json', 'w'))
PY
"$HUSAI" eval-sae --quiet --sae mlp_tc --activations in.safetensors --target-activations out.safetensors --model model \
  --out eval_mlp.json
/usr/bin/python3 -c "
import json; e=json.load(open('eval_mlp.json')); m=e['metrics']; s=e['splice']
assert s['replaced'] == 'blocks.0.hook_resid_mid -> blocks.0.hook_mlp_out', s
assert m['fvu'] < 1e-9, m['fvu']
assert abs(s['ce_sae'] - s['ce_clean']) < 1e-5 * max(1, s['ce_clean']) and s['kl_sae'] < 1e-6, s
assert abs(m['ce_loss_score'] - 1) < 1e-4 and s['ce_zero_ablation'] != s['ce_clean'], s
print('the MLP as a transcoder: fvu %.2e, ce %.6f vs clean %.6f, kl %.2e, ce_loss_score %.6f (zero ablation ce %.4f)' %
      (m['fvu'], s['ce_sae'], s['ce_clean'], s['kl_sae'], m['ce_loss_score'], s['ce_zero_ablation']))"

# A transcoder trained on that pair, spliced in place of the MLP; the same from the sharded extract, same bytes.
"$HUSAI" train-sae --quiet --activations in.safetensors --target-activations out.safetensors --architecture topk \
  --d-sae 128 --k 8 --steps 300 --batch-size 128 --set data.eval_fraction=0.1 --out tc_model
"$HUSAI" train-sae --quiet --activations in_shards --target-activations out_shards --architecture topk \
  --d-sae 128 --k 8 --steps 300 --batch-size 128 --set data.eval_fraction=0.1 --out tc_model_shards
cmp tc_model/seed42/sae_weights.safetensors tc_model_shards/seed42/sae_weights.safetensors ||
  { echo "FAIL: the transcoder trained on extract shards differs" >&2; exit 1; }
echo "transcoder from extract --shard-rows folders: identical bytes to the single files"
"$HUSAI" eval-sae --quiet --sae tc_model/seed42 --activations in.safetensors --target-activations out.safetensors \
  --model model --out eval_tc.json
/usr/bin/python3 -c "
import json; e=json.load(open('eval_tc.json')); m=e['metrics']
assert m['fvu'] < 1 and m['ce_loss_score'] is not None, m
print('trained topk transcoder in place of the MLP: fvu %.4f, ce_loss_score %.4f, kl_div_score %.4f' % (m['fvu'], m['ce_loss_score'], m['kl_div_score']))"

"$HUSAI" synth --quiet --d-in 32 --n-features 64 --active 3 --rows 500 --seed 2 --out short.safetensors
"$HUSAI" synth --quiet --d-in 16 --n-features 64 --active 3 --rows 20000 --seed 2 --out narrow.safetensors
expect_fail tc_rows "500 rows" bad_rows -- "$HUSAI" train-sae --quiet --activations synth.safetensors \
  --target-activations short.safetensors --out bad_rows
expect_fail tc_width "width 16" bad_width -- "$HUSAI" train-sae --quiet --activations synth.safetensors \
  --target-activations narrow.safetensors --out bad_width
expect_fail tc_bdec "apply_b_dec_to_input" bad_bdec -- "$HUSAI" "${common[@]}" --set sae.apply_b_dec_to_input=true \
  --out bad_bdec
expect_fail tc_no_target "give its target rows with --target-activations" e1.json -- "$HUSAI" eval-sae --sae rec_relu/seed42 \
  --activations synth.safetensors --out e1.json
"$HUSAI" train-sae --quiet --activations synth.safetensors --d-sae 64 --k 3 --steps 20 --batch-size 64 --out rec_plain
expect_fail sae_with_target "is an SAE" e3.json -- "$HUSAI" eval-sae --sae rec_plain/seed42 --activations synth.safetensors \
  --target-activations synth.safetensors --target-key targets --out e3.json
expect_fail tc_resume_target "as a transcoder" "" -- "$HUSAI" train-sae --quiet --activations synth.safetensors \
  --d-sae 128 --k 3 --batch-size 256 --architecture topk --steps 1000 --checkpoint-every 25 --threads 2 --out t1 --resume
expect_fail extract_target_out "target-out" "" -- "$HUSAI" extract --quiet --model model --site resid_mid --target-site mlp_out \
  --out x.safetensors
echo "transcoder: all checks passed"
