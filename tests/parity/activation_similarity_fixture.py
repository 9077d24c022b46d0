#!/usr/bin/python3
"""Writes tests/unit/fixtures/activation_similarity_numpy.json: inputs and NumPy/SciPy reference values for the unit
test ActivationSimilarity.MatchesNumpyFixture (metrics/activation_similarity.hpp).

For a few pairs of latent-activation matrices (sparse non-negative TopK-like ones, dense ones with negative
values, one with a dead and one with a constant column, different latent counts), the reference is computed
independently of husai's sparse formula: np.corrcoef on the dense float64 matrices (columns centred), zero-variance
columns set to correlation 0, |R|, then max-based pwmcc both ways and scipy.optimize.linear_sum_assignment for the
matched mean and shared fractions. Inputs are rounded to float32 first (husai reads them as float).

Run with the Debian interpreter: /usr/bin/python3 tests/parity/activation_similarity_fixture.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

OUT = Path(__file__).resolve().parents[1] / "unit" / "data" / "activation_similarity_numpy.json"


def abs_corr(za: np.ndarray, zb: np.ndarray) -> np.ndarray:
    fa = za.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):  # zero-variance columns: set to 0 below
        r = np.corrcoef(za, zb, rowvar=False)[:fa, fa:]
    dead_a = za.std(axis=0) == 0
    dead_b = zb.std(axis=0) == 0
    r[dead_a, :] = 0.0
    r[:, dead_b] = 0.0
    return np.minimum(np.abs(np.nan_to_num(r)), 1.0)


def summary(za: np.ndarray, zb: np.ndarray) -> dict:
    c = abs_corr(za, zb)
    ab = c.max(axis=1).mean()
    ba = c.max(axis=0).mean()
    rows, cols = linear_sum_assignment(c, maximize=True)
    m = c[rows, cols]
    return {
        "act_pwmcc": 0.5 * (ab + ba),
        "act_pwmcc_ab": ab,
        "act_pwmcc_ba": ba,
        "act_matched_mean_corr": m.mean(),
        "act_shared_frac": [float((m >= t).mean()) for t in (0.5, 0.7, 0.9)],
        "corr_00": float(c[0, 0]),
    }


def topk_like(rng: np.random.Generator, n: int, f: int, k: int) -> np.ndarray:
    z = np.zeros((n, f))
    for r in range(n):
        idx = rng.choice(f, size=k, replace=False)
        z[r, idx] = rng.exponential(2.0, size=k)
    return z


def main() -> None:
    rng = np.random.default_rng(11)
    cases = []
    # TopK-like latents of two SAEs sharing half their latents (b's first 6 = a's latents 0..5 scaled + noise).
    za = topk_like(rng, 80, 12, 3)
    zb = topk_like(rng, 80, 10, 3)
    zb[:, :6] = 1.5 * za[:, :6] + 0.1 * rng.random((80, 6)) * (za[:, :6] > 0)
    za[:, 11] = 0.0  # dead
    zb[:, 9] = 0.75  # constant: zero variance
    cases.append(("topk_like_shared", za, zb))
    # Dense with negative values, correlated through a common factor.
    base = rng.standard_normal((50, 5))
    za = base @ rng.standard_normal((5, 7)) + 0.5 * rng.standard_normal((50, 7))
    zb = base @ rng.standard_normal((5, 9)) + 0.5 * rng.standard_normal((50, 9))
    cases.append(("dense_factor", za, zb))
    # Independent sparse latents (chance level), more latents in a than rows would allow to be independent.
    cases.append(("independent", topk_like(rng, 40, 15, 4), topk_like(rng, 40, 6, 2)))
    out = []
    for name, za, zb in cases:
        za = za.astype(np.float32).astype(np.float64)
        zb = zb.astype(np.float32).astype(np.float64)
        out.append({"name": name, "n_rows": za.shape[0], "za": za.tolist(), "zb": zb.tolist(),
                    "expected": summary(za, zb)})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"generator": "tests/parity/activation_similarity_fixture.py", "cases": out}) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
