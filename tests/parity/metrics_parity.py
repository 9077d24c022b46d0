#!/usr/bin/python3
"""Parity of husai's reconstruction metrics with an independent NumPy/SciPy implementation.

For each fixed case (seeded NumPy arrays: a tiny hand-sized one, random data with a large mean, zero rows,
a dead latent and a dense latent, a wide dictionary) this script writes x, x_hat and latents to a
safetensors file, runs the husai dump tool (--dump-bin) on it, and compares every metric of its three
answers ("dense", "batched", "sparse") with the values computed here to 1e-6 relative (absolute near 0).
Null (NaN) must match null. It also checks that the JSON carries exactly the contract's keys.

--self-test compares the NumPy implementation with itself through the same checker after perturbing one
metric by 1e-5 relative, which must fail: proof that the comparison can fail.

Run with the Debian interpreter (/usr/bin/python3), which has NumPy and SciPy.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import distance

REL_TOL = 1e-6
ABS_FLOOR = 1e-12  # below this magnitude, compare absolutely

KEYS = {
    "n_rows",
    "mse",
    "explained_variance",
    "explained_variance_per_dim",
    "explained_variance_uncentred",
    "l0",
    "l1",
    "frac_dead",
    "frac_dense",
    "cossim",
    "l2_ratio",
    "relative_reconstruction_bias",
    "feature_density",
}


def save_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Minimal safetensors writer: F32 tensors in name order, header padded to 8 bytes."""
    header: dict[str, object] = {}
    blobs = []
    offset = 0
    for name in sorted(arrays):
        data = np.ascontiguousarray(arrays[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arrays[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def numpy_metrics(x32: np.ndarray, x_hat32: np.ndarray, f32: np.ndarray) -> dict[str, object]:
    """The CONTRACTS.md definitions, written with NumPy/SciPy in float64."""
    x = x32.astype(np.float64)
    x_hat = x_hat32.astype(np.float64)
    f = f32.astype(np.float64)
    n, d = x.shape
    err = x - x_hat

    def one_minus(num: float, den: float) -> float:
        return math.nan if den == 0 else 1.0 - num / den

    sse = float(np.sum(err**2))
    total_var = float(np.sum(np.var(x, axis=0)))  # population variance per dimension, summed
    out: dict[str, object] = {"n_rows": n, "mse": float(np.mean(err**2))}
    out["explained_variance"] = one_minus(sse, float(np.sum((x - x.mean(axis=0)) ** 2)))
    out["explained_variance_per_dim"] = one_minus(float(np.sum(np.var(err, axis=0))), total_var)
    out["explained_variance_uncentred"] = one_minus(sse, float(np.sum(x**2)))

    fires = f != 0
    out["l0"] = float(fires.sum(axis=1).mean())
    out["l1"] = float(np.abs(f).sum(axis=1).mean())
    density = fires.mean(axis=0)
    out["frac_dead"] = float(np.mean(density == 0))
    out["frac_dense"] = float(np.mean(density > 0.1))
    out["feature_density"] = density.tolist()

    # cos and the norm ratio only over rows with x != 0; cos = 0 where x_hat = 0.
    norms_x = np.linalg.norm(x, axis=1)
    norms_h = np.linalg.norm(x_hat, axis=1)
    live = np.flatnonzero(norms_x > 0)
    cos = [0.0 if norms_h[i] == 0 else 1.0 - distance.cosine(x[i], x_hat[i]) for i in live]
    out["cossim"] = float(np.mean(cos)) if len(live) else math.nan
    out["l2_ratio"] = float(np.mean(norms_h[live] / norms_x[live])) if len(live) else math.nan
    dot = float(np.einsum("nd,nd->", x, x_hat))
    out["relative_reconstruction_bias"] = math.nan if dot == 0 else float(np.sum(x_hat**2)) / dot
    return out


def cases() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20240611)
    out = {}
    # Hand-sized: a zero row, x_hat = 0 on a live row, a dead latent.
    out["tiny"] = (
        np.array([[1, 0], [0, 2], [0, 0], [3, 4]], np.float32),
        np.array([[1, 1], [0, 1], [1, 0], [0, 0]], np.float32),
        np.array([[0, 1, 0], [0, 0, -2], [0, 0, 0], [0, 3, 0]], np.float32),
    )
    # Residual-stream-like: large per-dimension means, an imperfect and biased reconstruction, TopK-like
    # latents with a dead and a dense latent, zero rows; 1000 rows cross several 256-row chunks.
    n, d, f, k = 1000, 32, 96, 6
    x = (40.0 + 5.0 * np.arange(d) + rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d)).astype(np.float32)
    x[::111] = 0.0
    x_hat = (0.85 * x + 0.3 + rng.normal(scale=0.8, size=(n, d))).astype(np.float32)
    lat = np.zeros((n, f), np.float32)
    for r in range(n):
        idx = rng.choice(np.arange(2, f), size=k, replace=False)  # latent 0 dead
        lat[r, idx] = rng.normal(size=k)
    lat[rng.uniform(size=n) < 0.6, 1] = 1.5  # latent 1 dense
    out["resid_like"] = (x, x_hat, lat)
    # Centred data, dense random latents with exact zeros from a ReLU, wide dictionary.
    n, d, f = 300, 8, 700
    x = rng.normal(size=(n, d)).astype(np.float32)
    x_hat = (x + rng.normal(scale=0.3, size=(n, d))).astype(np.float32)
    lat = np.maximum(rng.normal(loc=-1.5, size=(n, f)), 0).astype(np.float32)
    out["wide_relu"] = (x, x_hat, lat)
    return out


def compare(name: str, got: dict, want: dict) -> list[str]:
    errors = []
    if set(got) != KEYS:
        errors.append(f"{name}: keys {sorted(set(got) ^ KEYS)} differ from the contract")
    worst = 0.0
    for key in sorted(KEYS & set(got)):
        g, w = got[key], want[key]
        gs = g if isinstance(g, list) else [g]
        ws = w if isinstance(w, list) else [w]
        if len(gs) != len(ws):
            errors.append(f"{name}.{key}: length {len(gs)} vs {len(ws)}")
            continue
        for i, (a, b) in enumerate(zip(gs, ws)):
            if b is None or (isinstance(b, float) and math.isnan(b)):
                if a is not None:
                    errors.append(f"{name}.{key}[{i}]: husai {a}, NumPy undefined (expected null)")
                continue
            if a is None:
                errors.append(f"{name}.{key}[{i}]: husai null, NumPy {b}")
                continue
            rel = abs(a - b) / max(abs(b), ABS_FLOOR)
            worst = max(worst, rel)
            if rel > REL_TOL:
                errors.append(f"{name}.{key}[{i}]: husai {a!r} vs NumPy {b!r} (rel {rel:.2e})")
    print(f"  {name}: worst relative difference {worst:.2e}")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump-bin", type=Path)
    ap.add_argument("--work", type=Path, default=Path("metrics-parity"))
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    if args.self_test:
        x, x_hat, lat = cases()["resid_like"]
        want = numpy_metrics(x, x_hat, lat)
        clean = compare("self", dict(want), want)
        bad = dict(want)
        bad["l2_ratio"] = want["l2_ratio"] * (1 + 1e-5)
        perturbed = compare("self-perturbed", bad, want)
        ok = not clean and len(perturbed) == 1
        print("self-test:", "ok" if ok else f"FAILED (clean {clean}, perturbed {perturbed})")
        return 0 if ok else 1

    if args.dump_bin is None:
        ap.error("--dump-bin is required (or --self-test)")
    errors = []
    for name, (x, x_hat, lat) in cases().items():
        path = args.work / f"{name}.safetensors"
        out = args.work / f"{name}.json"
        save_safetensors(path, {"x": x, "x_hat": x_hat, "latents": lat})
        subprocess.run([str(args.dump_bin), str(path), str(out)], check=True)
        got = json.loads(out.read_text())
        want = numpy_metrics(x, x_hat, lat)
        for form in ("dense", "batched", "sparse"):
            errors += compare(f"{name}/{form}", got[form], want)
    for e in errors:
        print("FAIL", e)
    print("metrics parity:", "ok" if not errors else f"{len(errors)} failure(s)")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
