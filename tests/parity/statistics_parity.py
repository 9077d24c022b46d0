#!/usr/bin/python3
"""Parity of husai's seed-level statistics (src/husai/metrics/statistics) with SciPy and NumPy.

The script writes fixed inputs (seeded NumPy draws and hand-made edge cases) to a JSON file, runs the husai
dump tool (--dump-bin) on it and checks each answer against an independent computation here:

- bootstrap: the estimate and the first 200 resample statistics against the definition (mean over position
  pairs of the resampled seeds whose seeds differ, from the seeds husai drew); every resample holds two
  distinct seeds; the redraw count; the standard error (numpy.std, ddof 1); the percentile interval
  (numpy.quantile); and the BCa interval, z0 and acceleration from SciPy's own scipy.stats._resampling.
  _bca_interval fed with husai's bootstrap distribution (scipy.stats.bootstrap draws its own resamples, so
  it cannot be compared directly), plus a plain re-implementation of the same formulas for the cases SciPy
  leaves undefined (a group of two seeds has no jackknife).
- permutation test: exact p-values against an enumeration of all labelings with itertools.combinations;
  Monte Carlo p-values within 5 standard errors of that exact p.
- Mann-Whitney U: scipy.stats.mannwhitneyu(x, y, alternative="greater", method="auto") on many inputs
  (ties, small and large samples, the exact/asymptotic boundary), and the method SciPy chooses.
- Cohen's d (NumPy), Holm (a NumPy transcription of statsmodels' multipletests "holm"), numpy.quantile,
  scipy.special.ndtr / ndtri.

Deterministic formulas must agree to 1e-12 relative. --self-test runs the checker on a perturbed value
(1e-10 relative), which must fail: proof that the comparison can fail.

Run with the Debian interpreter (/usr/bin/python3), which has NumPy and SciPy (1.10 on bookworm).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import special, stats
from scipy.stats import _mannwhitneyu, _resampling

REL_TOL = 1e-12
ABS_FLOOR = 1e-300


class Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.worst = 0.0
        self.n_checks = 0

    def close(self, name: str, got: object, want: float, rel_tol: float = REL_TOL, abs_tol: float = 0.0) -> None:
        self.n_checks += 1
        g = decode(got)
        if math.isnan(want) or math.isinf(want) or math.isnan(g) or math.isinf(g):
            if not (g == want or (math.isnan(g) and math.isnan(want))):
                self.errors.append(f"{name}: husai {g!r} vs reference {want!r}")
            return
        diff = abs(g - want)
        rel = diff / max(abs(want), ABS_FLOOR)
        if diff > abs_tol:
            self.worst = max(self.worst, rel)
        if diff > abs_tol and rel > rel_tol:
            self.errors.append(f"{name}: husai {g!r} vs reference {want!r} (rel {rel:.2e})")

    def true(self, name: str, ok: bool, detail: str = "") -> None:
        self.n_checks += 1
        if not ok:
            self.errors.append(f"{name}: {detail or 'failed'}")


def decode(v: object) -> float:
    if isinstance(v, str):
        return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[v]
    return float(v)  # type: ignore[arg-type]


def encode(v: float) -> object:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


# ----- inputs -------------------------------------------------------------------------------------------------


def random_sim(rng: np.random.Generator, n: int, centre: float, spread: float) -> np.ndarray:
    """A symmetric similarity matrix with seed effects (some seeds agree with everyone more than others)."""
    seed_effect = rng.normal(scale=spread, size=n)
    s = centre + seed_effect[:, None] + seed_effect[None, :] + rng.normal(scale=spread / 2, size=(n, n))
    s = (s + s.T) / 2
    np.fill_diagonal(s, 1.0)
    return np.clip(s, -1, 1)


def pooled_sim(rng: np.random.Generator, n_a: int, n_b: int, gap: float) -> np.ndarray:
    n = n_a + n_b
    s = 0.3 + rng.normal(scale=0.05, size=(n, n))
    s[:n_a, :n_a] += gap
    s = (s + s.T) / 2
    np.fill_diagonal(s, 1.0)
    return s


def make_inputs() -> dict:
    rng = np.random.default_rng(20250107)
    inp: dict = {}

    boot = []
    for n, b, conf, seed in [(2, 2000, 0.95, 1), (3, 4000, 0.95, 2), (5, 10000, 0.95, 3), (7, 5000, 0.9, 4),
                             (10, 10000, 0.95, 5)]:
        boot.append({"sim": random_sim(rng, n, 0.6, 0.08).tolist(), "n_resamples": b, "confidence": conf,
                     "seed": seed})
    # One outlying seed: a skewed bootstrap distribution, so z0 and the acceleration matter.
    s = random_sim(rng, 6, 0.8, 0.02)
    s[0, 1:] = s[1:, 0] = 0.2
    boot.append({"sim": s.tolist(), "n_resamples": 10000, "confidence": 0.95, "seed": 6})
    inp["bootstrap"] = boot

    diff = []
    for na, nb, seed in [(5, 5, 11), (3, 4, 12), (10, 5, 13), (2, 5, 14)]:
        diff.append({"a": random_sim(rng, na, 0.7, 0.05).tolist(), "b": random_sim(rng, nb, 0.3, 0.05).tolist(),
                     "n_resamples": 5000, "confidence": 0.95, "seed": seed})
    inp["bootstrap_difference"] = diff

    perm = []
    # Hand-sized: the observed labeling ties (mathematically, not in floating point) with another one.
    tie = np.ones((4, 4))
    tie[0, 1] = tie[1, 0] = 0.3
    tie[2, 3] = tie[3, 2] = 0.1
    tie[0, 2] = tie[2, 0] = 0.7
    tie[1, 3] = tie[3, 1] = 0.5
    tie[0, 3] = tie[3, 0] = 0.05
    tie[1, 2] = tie[2, 1] = 0.6
    perm.append({"pooled": tie.tolist(), "n_a": 2, "n_resamples": 0, "seed": 0, "max_exact": 100000})
    for na, nb, gap, seed in [(3, 3, 0.05, 21), (5, 5, 0.1, 22), (4, 6, 0.02, 23), (5, 5, -0.03, 24)]:
        perm.append({"pooled": pooled_sim(rng, na, nb, gap).tolist(), "n_a": na, "n_resamples": 0, "seed": seed,
                     "max_exact": 100000})
    # Monte Carlo: forced on a small case (252 labelings), and the default on 10 + 10 (184,756 > 100,000).
    perm.append({"pooled": pooled_sim(rng, 5, 5, 0.02).tolist(), "n_a": 5, "n_resamples": 20000, "seed": 25,
                 "max_exact": 0})
    perm.append({"pooled": pooled_sim(rng, 10, 10, 0.01).tolist(), "n_a": 10, "n_resamples": 20000, "seed": 26,
                 "max_exact": 100000})
    inp["permutation"] = perm

    mw = []
    sizes = [(1, 1), (1, 5), (3, 4), (4, 3), (7, 7), (8, 8), (8, 9), (9, 8), (9, 9), (8, 40), (3, 60), (2, 100),
             (10, 10), (10, 45), (45, 45), (100, 30)]
    for n1, n2 in sizes:
        for shift in (0.0, 0.8):
            x = rng.normal(loc=shift, size=n1)
            y = rng.normal(size=n2)
            mw.append({"x": x.tolist(), "y": y.tolist()})
            # Ties: values rounded to one decimal.
            mw.append({"x": np.round(x, 1).tolist(), "y": np.round(y, 1).tolist()})
    mw.append({"x": [3.0, 4.0, 5.0], "y": [1.0, 2.0]})  # U = 6, p = 1/10
    mw.append({"x": [1.0, 2.0], "y": [3.0, 4.0, 5.0]})  # U = 0, p = 1
    mw.append({"x": [2.0, 2.0, 2.0], "y": [2.0, 2.0]})  # all tied: sd 0
    mw.append({"x": list(range(20, 30)), "y": list(range(0, 10))})  # complete separation, asymptotic
    mw.append({"x": list(range(10, 18)), "y": list(range(0, 8))})  # complete separation, exact 1 / C(16, 8)
    inp["mann_whitney"] = mw

    cd = [{"x": rng.normal(0.5, 1, 5).tolist(), "y": rng.normal(0, 2, 7).tolist()},
          {"x": rng.normal(0.9, 0.1, 45).tolist(), "y": rng.normal(0.3, 0.1, 45).tolist()},
          {"x": [2.0, 4.0], "y": [1.0, 1.0, 1.0]},
          {"x": [1.0, 1.0], "y": [0.0, 0.0]},
          {"x": [1.0, 1.0], "y": [1.0, 1.0]},
          {"x": [1.0], "y": [2.0]},
          {"x": [], "y": [2.0, 3.0]}]
    inp["cohens_d"] = cd

    holm = [[0.01, 0.04, 0.03, 0.005], [0.5, 0.6], rng.uniform(size=12).tolist(),
            (rng.uniform(size=6) * 0.05).tolist(), [0.02, 0.02, 0.01, 0.2], [0.01, "nan", 0.02], [0.0, 1.0]]
    inp["holm"] = holm

    inp["quantile"] = [
        {"values": [1.0, 2.0, 3.0, 4.0], "q": [0.0, 0.1, 0.5, 0.9, 1.0]},
        {"values": rng.normal(size=10000).tolist(), "q": [0.0, 0.025, 0.05, 0.5, 0.95, 0.975, 1.0, 1e-9]},
        {"values": rng.normal(size=7).tolist(), "q": [0.025, 0.3333333333333333, 0.975]},
        {"values": [5.0], "q": [0.0, 0.4, 1.0]},
    ]
    inp["normal_cdf"] = [-40.0, -8.0, -1.959963984540054, -0.5, 0.0, 1e-3, 0.7, 3.0, 8.0, "inf", "-inf"]
    inp["normal_quantile"] = [0.0, 1e-300, 1e-10, 0.0012, 0.025, 0.3, 0.5, 0.8, 0.975, 1 - 1e-10, 1.0]
    return inp


# ----- references ---------------------------------------------------------------------------------------------


def definitional_mean(sim: np.ndarray, seeds: list[int]) -> float:
    """Mean over position pairs p < q of the resample whose seeds differ (the definition, no shortcuts)."""
    vals = [sim[seeds[p], seeds[q]] for p in range(len(seeds)) for q in range(p + 1, len(seeds))
            if seeds[p] != seeds[q]]
    return float(np.mean(vals))


def counted_mean(sim: np.ndarray, idx: np.ndarray) -> float:
    """The same statistic summed in husai's order (seed pairs i < j weighted by multiplicities), so that the
    estimate is bit-identical to husai's and exact ties with it count as ties (they enter z0)."""
    n = sim.shape[0]
    w = np.bincount(idx, minlength=n).astype(float)
    num = den = 0.0
    for i in range(n):
        if w[i] == 0:
            continue
        for j in range(i + 1, n):
            if w[j] == 0:
                continue
            num += w[i] * w[j] * sim[i, j]
            den += w[i] * w[j]
    return num / den if den > 0 else math.nan


def vectorised(f):
    def stat(idx, axis=-1):
        idx = np.asarray(idx)
        flat = idx.reshape(-1, idx.shape[-1])
        return np.array([f(row) for row in flat]).reshape(idx.shape[:-1])
    return stat


def two_vectorised(fa, fb):
    """A two-sample statistic for SciPy: its samples share leading (batch) dimensions, each has its own last."""
    def stat(ia, ib, axis=-1):
        ia, ib = np.asarray(ia), np.asarray(ib)
        va = np.array([fa(r) for r in ia.reshape(-1, ia.shape[-1])]).reshape(ia.shape[:-1])
        vb = np.array([fb(r) for r in ib.reshape(-1, ib.shape[-1])]).reshape(ib.shape[:-1])
        return va - vb
    return stat


def bca_plain(theta_b: np.ndarray, theta_hat: float, jack_groups: list[np.ndarray], alpha: float):
    """scipy's _bca_interval formulas, with groups lacking a jackknife left out and an infinite z0 taken to
    its limit (husai's documented choices where SciPy returns NaN)."""
    B = theta_b.size
    z0 = special.ndtri(((theta_b < theta_hat).sum() + (theta_b <= theta_hat).sum()) / (2 * B))
    num = den = 0.0
    for jack in jack_groups:
        if jack.size == 0:
            continue
        n = jack.size
        u = (n - 1) * (jack.mean() - jack)
        num += (u**3).sum() / n**3
        den += (u**2).sum() / n**2
    a = num / den**1.5 / 6 if den > 0 else 0.0

    def level(z):
        if math.isinf(z0):
            return 0.0 if z0 < 0 else 1.0
        return special.ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))

    za = special.ndtri(alpha)
    a1, a2 = level(za), level(-za)
    return z0, a, (np.percentile(theta_b, a1 * 100), np.percentile(theta_b, a2 * 100))


def jackknife_values(sim: np.ndarray) -> np.ndarray:
    n = sim.shape[0]
    if n < 3:
        return np.array([])
    out = []
    for i in range(n):
        keep = [j for j in range(n) if j != i]
        sub = sim[np.ix_(keep, keep)]
        out.append(sub[np.triu_indices(n - 1, 1)].mean())
    return np.array(out)


def upper_mean(sim: np.ndarray) -> float:
    return float(sim[np.triu_indices(sim.shape[0], 1)].mean())


def check_bootstrap_common(ck: Checker, name: str, got: dict, sims: list[np.ndarray], case: dict) -> np.ndarray:
    theta_b = np.array(got["statistics"], dtype=float)
    B = case["n_resamples"]
    ck.true(f"{name}.n_resamples", got["n_resamples"] == B and theta_b.size == B)
    ck.true(f"{name}.n_redrawn", got["n_redrawn"] == got["n_redrawn_recounted"],
            f"{got['n_redrawn']} vs {got['n_redrawn_recounted']} recounted from the resamples")
    # The first resamples: two distinct seeds each, statistic = the definition on the seeds drawn.
    for b in range(len(got["resample_seeds"][0])):
        want = 0.0
        for g, sim in enumerate(sims):
            seeds = got["resample_seeds"][g][b]
            ck.true(f"{name}.resample[{b}].group{g}", len(seeds) == sim.shape[0] and len(set(seeds)) >= 2,
                    f"seeds {seeds}")
            want += (1 if g == 0 else -1) * definitional_mean(sim, seeds)
        ck.close(f"{name}.statistics[{b}]", theta_b[b], want)
    ck.close(f"{name}.standard_error", got["standard_error"], float(np.std(theta_b, ddof=1)))
    alpha = (1 - case["confidence"]) / 2
    lo, hi = np.quantile(theta_b, [alpha, 1 - alpha])
    ck.close(f"{name}.percentile.lo", got["percentile"][0], lo)
    ck.close(f"{name}.percentile.hi", got["percentile"][1], hi)
    return theta_b


def check_bootstrap(ck: Checker, i: int, case: dict, got: dict) -> None:
    name = f"bootstrap[{i}]"
    sim = np.array(case["sim"])
    n = sim.shape[0]
    theta_b = check_bootstrap_common(ck, name, got, [sim], case)
    ck.true(f"{name}.plain_matches_detail", got["plain_matches_detail"])
    ck.close(f"{name}.estimate", got["estimate"], upper_mean(sim))
    ck.close(f"{name}.mean_pairwise", got["mean_pairwise"], upper_mean(sim))
    for b, (seeds, v) in enumerate(zip(got["resample_seeds"][0], got["mean_pairwise_resample"])):
        ck.close(f"{name}.mean_pairwise_resample[{b}]", v, definitional_mean(sim, seeds))
    theta_hat = counted_mean(sim, np.arange(n))
    ck.true(f"{name}.estimate_bits", got["estimate"] == theta_hat, f"{got['estimate']!r} vs {theta_hat!r}")
    ck.true(f"{name}.jackknife_size", len(got["jackknife"]) == (n if n >= 3 else 0))
    for j, (g, w) in enumerate(zip(got["jackknife"], jackknife_values(sim))):
        ck.close(f"{name}.jackknife[{j}]", g, w)
    alpha = (1 - case["confidence"]) / 2
    if n == 2:
        # One pair: every resample is that pair, the interval is one value.
        est = got["estimate"]
        ck.true(f"{name}.degenerate", got["percentile"] == [est, est] and got["bca"] == [est, est],
                f"{got['percentile']} {got['bca']} vs {est}")
        return
    stat = vectorised(lambda row: counted_mean(sim, row))
    a1, a2, a_hat = _resampling._bca_interval((np.arange(n),), stat, axis=-1, alpha=alpha, theta_hat_b=theta_b,
                                              batch=None)
    ck.close(f"{name}.acceleration", got["acceleration"], float(a_hat), abs_tol=1e-15)
    z0 = special.ndtri(_resampling._percentile_of_score(theta_b, theta_hat, axis=-1))
    ck.close(f"{name}.z0", got["z0"], float(z0), abs_tol=1e-15)
    ck.close(f"{name}.bca.lo", got["bca"][0], float(_resampling._percentile_along_axis(theta_b, a1 * 100)))
    ck.close(f"{name}.bca.hi", got["bca"][1], float(_resampling._percentile_along_axis(theta_b, a2 * 100)))


def check_bootstrap_difference(ck: Checker, i: int, case: dict, got: dict) -> None:
    name = f"bootstrap_difference[{i}]"
    a, b = np.array(case["a"]), np.array(case["b"])
    theta_b = check_bootstrap_common(ck, name, got, [a, b], case)
    ck.close(f"{name}.estimate", got["estimate"], upper_mean(a) - upper_mean(b))
    jack_a = jackknife_values(a) - upper_mean(b)
    jack_b = upper_mean(a) - jackknife_values(b)
    for j, (g, w) in enumerate(zip(got["jackknife"], np.concatenate([jack_a, jack_b]))):
        ck.close(f"{name}.jackknife[{j}]", g, w)
    ck.true(f"{name}.jackknife_size", len(got["jackknife"]) == jack_a.size + jack_b.size)
    alpha = (1 - case["confidence"]) / 2
    theta_hat = counted_mean(a, np.arange(a.shape[0])) - counted_mean(b, np.arange(b.shape[0]))
    if a.shape[0] >= 3 and b.shape[0] >= 3:
        stat = two_vectorised(lambda r: counted_mean(a, r), lambda r: counted_mean(b, r))
        a1, a2, a_hat = _resampling._bca_interval((np.arange(a.shape[0]), np.arange(b.shape[0])), stat, axis=-1,
                                                  alpha=alpha, theta_hat_b=theta_b, batch=None)
        lo = float(_resampling._percentile_along_axis(theta_b, a1 * 100))
        hi = float(_resampling._percentile_along_axis(theta_b, a2 * 100))
    else:
        _, a_hat, (lo, hi) = bca_plain(theta_b, theta_hat, [jack_a, jack_b], alpha)
    z0 = special.ndtri(_resampling._percentile_of_score(theta_b, theta_hat, axis=-1))
    ck.close(f"{name}.acceleration", got["acceleration"], float(a_hat), abs_tol=1e-15)
    ck.close(f"{name}.z0", got["z0"], float(z0), abs_tol=1e-15)
    ck.close(f"{name}.bca.lo", got["bca"][0], lo)
    ck.close(f"{name}.bca.hi", got["bca"][1], hi)
    # The plain re-implementation agrees with SciPy where both are defined (a check of this script).
    _, _, (plo, phi) = bca_plain(theta_b, theta_hat, [jack_a, jack_b], alpha)
    ck.close(f"{name}.bca_plain.lo", plo, lo, rel_tol=1e-10)
    ck.close(f"{name}.bca_plain.hi", phi, hi, rel_tol=1e-10)


def enumerate_permutation(sim: np.ndarray, n_a: int):
    """All labelings: statistic = mean within A - mean within B, observed = the first n_a."""
    n = sim.shape[0]
    s = sim.copy()
    np.fill_diagonal(s, 0.0)
    combos = np.array(list(itertools.combinations(range(n), n_a)))
    mask = np.zeros((len(combos), n))
    mask[np.arange(len(combos))[:, None], combos] = 1.0
    other = 1.0 - mask
    within_a = np.einsum("ki,ij,kj->k", mask, s, mask) / 2
    within_b = np.einsum("ki,ij,kj->k", other, s, other) / 2
    n_b = n - n_a
    stats_ = within_a / (n_a * (n_a - 1) / 2) - within_b / (n_b * (n_b - 1) / 2)
    observed = upper_mean(sim[:n_a, :n_a]) - upper_mean(sim[n_a:, n_a:])
    scale = max(abs(observed), float(np.max(np.abs(s))))
    tol = 1e-12 * scale
    p1 = float(np.mean(stats_ >= observed - tol))
    p2 = float(np.mean(np.abs(stats_) >= abs(observed) - tol))
    return observed, p1, p2, len(combos)


def check_permutation(ck: Checker, i: int, case: dict, got: dict) -> None:
    name = f"permutation[{i}]"
    sim = np.array(case["pooled"])
    observed, p1, p2, count = enumerate_permutation(sim, case["n_a"])
    ck.close(f"{name}.observed", got["observed"], observed)
    if count <= case["max_exact"]:
        ck.true(f"{name}.exact", got["exact"] and got["n_permutations"] == count)
        ck.close(f"{name}.p_value", got["p_value"], p1)
        ck.close(f"{name}.p_value_two_sided", got["p_value_two_sided"], p2)
        return
    r = case["n_resamples"]
    ck.true(f"{name}.monte_carlo", not got["exact"] and got["n_permutations"] == r + 1)
    for key, p in (("p_value", p1), ("p_value_two_sided", p2)):
        bound = 5 * math.sqrt(p * (1 - p) / r) + 2 / r
        ck.true(f"{name}.{key}", abs(got[key] - p) <= bound, f"Monte Carlo {got[key]} vs exact {p} (bound {bound})")


def holm_reference(p: list) -> list[float]:
    """statsmodels.stats.multitest.multipletests(method="holm"), transcribed; NaN entries left out."""
    vals = np.array([decode(v) for v in p])
    out = np.full(vals.size, math.nan)
    keep = np.flatnonzero(~np.isnan(vals))
    pv = vals[keep]
    order = np.argsort(pv)
    ntests = pv.size
    raw = pv[order] * np.arange(ntests, 0, -1)
    corrected = np.maximum.accumulate(raw)
    corrected[corrected > 1] = 1
    back = np.empty_like(corrected)
    back[order] = corrected
    out[keep] = back
    return out.tolist()


def cohens_d_reference(x: list, y: list) -> float:
    x, y = np.array(x, dtype=float), np.array(y, dtype=float)
    nx, ny = x.size, y.size
    if nx == 0 or ny == 0 or nx + ny < 3:
        return math.nan
    vx = x.var(ddof=1) if nx > 1 else 0.0
    vy = y.var(ddof=1) if ny > 1 else 0.0
    pooled = math.sqrt(((nx - 1) * vx + (ny - 1) * vy) / (nx + ny - 2))
    diff = x.mean() - y.mean()
    if pooled == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / pooled


def check_all(inp: dict, out: dict) -> Checker:
    ck = Checker()
    for i, (case, got) in enumerate(zip(inp["bootstrap"], out["bootstrap"])):
        check_bootstrap(ck, i, case, got)
    for i, (case, got) in enumerate(zip(inp["bootstrap_difference"], out["bootstrap_difference"])):
        check_bootstrap_difference(ck, i, case, got)
    for i, (case, got) in enumerate(zip(inp["permutation"], out["permutation"])):
        check_permutation(ck, i, case, got)
    for i, (case, got) in enumerate(zip(inp["mann_whitney"], out["mann_whitney"])):
        x, y = np.array(case["x"], dtype=float), np.array(case["y"], dtype=float)
        want = stats.mannwhitneyu(x, y, alternative="greater", method="auto")
        method = _mannwhitneyu._mwu_choose_method(x.size, y.size, np.concatenate([x, y]), "auto")
        ck.true(f"mann_whitney[{i}].u", got["u"] == float(want.statistic), f"{got['u']} vs {want.statistic}")
        ck.true(f"mann_whitney[{i}].method", got["method"] == method, f"{got['method']} vs {method}")
        ck.close(f"mann_whitney[{i}].p_value", got["p_value"], float(want.pvalue))
    for i, (case, got) in enumerate(zip(inp["cohens_d"], out["cohens_d"])):
        ck.close(f"cohens_d[{i}]", got, cohens_d_reference(case["x"], case["y"]))
    for i, (case, got) in enumerate(zip(inp["holm"], out["holm"])):
        want = holm_reference(case)
        ck.true(f"holm[{i}].size", len(got) == len(want))
        for j, (g, w) in enumerate(zip(got, want)):
            ck.close(f"holm[{i}][{j}]", g, w)
    for i, (case, got) in enumerate(zip(inp["quantile"], out["quantile"])):
        for q, g in zip(case["q"], got):
            ck.close(f"quantile[{i}]({q})", g, float(np.quantile(np.array(case["values"]), q)))
    for z, g in zip(inp["normal_cdf"], out["normal_cdf"]):
        ck.close(f"normal_cdf({z})", g, float(special.ndtr(decode(z))))
    for p, g in zip(inp["normal_quantile"], out["normal_quantile"]):
        ck.close(f"normal_quantile({p})", g, float(special.ndtri(p)))
    for key in inp:
        ck.true(f"{key}.count", len(inp[key]) == len(out.get(key, [])), "husai answered a different number of cases")
    return ck


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump-bin", type=Path)
    ap.add_argument("--work", type=Path, default=Path("statistics-parity"))
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    if args.self_test:
        clean, bad = Checker(), Checker()
        clean.close("self", 0.123456789, 0.123456789)
        bad.close("self-perturbed", 0.123456789 * (1 + 1e-10), 0.123456789)
        ok = not clean.errors and len(bad.errors) == 1
        print("self-test:", "ok" if ok else f"FAILED (clean {clean.errors}, perturbed {bad.errors})")
        return 0 if ok else 1

    if args.dump_bin is None:
        ap.error("--dump-bin is required (or --self-test)")
    inp = make_inputs()
    in_path, out_path = args.work / "inputs.json", args.work / "husai.json"
    in_path.write_text(json.dumps(inp))
    subprocess.run([str(args.dump_bin), str(in_path), str(out_path)], check=True)
    out = json.loads(out_path.read_text())
    ck = check_all(inp, out)
    for e in ck.errors[:50]:
        print("FAIL", e)
    print(f"statistics parity: {ck.n_checks} checks, worst relative difference {ck.worst:.2e}")
    print("statistics parity:", "ok" if not ck.errors else f"{len(ck.errors)} failure(s)")
    return 0 if not ck.errors else 1


if __name__ == "__main__":
    sys.exit(main())
