#!/usr/bin/python3
"""Parity of husai's linear assignment and stability metrics with SciPy/NumPy.

Linear assignment: for random and adversarial cost matrices (uniform, |cos| of random dictionaries, integer
ties, constant, huge and tiny scales, negative values, very rectangular both ways, forbidden +inf entries,
an infeasible matrix) husai's optimal totals, minimised and maximised, must equal
scipy.optimize.linear_sum_assignment's to 1e-12 relative (both sum the same doubles; only the order
differs), and both must refuse the same matrices.

Stability: for several dictionaries (random, planted-overlap, different sizes) every pairwise metric
(pwmcc, pwmcc_ab, pwmcc_ba, matched_mean_cos, shared_frac_05/07/09) and the per-feature stability must match
a NumPy float64 computation to 2e-5 absolute (husai's |cos| matrix is a float GEMM). The shared fractions
are counts over matched pairs; a pair within 1e-5 of a threshold could legitimately fall either way, so
those cases are reported and skipped rather than failed.

--self-test proves the checker can fail: a perturbed total and a perturbed metric must be reported.
Run with the Debian interpreter (/usr/bin/python3).
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

LAP_REL_TOL = 1e-12
METRIC_ABS_TOL = 2e-5
METRICS = ["pwmcc", "pwmcc_ab", "pwmcc_ba", "matched_mean_cos", "shared_frac_05", "shared_frac_07", "shared_frac_09"]
THRESHOLDS = {"shared_frac_05": 0.5, "shared_frac_07": 0.7, "shared_frac_09": 0.9}


def save_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Minimal safetensors writer (F64 for cost matrices, F32 for dictionaries), tensors in name order."""
    header: dict[str, object] = {}
    blobs = []
    offset = 0
    for name in sorted(arrays):
        a = arrays[name]
        dtype, code = ("<f8", "F64") if a.dtype == np.float64 else ("<f4", "F32")
        data = np.ascontiguousarray(a, dtype=dtype).tobytes()
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def unit_rows(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, n, out=np.zeros_like(a), where=n > 0)


def lap_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4242)
    out: dict[str, np.ndarray] = {}
    out["uniform_300"] = rng.random((300, 300))
    out["uniform_rect_120x400"] = rng.random((120, 400))
    out["uniform_rect_400x120"] = rng.random((400, 120))
    out["normal_neg_250"] = rng.normal(size=(250, 250)) - 3.0
    a, b = unit_rows(rng.normal(size=(1024, 128))), unit_rows(rng.normal(size=(1024, 128)))
    out["abscos_1024"] = np.abs(a @ b.T)
    out["abscos_rect_200x700"] = np.abs(unit_rows(rng.normal(size=(200, 64))) @ unit_rows(rng.normal(size=(700, 64))).T)
    out["ties_int3_200"] = rng.integers(0, 3, size=(200, 200)).astype(np.float64)
    out["ties_int2_rect_60x150"] = rng.integers(0, 2, size=(60, 150)).astype(np.float64)
    out["constant_128"] = np.full((128, 128), 0.37)
    out["constant_rect_5x40"] = np.full((5, 40), -2.0)
    out["huge_1e12_200"] = rng.random((200, 200)) * 1e12
    out["huge_mixed_100"] = np.where(rng.random((100, 100)) < 0.05, 1e15, rng.random((100, 100)))
    out["tiny_1e-12_150"] = rng.random((150, 150)) * 1e-12
    out["single_row_1x50"] = rng.random((1, 50))
    out["single_col_50x1"] = rng.random((50, 1))
    out["one_by_one"] = np.array([[3.5]])
    # Planted permutation plus noise: the optimum is the permutation.
    p = rng.permutation(500)
    m = 0.5 * rng.random((500, 500))
    m[np.arange(500), p] = 1.0
    out["planted_perm_500"] = m
    # Forbidden pairs: +inf entries with a feasible matching (only used when minimising).
    f = rng.random((80, 80))
    f[rng.random((80, 80)) < 0.5] = np.inf
    np.fill_diagonal(f, rng.random(80))
    out["forbidden_min_80"] = f
    out["infeasible_min_3"] = np.array([[1.0, np.inf, np.inf], [2.0, np.inf, np.inf], [1.0, 2.0, 3.0]])
    return out


def scipy_total(c: np.ndarray, maximize: bool) -> object:
    try:
        r, k = linear_sum_assignment(c, maximize=maximize)
    except ValueError as e:
        return {"error": str(e)}
    return float(c[r, k].sum())


def numpy_stability(dicts: list[np.ndarray]) -> tuple[list[dict], list[list[float]]]:
    units = [unit_rows(d) for d in dicts]
    pairs = []
    best: dict[tuple[int, int], np.ndarray] = {}
    for i in range(len(units)):
        for j in range(i + 1, len(units)):
            c = np.abs(units[i] @ units[j].T)
            ab, ba = c.max(axis=1), c.max(axis=0)
            best[(i, j)], best[(j, i)] = ab, ba
            r, k = linear_sum_assignment(c, maximize=True)
            matched = c[r, k]
            row = {"a": i, "b": j, "pwmcc_ab": float(ab.mean()), "pwmcc_ba": float(ba.mean())}
            row["pwmcc"] = 0.5 * (row["pwmcc_ab"] + row["pwmcc_ba"])
            row["matched_mean_cos"] = float(matched.mean())
            for key, t in THRESHOLDS.items():
                row[key] = float(np.mean(matched >= t))
                row["_near_" + key] = bool(np.any(np.abs(matched - t) < 1e-5))
            pairs.append(row)
    per_feature = [
        list(np.mean([best[(i, j)] for j in range(len(units)) if j != i], axis=0)) for i in range(len(units))
    ]
    return pairs, per_feature


def dict_cases() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(99)
    out = {}
    out["gaussian_3x256x32"] = [rng.normal(size=(256, 32)).astype(np.float32) for _ in range(3)]
    # Planted overlap: each dictionary shares 60% of its features (noisy, sign-flipped, scaled) with a base.
    base = rng.normal(size=(300, 48))
    planted = []
    for s in range(4):
        d = rng.normal(size=(300, 48))
        keep = rng.random(300) < 0.6
        d[keep] = base[keep] * rng.choice([-2.0, 0.5], size=(keep.sum(), 1)) + 0.1 * rng.normal(size=(keep.sum(), 48))
        planted.append(d[rng.permutation(300)].astype(np.float32))
    out["planted_4x300x48"] = planted
    # Fewer features than dimensions (d_sae < d_in) and different sizes per dictionary.
    out["narrow_mixed_sizes"] = [
        rng.normal(size=(16, 64)).astype(np.float32),
        rng.normal(size=(40, 64)).astype(np.float32),
        rng.normal(size=(24, 64)).astype(np.float32),
    ]
    # Above 4,096^2 pairs husai compares blockwise with a certified sparse matching (metrics/large_matching.hpp):
    # a half-shared pair, and crowded low-dimensional atoms whose first candidate graph is not optimal.
    a = rng.normal(size=(4608, 64))
    b = rng.normal(size=(5000, 64))
    b[:2304] = a[:2304] + 0.3 * rng.normal(size=(2304, 64))
    out["large_half_shared_4608x5000"] = [a.astype(np.float32), b[rng.permutation(5000)].astype(np.float32)]
    out["large_crowded_4200x8"] = [rng.normal(size=(4200, 8)).astype(np.float32) for _ in range(2)]
    # More features in the first dictionary: husai matches the other way round and maps the result back.
    out["large_reversed_5000x4608"] = out["large_half_shared_4608x5000"][::-1]
    return out


def compare_lap(name: str, got: dict, want_min: object, want_max: object) -> list[str]:
    errors = []
    for kind, want in (("min", want_min), ("max", want_max)):
        g = got[kind]
        if isinstance(want, dict) or isinstance(g, dict):
            if isinstance(want, dict) != isinstance(g, dict):
                errors.append(f"lap {name} {kind}: husai {g} vs SciPy {want}")
            continue
        rel = abs(g - want) / max(abs(want), 1e-300)
        if rel > LAP_REL_TOL and abs(g - want) > 1e-300:
            errors.append(f"lap {name} {kind}: husai {g!r} vs SciPy {want!r} (rel {rel:.2e})")
    return errors


def compare_pairs(name: str, got: dict, want_pairs: list[dict], want_pf: list[list[float]]) -> list[str]:
    errors = []
    worst = 0.0
    if len(got["pairs"]) != len(want_pairs):
        return [f"{name}: {len(got['pairs'])} pairs vs {len(want_pairs)}"]
    for g, w in zip(got["pairs"], want_pairs):
        if (g["a"], g["b"]) != (w["a"], w["b"]):
            errors.append(f"{name}: pair order {(g['a'], g['b'])} vs {(w['a'], w['b'])}")
        for key in METRICS:
            if w.get("_near_" + key):
                print(f"  {name} ({w['a']},{w['b']}) {key}: a matched |cos| within 1e-5 of the threshold, skipped")
                continue
            diff = abs(g[key] - w[key])
            worst = max(worst, diff)
            if diff > METRIC_ABS_TOL:
                errors.append(f"{name} ({w['a']},{w['b']}) {key}: husai {g[key]!r} vs NumPy {w[key]!r}")
    for i, (g, w) in enumerate(zip(got["per_feature"], want_pf)):
        diff = float(np.max(np.abs(np.asarray(g) - np.asarray(w))))
        worst = max(worst, diff)
        if diff > METRIC_ABS_TOL:
            errors.append(f"{name} per_feature[{i}]: max difference {diff:.2e}")
    print(f"  {name}: worst absolute difference {worst:.2e}")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump-bin", type=Path)
    ap.add_argument("--work", type=Path, default=Path("stability-parity"))
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    if args.self_test:
        c = lap_cases()["uniform_300"]
        lo, hi = scipy_total(c, False), scipy_total(c, True)
        clean = compare_lap("self", {"min": lo, "max": hi}, lo, hi)
        bad = compare_lap("self", {"min": lo * (1 + 1e-10), "max": hi}, lo, hi)
        dicts = dict_cases()["gaussian_3x256x32"]
        pairs, pf = numpy_stability(dicts)
        got = {"pairs": [dict(p) for p in pairs], "per_feature": pf}
        clean += compare_pairs("self", got, pairs, pf)
        got["pairs"][1]["matched_mean_cos"] += 1e-4
        bad += compare_pairs("self-perturbed", got, pairs, pf)
        ok = not clean and len(bad) == 2
        print("self-test:", "ok" if ok else f"FAILED (clean {clean}, perturbed {bad})")
        return 0 if ok else 1

    if args.dump_bin is None:
        ap.error("--dump-bin is required (or --self-test)")
    errors: list[str] = []
    laps = lap_cases()
    path, out = args.work / "lap.safetensors", args.work / "lap.json"
    save_safetensors(path, {f"lap.{k}": v for k, v in laps.items()})
    t0 = time.perf_counter()
    subprocess.run([str(args.dump_bin), str(path), str(out)], check=True)
    t1 = time.perf_counter()
    got = json.loads(out.read_text())["lap"]
    t2 = time.perf_counter()
    want = {k: (scipy_total(v, False), scipy_total(v, True)) for k, v in laps.items()}
    t3 = time.perf_counter()
    for k in laps:
        errors += compare_lap(k, got[k], *want[k])
    print(f"  {len(laps)} assignment matrices, min and max: husai {t1 - t0:.2f} s (with I/O), SciPy {t3 - t2:.2f} s")

    for name, dicts in dict_cases().items():
        path, out = args.work / f"{name}.safetensors", args.work / f"{name}.json"
        save_safetensors(path, {f"dict.{k}": d for k, d in enumerate(dicts)})
        subprocess.run([str(args.dump_bin), str(path), str(out)], check=True)
        pairs, pf = numpy_stability(dicts)
        errors += compare_pairs(name, json.loads(out.read_text()), pairs, pf)
    for e in errors:
        print("FAIL", e)
    print("stability parity:", "ok" if not errors else f"{len(errors)} failure(s)")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
