#!/usr/bin/env bash
# husai compare end to end on planted-dictionary data: four TopK seeds against all three nulls (files, keys,
# trained above the gaussian null, pwmcc recomputed from the weight files in NumPy, identical stability.json for
# 1 and 2 threads), a d_sae < d_in pair, and every bad input refused with a clear error and nothing written.
set -euo pipefail
HUSAI=$1; WORK=$2
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
"$HUSAI" synth --quiet --d-in 32 --n-features 64 --active 3 --rows 20000 --seed 1 --out synth.safetensors
train=(train-sae --quiet --activations synth.safetensors --architecture topk --k 3 --batch-size 256)
"$HUSAI" "${train[@]}" --d-sae 128 --steps 800 --seeds 42,123,456,789 --out wide
"$HUSAI" "${train[@]}" --d-sae 16 --steps 200 --seeds 1,2 --out narrow
saes=(wide/seed42 wide/seed123 wide/seed456 wide/seed789)

"$HUSAI" compare "${saes[@]}" --activations synth.safetensors --null gaussian,untrained,covariance \
  --bootstrap 2000 --threads 2 --out cmp
"$HUSAI" compare --quiet "${saes[@]}" --activations synth.safetensors --null gaussian,untrained,covariance \
  --bootstrap 2000 --threads 1 --no-figures --out cmp1
cmp cmp/stability.json cmp1/stability.json || { echo "FAIL: stability.json differs between 1 and 2 threads" >&2; exit 1; }
echo "1 vs 2 threads: identical stability.json"
for f in stability.json summary.md pairs.csv per_feature.csv manifest.json pairwise_heatmap.png pairwise_heatmap.svg \
         trained_vs_nulls.png trained_vs_nulls.svg per_feature_hist.png per_feature_hist.svg; do
  [[ -s cmp/$f ]] || { echo "FAIL: cmp/$f missing or empty" >&2; exit 1; }
done
"$HUSAI" compare --quiet narrow/seed1 narrow/seed2 --bootstrap 500 --no-figures --out cmp_narrow

/usr/bin/python3 - <<'PY'
import json, struct, sys
import numpy as np
from scipy.optimize import linear_sum_assignment

def load(path):
    raw = open(path, 'rb').read()
    n = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == '__metadata__': continue
        a, b = v['data_offsets']
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype='<f4').reshape(v['shape']).astype(np.float64)
    return out

def expect(cond, msg):
    if not cond:
        print('FAIL:', msg, file=sys.stderr); sys.exit(1)

def check_pairs(doc, dirs):
    metrics = ['pwmcc', 'pwmcc_ab', 'pwmcc_ba', 'matched_mean_cos', 'shared_frac_05', 'shared_frac_07', 'shared_frac_09']
    order = [(i, j) for i in range(len(dirs)) for j in range(i + 1, len(dirs))]
    expect([(p['a'], p['b']) for p in doc['pairs']] == order, 'pairs in input order i < j')
    for p in doc['pairs']:
        for m in metrics:
            expect(m in p and m + '_enc' in p, f'pair key {m} / {m}_enc')
        # Independent recomputation from the weight files: features are the rows of W_dec, columns of W_enc.
        wa, wb = load(dirs[p['a']] + '/sae_weights.safetensors'), load(dirs[p['b']] + '/sae_weights.safetensors')
        for key, fa, fb in (('', wa['W_dec'], wb['W_dec']), ('_enc', wa['W_enc'].T, wb['W_enc'].T)):
            ua = fa / np.linalg.norm(fa, axis=1, keepdims=True); ub = fb / np.linalg.norm(fb, axis=1, keepdims=True)
            c = np.abs(ua @ ub.T)
            r, k = linear_sum_assignment(c, maximize=True)
            want = {'pwmcc': 0.5 * (c.max(1).mean() + c.max(0).mean()), 'matched_mean_cos': c[r, k].mean()}
            for m, w in want.items():
                expect(abs(p[m + key] - w) < 2e-5, f'{m}{key} of pair {p["a"]},{p["b"]}: {p[m + key]} vs NumPy {w}')

doc = json.load(open('cmp/stability.json'))
expect(doc['schema_version'] == 1, 'schema_version')
dirs = ['wide/seed42', 'wide/seed123', 'wide/seed456', 'wide/seed789']
expect([i['path'] for i in doc['inputs']] == dirs, 'inputs in order')
check_pairs(doc, dirs)
expect(doc['primary_null']['name'] == 'covariance', 'primary null is covariance with activations')
expect(set(doc['nulls']) == {'gaussian', 'untrained', 'covariance'}, 'all three nulls')
for name, nj in doc['nulls'].items():
    expect(nj['seeds'] == [1000, 1001, 1002, 1003], f'{name} null seeds')
    expect(len(nj['pairs']) == 6 and len(nj['cross_pairs']) == 16, f'{name} pair counts')
for metric in doc['summary_metrics']:
    s = doc['summary'][metric]
    for key in ('mean', 'ci_percentile', 'ci_bca', 'standard_error'):
        expect(key in s['trained'], f'summary {metric} trained {key}')
    for name in ('gaussian', 'untrained', 'covariance'):
        ne = s['nulls'][name]
        for key in ('mean', 'ci_bca', 'difference', 'ratio', 'permutation', 'cohens_d', 'mann_whitney', 'verdict'):
            expect(key in ne, f'summary {metric} {name} {key}')
        expect('p_holm' in ne['permutation'] and ne['permutation']['exact'], f'{metric} {name} exact permutation + Holm')
g = doc['summary']['pwmcc']['nulls']['gaussian']
t = doc['summary']['pwmcc']['trained']
print(f"planted data: trained pwmcc {t['mean']:.4f}, gaussian null {g['mean']:.4f}, verdict: {g['verdict']}")
expect(t['mean'] > g['mean'] and g['difference']['ci_bca'][0] > 0, 'trained pwmcc above the gaussian null')
for metric in ('pwmcc', 'matched_mean_cos'):
    v = doc['summary'][metric]['nulls']['gaussian']['verdict']
    expect(v.startswith('trained above gaussian null'), f'{metric} verdict: {v}')
pf = doc['per_feature'][0]['decoder']
expect(pf['n_latents'] == 128 and len(pf['most_stable']) == 10, 'per-feature summary')
expect(pf['most_stable'][0]['stability'] >= pf['least_stable'][0]['stability'], 'most >= least stable')
rows = open('cmp/per_feature.csv').read().splitlines()
expect(rows[0] == 'sae,path,latent,stability,stability_enc' and len(rows) == 1 + 4 * 128, 'per_feature.csv')
rows = open('cmp/pairs.csv').read().splitlines()
expect(len(rows) == 1 + 6 + 3 * (6 + 16), 'pairs.csv rows')
man = json.load(open('cmp/manifest.json'))
expect({o['path'] for o in man['outputs']} >= {'stability.json', 'summary.md', 'pairs.csv', 'per_feature.csv'}, 'manifest outputs')
md = open('cmp/summary.md').read()
expect('trained above gaussian null' in md and 'least stable' in md, 'summary.md verdicts and latents')

narrow = json.load(open('cmp_narrow/stability.json'))
check_pairs(narrow, ['narrow/seed1', 'narrow/seed2'])
expect(narrow['inputs'][0]['d_sae'] == 16 and narrow['per_feature'][0]['decoder']['n_latents'] == 16, 'd_sae < d_in: 16 latents')
expect(narrow['primary_null']['name'] == 'untrained', 'primary null without activations is untrained')
print('stability.json checks: ok')
PY

expect_fail() {  # NAME PATTERN OUTDIR -- command...
  local name=$1 pattern=$2 out=$3; shift 4
  if "$@" 2> "$name.err"; then echo "FAIL: $name accepted" >&2; exit 1; fi
  grep -q -- "$pattern" "$name.err" || { echo "FAIL: $name: message lacks '$pattern'" >&2; cat "$name.err" >&2; exit 1; }
  if [[ -n "$out" && -e "$out" ]]; then echo "FAIL: $name wrote $out" >&2; exit 1; fi
  echo "refused ($name): $(head -c 160 "$name.err")"
}
"$HUSAI" synth --quiet --d-in 16 --n-features 32 --active 2 --rows 2000 --seed 2 --out d16.safetensors
"$HUSAI" train-sae --quiet --activations d16.safetensors --architecture topk --k 2 --d-sae 32 --steps 20 --batch-size 128 \
  --seeds 7 --out d16sae
expect_fail one_sae "at least two" bad_one -- "$HUSAI" compare --quiet wide/seed42 --out bad_one
expect_fail d_in "d_in" bad_din -- "$HUSAI" compare --quiet wide/seed42 d16sae/seed7 --out bad_din
expect_fail cov_no_acts "--activations" bad_cov -- "$HUSAI" compare --quiet "${saes[@]}" --null covariance --out bad_cov
expect_fail acts_d_in "columns" bad_acts -- "$HUSAI" compare --quiet "${saes[@]}" --activations d16.safetensors --out bad_acts
expect_fail unknown_null "unknown null" bad_null -- "$HUSAI" compare --quiet "${saes[@]}" --null uniform --out bad_null
expect_fail missing "not found" bad_missing -- "$HUSAI" compare --quiet wide/seed42 nowhere --out bad_missing
expect_fail nonempty "not empty" "" -- "$HUSAI" compare --quiet "${saes[@]}" --out cmp
[[ -s cmp/manifest.json ]] || { echo "FAIL: refused run touched cmp" >&2; exit 1; }
expect_fail out_holds_input "must not contain" "" -- "$HUSAI" compare --quiet wide/seed42 wide/seed123 --out wide --overwrite
[[ -s wide/seed42/sae_weights.safetensors ]] || { echo "FAIL: --overwrite removed an input" >&2; exit 1; }
echo "compare: all checks passed"
