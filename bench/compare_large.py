#!/usr/bin/env python3
"""Side-by-side: `husai compare` on two large synthetic SAEs against SciPy (linear_sum_assignment + NumPy cosines).

Two SAELens folders of N x D (default 8,192 x 768) are written: a random unit dictionary A, and B = half of A's
atoms plus Gaussian noise (0.3 per coordinate) and half random atoms, rows shuffled; W_enc = W_dec^T. husai compares
decoder and encoder with no nulls (`--null none --no-figures`), under /usr/bin/time for peak RSS; SciPy computes the
decoder's |cos| in float64 and one maximising assignment (skipped with --no-scipy, e.g. at 32,768 where the dense
float64 matrix alone is 8.6 GB). Prints both wall times, peak RSS and matched_mean_cos, and their relative
difference. Usage: compare_large.py --husai build/bin/husai [--n 8192] [--dim 768] [--work DIR] [--no-scipy]
"""
import argparse, json, os, resource, struct, subprocess, sys, time
from pathlib import Path

import numpy as np


def save_sae(folder: Path, w: np.ndarray) -> None:
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    n, d = w.shape
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"W_dec": w, "W_enc": np.ascontiguousarray(w.T), "b_enc": np.zeros(n, np.float32),
               "b_dec": np.zeros(d, np.float32)}
    header, blob = {}, b""
    for k, v in tensors.items():
        v = np.ascontiguousarray(v, dtype=np.float32)
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [len(blob), len(blob) + v.nbytes]}
        blob += v.tobytes()
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    (folder / "sae_weights.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + blob)
    (folder / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": d, "d_sae": n,
                                                  "apply_b_dec_to_input": True, "normalize_activations": "none"}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--husai", required=True)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--work", type=Path, default=Path("build/bench-compare"))
    ap.add_argument("--no-scipy", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, d = args.n, args.dim
    a = rng.standard_normal((n, d)).astype(np.float32)
    b = rng.standard_normal((n, d)).astype(np.float32)
    half = n // 2
    b[:half] = a[:half] + 0.3 * rng.standard_normal((half, d)).astype(np.float32)
    b = b[rng.permutation(n)]
    work = args.work / f"n{n}"
    save_sae(work / "a", a)
    save_sae(work / "b", b)
    out = work / "compare"
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", args.husai, "compare", str(work / "a"), str(work / "b"),
                        "--null", "none", "--no-figures", "--quiet", "--overwrite", "--out", str(out)],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        print(r.stderr, file=sys.stderr)
        return 1
    rss_mb = int(r.stderr.strip().splitlines()[-1]) / 1024
    pair = json.loads((out / "stability.json").read_text())["pairs"][0]
    m = pair.get("matching", {})
    print(f"husai compare {n} x {d} (decoder + encoder, no nulls): {wall:.1f} s, peak RSS {rss_mb:.0f} MB, "
          f"matched_mean_cos {pair['matched_mean_cos']:.10f}, certificate rounds {m.get('rounds')} / "
          f"{m.get('rounds_enc')}, certified {m.get('certified')}")
    if args.no_scipy:
        return 0
    from scipy.optimize import linear_sum_assignment
    t0 = time.perf_counter()
    ua = a / np.linalg.norm(a, axis=1, keepdims=True)
    ub = b / np.linalg.norm(b, axis=1, keepdims=True)
    c = np.abs(ua.astype(np.float64) @ ub.astype(np.float64).T)
    t1 = time.perf_counter()
    rows, cols = linear_sum_assignment(c, maximize=True)
    t2 = time.perf_counter()
    want = float(c[rows, cols].mean())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rel = abs(pair["matched_mean_cos"] - want) / want
    print(f"SciPy {n} x {d} (decoder only): cosines {t1 - t0:.1f} s + linear_sum_assignment {t2 - t1:.1f} s, "
          f"peak RSS {rss:.0f} MB, matched_mean_cos {want:.10f}; relative difference {rel:.1e}")
    return 0 if rel <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
