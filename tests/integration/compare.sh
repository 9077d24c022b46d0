#!/usr/bin/env bash
# husai compare end to end on planted-dictionary data: four TopK seeds against every null (files, keys,
# trained above the gaussian null, pwmcc recomputed from the weight files in NumPy, identical stability.json for
# 1 and 2 threads), a d_sae < d_in pair, the surrogate-data control on planted data (real structure beats the
# surrogate) and on Gaussian data (indistinguishable), and every bad input refused with a clear error and
# nothing written.
set -euo pipefail
HUSAI=$1; WORK=$2
source "$(cd "$(dirname "$0")" && pwd)/lib.bash"
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
"$HUSAI" synth --quiet --d-in 32 --n-features 64 --active 3 --rows 20000 --seed 1 --out synth.safetensors
train=(train-sae --quiet --activations synth.safetensors --architecture topk --k 3 --batch-size 256)
"$HUSAI" "${train[@]}" --d-sae 128 --steps 800 --seeds 42,123,456,789 --out wide
"$HUSAI" "${train[@]}" --d-sae 16 --steps 200 --seeds 1,2 --out narrow
saes=(wide/seed42 wide/seed123 wide/seed456 wide/seed789)

all_nulls=gaussian,untrained,covariance,second_moment,axis_reflection,rotation
"$HUSAI" compare "${saes[@]}" --activations synth.safetensors --null $all_nulls \
  --bootstrap 2000 --threads 2 --out cmp
"$HUSAI" compare --quiet "${saes[@]}" --activations synth.safetensors --null $all_nulls \
  --bootstrap 2000 --threads 1 --no-figures --out cmp1
cmp cmp/stability.json cmp1/stability.json || { echo "FAIL: stability.json differs between 1 and 2 threads" >&2; exit 1; }
echo "1 vs 2 threads: identical stability.json"
for f in stability.json summary.md pairs.csv per_feature.csv manifest.json pairwise_heatmap.png pairwise_heatmap.svg \
         trained_vs_nulls.png trained_vs_nulls.svg per_feature_hist.png per_feature_hist.svg; do
  [[ -s cmp/$f ]] || { echo "FAIL: cmp/$f missing or empty" >&2; exit 1; }
done
"$HUSAI" compare --quiet narrow/seed1 narrow/seed2 --bootstrap 500 --no-figures --out cmp_narrow
# Inputs that keep train-sae's stability snapshots get stability against steps: the same seed pairs at steps
# 100 / 200 / 400 and at the end (800), the last point equal to the main study's trained pwmcc.
/usr/bin/python3 - <<'PY'
import json
d = json.load(open("cmp/stability.json"))
cv = d["convergence"]
steps = [p["step"] for p in cv["points"]]
assert steps == [100, 200, 400, 800], steps
assert abs(cv["points"][-1]["pwmcc"] - d["summary"]["pwmcc"]["trained"]["mean"]) < 1e-12
ch = cv["last_change"]
assert ch["ci_bca"][0] <= ch["estimate"] <= ch["ci_bca"][1]
assert cv["plateaued"] == (-cv["margin"] <= ch["ci_bca"][0] and ch["ci_bca"][1] <= cv["margin"])
print(f"convergence: pwmcc {[round(p['pwmcc'], 3) for p in cv['points']]} at {steps}, plateaued {cv['plateaued']}")
PY
grep -q "## Stability against training steps" cmp/summary.md || { echo "FAIL: no convergence section" >&2; exit 1; }
# Folders of different runs (800 and 200 steps) share no snapshots: the comparison still runs and says so.
"$HUSAI" compare --quiet wide/seed42 narrow/seed1 --bootstrap 200 --no-figures --out cmp_mixed
grep -q "Not computed" cmp_mixed/summary.md || { echo "FAIL: mixed runs: no note on the missing curve" >&2; exit 1; }

# Surrogate-data control: five seeds (5 vs 5 surrogate SAEs: the smallest two-sided exact p is 2/252, so Holm
# over the two tested decoder metrics can reach 0.016). Planted data: the real dictionaries agree, the
# surrogate-trained ones do not. Gaussian data: real and surrogate are the same kind of data.
"$HUSAI" "${train[@]}" --d-sae 128 --steps 800 --seeds 1,2,3,4,5 --out five
"$HUSAI" compare --quiet five/seed{1,2,3,4,5} --activations synth.safetensors --null none --surrogate gaussian \
  --bootstrap 1000 --no-figures --out cmp_sur
/usr/bin/python3 - <<'PY'
import json, struct, numpy as np
rng = np.random.default_rng(5)
a = rng.standard_normal((20000, 32)) @ rng.standard_normal((32, 32)) * 0.3 + 1.0
data = a.astype('<f4').tobytes()
header = json.dumps({'activations': {'dtype': 'F32', 'shape': [20000, 32], 'data_offsets': [0, len(data)]}}).encode()
header += b' ' * ((8 - len(header) % 8) % 8)
open('gauss.safetensors', 'wb').write(struct.pack('<Q', len(header)) + header + data)
PY
"$HUSAI" train-sae --quiet --activations gauss.safetensors --architecture topk --k 3 --batch-size 256 --d-sae 128 \
  --steps 800 --seeds 1,2,3,4,5 --out gauss_sae
"$HUSAI" compare --quiet gauss_sae/seed{1,2,3,4,5} --activations gauss.safetensors --null none --surrogate gaussian \
  --bootstrap 1000 --no-figures --out cmp_gauss

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
expect(doc['schema_version'] == 2, 'schema_version')
dirs = ['wide/seed42', 'wide/seed123', 'wide/seed456', 'wide/seed789']
expect([i['path'] for i in doc['inputs']] == dirs, 'inputs in order')
check_pairs(doc, dirs)
names = ['gaussian', 'untrained', 'covariance', 'second_moment', 'axis_reflection', 'rotation']
expect([g['name'] for g in doc['groups']] == names, 'every null, in the order asked')
geometry = {'second_moment', 'axis_reflection', 'rotation'}
for g in doc['groups']:
    expect(g['geometry_matched'] == (g['name'] in geometry) and g['controls_for'], f"group {g['name']} description")
for name, nj in doc['nulls'].items():
    count = 4 if name == 'axis_reflection' else 10  # at least 10 null seeds; one reflection per trained SAE
    expect(len(nj['dictionaries']) == count, f'{name} null dictionaries')
    expect(len(nj['pairs']) == count * (count - 1) // 2 and len(nj['cross_pairs']) == 4 * count, f'{name} pair counts')
sizes = doc['holm_families']
expect(sizes == {'nulls': 2 * 6}, f'Holm family: 2 tested metrics x 6 nulls, got {sizes}')
for metric in doc['summary_metrics']:
    s = doc['summary'][metric]
    for key in ('mean', 'ci_percentile', 'ci_bca', 'standard_error'):
        expect(key in s['trained'], f'summary {metric} trained {key}')
    expect(s['decision_null'] in geometry, f'{metric} decision null is geometry-matched')
    best = max(geometry, key=lambda n: s['nulls'][n]['mean'])
    expect(s['decision_null'] == best, f'{metric} decision null is the most conservative')
    for name in names:
        ne = s['nulls'][name]
        for key in ('mean', 'ci_bca', 'difference', 'ratio', 'permutation', 'effect_size_seed_level',
                    'reference_comparison', 'verdict', 'verdict_text'):
            expect(key in ne, f'summary {metric} {name} {key}')
        perm = ne['permutation']
        expect(perm['exact'] and 'p_holm' in perm and perm['family'] == 'nulls', f'{metric} {name} exact permutation + Holm')
        tested = metric in doc['tested_metrics']
        expect((ne['verdict'] != 'not_tested') == tested, f'{metric} {name} tested')
        if tested:
            expect(perm['family_size'] == 12, f'{metric} {name} family size')
            want = 'undecidable' if perm['holm_floor'] > 0.05 else 'indistinguishable'
            if perm['p_holm'] <= 0.05:
                want = 'above' if ne['difference']['estimate'] > 0 else 'below'
            expect(ne['verdict'] == want, f'{metric} {name}: verdict {ne["verdict"]} follows the one rule')
# Holm recomputed over every tested (metric, null) p of the study.
ps = [doc['summary'][m]['nulls'][n]['permutation']['p_value_two_sided'] for m in doc['tested_metrics'] for n in names]
order = sorted(range(len(ps)), key=lambda i: ps[i]); adj = [0.0] * len(ps); run = 0.0
for rank, i in enumerate(order):
    run = max(run, min(1.0, (len(ps) - rank) * ps[i])); adj[i] = run
got = [doc['summary'][m]['nulls'][n]['permutation']['p_holm'] for m in doc['tested_metrics'] for n in names]
expect(max(abs(a - b) for a, b in zip(adj, got)) < 1e-12, 'Holm over nulls and metrics')
expect(len(doc['within_nn_cos']) == 4 and all(0 <= v <= 1 for v in doc['within_nn_cos']), 'within-dictionary NN |cos|')
g = doc['summary']['pwmcc']['nulls']['gaussian']
t = doc['summary']['pwmcc']['trained']
print(f"planted data: trained pwmcc {t['mean']:.4f}, gaussian null {g['mean']:.4f}, verdict: {g['verdict_text']}")
expect(t['mean'] > g['mean'] and g['difference']['ci_bca'][0] > 0, 'trained pwmcc above the gaussian null')
for metric in ('pwmcc', 'matched_mean_cos'):
    v = doc['summary'][metric]['nulls']['gaussian']
    expect(v['verdict'] == 'above' and v['verdict_text'].startswith('above the gaussian null'), f'{metric} verdict: {v["verdict_text"]}')
pf = doc['per_feature'][0]['decoder']
expect(pf['n_latents'] == 128 and len(pf['most_stable']) == 10, 'per-feature summary')
expect(pf['most_stable'][0]['stability'] >= pf['least_stable'][0]['stability'], 'most >= least stable')
rows = open('cmp/per_feature.csv').read().splitlines()
expect(rows[0] == 'sae,path,latent,stability,stability_enc' and len(rows) == 1 + 4 * 128, 'per_feature.csv')
rows = open('cmp/pairs.csv').read().splitlines()
expect(len(rows) == 1 + 6 + 5 * (45 + 40) + (6 + 16), 'pairs.csv rows')
man = json.load(open('cmp/manifest.json'))
expect({o['path'] for o in man['outputs']} >= {'stability.json', 'summary.md', 'pairs.csv', 'per_feature.csv'}, 'manifest outputs')
md = open('cmp/summary.md').read()
expect('| above |' in md and '(decision)' in md and 'Verdict rule' in md and 'do not show' in md, 'summary.md verdicts and caveats')
expect('Reference comparison' in md, 'Mann-Whitney and d only in the reference section')

narrow = json.load(open('cmp_narrow/stability.json'))
check_pairs(narrow, ['narrow/seed1', 'narrow/seed2'])
expect(narrow['inputs'][0]['d_sae'] == 16 and narrow['per_feature'][0]['decoder']['n_latents'] == 16, 'd_sae < d_in: 16 latents')
expect([g['name'] for g in narrow['groups']] == ['gaussian', 'untrained', 'second_moment', 'rotation'], 'default nulls without activations')
expect(narrow['summary']['pwmcc']['decision_null'] in ('second_moment', 'rotation'), 'decision null without activations')

for path, want in (('cmp_sur', 'above'), ('cmp_gauss', 'indistinguishable')):
    sd = json.load(open(path + '/stability.json'))
    expect(sd['groups'] == [g for g in sd['groups'] if g['role'] == 'surrogate'] and len(sd['groups']) == 1, f'{path}: surrogate only')
    expect(sd['holm_families'] == {'surrogate': 2}, f'{path}: surrogate family of the two decoder metrics')
    for metric in ('pwmcc', 'matched_mean_cos'):
        sur = sd['surrogate'][metric]
        print(f"{path}: {metric} real {sd['summary'][metric]['trained']['mean']:.4f} surrogate {sur['mean']:.4f} -> {sur['verdict_text']}")
        expect(sur['verdict'] == want, f'{path} {metric}: surrogate verdict {sur["verdict"]}, expected {want}')
    expect(sd['surrogate']['pwmcc_enc']['verdict'] == 'not_tested', f'{path}: encoder metrics are not tested against the surrogate')
print('stability.json checks: ok')
PY

"$HUSAI" synth --quiet --d-in 16 --n-features 32 --active 2 --rows 2000 --seed 2 --out d16.safetensors
"$HUSAI" train-sae --quiet --activations d16.safetensors --architecture topk --k 2 --d-sae 32 --steps 20 --batch-size 128 \
  --seeds 7 --out d16sae
expect_fail one_sae "at least two" bad_one -- "$HUSAI" compare --quiet wide/seed42 --out bad_one
expect_fail d_in "d_in" bad_din -- "$HUSAI" compare --quiet wide/seed42 d16sae/seed7 --out bad_din
expect_fail cov_no_acts "--activations" bad_cov -- "$HUSAI" compare --quiet "${saes[@]}" --null covariance --out bad_cov
expect_fail acts_d_in "columns" bad_acts -- "$HUSAI" compare --quiet "${saes[@]}" --activations d16.safetensors --out bad_acts
expect_fail unknown_null "unknown null" bad_null -- "$HUSAI" compare --quiet "${saes[@]}" --null uniform --out bad_null
expect_fail refl_no_acts "--activations" bad_refl -- "$HUSAI" compare --quiet "${saes[@]}" --null axis_reflection --out bad_refl
expect_fail sur_no_acts "--activations" bad_sur -- "$HUSAI" compare --quiet "${saes[@]}" --surrogate gaussian --out bad_sur
expect_fail sur_unknown "unknown surrogate" bad_sur2 -- "$HUSAI" compare --quiet "${saes[@]}" --activations synth.safetensors \
  --surrogate uniform --out bad_sur2
expect_fail missing "not found" bad_missing -- "$HUSAI" compare --quiet wide/seed42 nowhere --out bad_missing
expect_fail nonempty "not empty" "" -- "$HUSAI" compare --quiet "${saes[@]}" --out cmp
[[ -s cmp/manifest.json ]] || { echo "FAIL: refused run touched cmp" >&2; exit 1; }
expect_fail out_holds_input "must not contain" "" -- "$HUSAI" compare --quiet wide/seed42 wide/seed123 --out wide --overwrite
[[ -s wide/seed42/sae_weights.safetensors ]] || { echo "FAIL: --overwrite removed an input" >&2; exit 1; }
echo "compare: all checks passed"
