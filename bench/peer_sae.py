#!/usr/bin/python3
"""PyTorch peer for `make bench`: trains a TopK sparse autoencoder the usual dense way on the same
activations, shapes and settings as a `husai train-sae --architecture topk` run and prints its training
throughput as one JSON line.

    /usr/bin/python3 bench/peer_sae.py --activations FILE.safetensors --steps N --threads T [options]

One step, as husai's default topk configuration does it (SAELens TopK, Gao et al. 2024):
  pre = (x - b_dec) W_enc + b_enc;  f = ReLU(TopK_k(pre)) scattered back to a dense [B, d_sae] tensor
  x_hat = f W_dec + b_dec;  loss = mean_b ||x_hat - x||^2 + aux_coefficient * AuxK
AuxK: latents that have not fired for dead_window samples are dead; per row the top min(k_aux, n_dead)
pre-activations among them (signed) reconstruct the residual stop(x - x_hat) without b_dec, weighted by
min(n_dead / k_aux, 1). Then backward, global gradient-norm clipping, the component of each W_dec row's
gradient along the row removed, Adam (foreach: one fused multi-tensor update), and the W_dec rows
rescaled to unit norm. Everything is dense: encoder and decoder GEMMs over all d_sae latents, as a
PyTorch user writes it. Inputs are scaled so that E||x|| = sqrt(d_in), as husai does.

Untimed warm-up steps come first, so one-off costs (allocator growth, OpenBLAS/OpenMP thread start-up)
stay out of the measurement. Output: {"samples_per_s", "steps", "wall_s", "threads", "torch", "blas",
...}; "blas" as bench/peer_transformer.py reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_transformer import blas_info, set_openblas_threads  # noqa: E402


def load_activations(path: str, key: str) -> torch.Tensor:
    """Reads one F32 tensor [N, d_in] from a .safetensors file (the format husai synth writes)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        if key not in header:
            raise SystemExit(f"peer: {path} has no tensor {key!r}")
        meta = header[key]
        if meta["dtype"] != "F32" or len(meta["shape"]) != 2:
            raise SystemExit(f"peer: {key} must be F32 [rows, d_in], found {meta['dtype']} {meta['shape']}")
        begin, end = meta["data_offsets"]
        f.seek(8 + n + begin)
        data = bytearray(f.read(end - begin))
    return torch.frombuffer(data, dtype=torch.float32).reshape(meta["shape"]).clone()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--activations", help="safetensors file with [rows, d_in] F32 activations; "
                    "default: --rows random Gaussian rows")
    ap.add_argument("--key", default="activations")
    ap.add_argument("--rows", type=int, default=65536, help="random rows when no --activations")
    ap.add_argument("--d-in", type=int, default=128, help="random data only (a file sets d_in)")
    ap.add_argument("--d-sae", type=int, default=1024)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--k-aux", type=int, default=0, help="0 = d_in / 2 (husai's default)")
    ap.add_argument("--aux-coefficient", type=float, default=1.0 / 32)
    ap.add_argument("--dead-window", type=int, default=100000, help="samples")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--grad-clip-norm", type=float, default=1.0)
    ap.add_argument("--steps", type=int, required=True, help="timed steps (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    if args.steps < 1 or args.threads < 1 or args.warmup < 0:
        ap.error("--steps and --threads must be >= 1, --warmup >= 0")

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    if args.activations:
        x_all = load_activations(args.activations, args.key)
    else:
        x_all = torch.randn(args.rows, args.d_in, generator=gen)
    n_rows, d_in = x_all.shape
    x_all *= (d_in ** 0.5) / x_all.norm(dim=1).mean()  # E||x|| = sqrt(d_in)
    L, k, bs = args.d_sae, args.k, args.batch_size
    k_aux = args.k_aux if args.k_aux > 0 else d_in // 2
    if k > L:
        ap.error("--k exceeds --d-sae")

    w = torch.randn(L, d_in, generator=gen)
    w /= w.norm(dim=1, keepdim=True)
    W_dec = torch.nn.Parameter(w.clone())
    W_enc = torch.nn.Parameter(w.t().contiguous())
    b_enc = torch.nn.Parameter(torch.zeros(L))
    b_dec = torch.nn.Parameter(x_all.mean(0))
    params = [W_enc, W_dec, b_enc, b_dec]
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, foreach=True)
    set_openblas_threads(args.threads)  # after the first torch ops, once libblas is surely mapped
    since_fired = torch.zeros(L, dtype=torch.long)
    perm_gen = torch.Generator().manual_seed(args.seed + 1)
    order = torch.randperm(n_rows, generator=perm_gen)
    pos = 0
    stats = {"loss": 0.0, "n_dead": 0}

    def next_batch() -> torch.Tensor:
        nonlocal order, pos
        if pos + bs > n_rows:
            order, pos = torch.randperm(n_rows, generator=perm_gen), 0
        idx = order[pos : pos + bs]
        pos += bs
        return x_all[idx]

    def step() -> None:
        x = next_batch()
        dead = since_fired >= args.dead_window
        n_dead = int(dead.sum())
        pre = (x - b_dec) @ W_enc + b_enc
        vals, idx = pre.topk(k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
        x_hat = f @ W_dec + b_dec
        loss = (x_hat - x).pow(2).sum(-1).mean()
        if args.aux_coefficient > 0 and n_dead > 0:
            k_eff = min(k_aux, n_dead)
            aux_vals, aux_idx = pre.masked_fill(~dead, float("-inf")).topk(k_eff, dim=-1)
            f_aux = torch.zeros_like(pre).scatter(-1, aux_idx, aux_vals)
            e = (x - x_hat).detach()
            aux = (f_aux @ W_dec - e).pow(2).sum(-1).mean() * min(1.0, n_dead / k_aux)
            loss = loss + args.aux_coefficient * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip_norm)
        with torch.no_grad():
            g = W_dec.grad
            g -= (g * W_dec).sum(1, keepdim=True) / (W_dec * W_dec).sum(1, keepdim=True) * W_dec
        opt.step()
        with torch.no_grad():
            W_dec.div_(W_dec.norm(dim=1, keepdim=True))
            fired = (f > 0).any(0)
            since_fired.add_(bs).masked_fill_(fired, 0)
        stats["loss"], stats["n_dead"] = loss.item(), n_dead

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    wall = time.perf_counter() - t0

    print(json.dumps({
        "samples_per_s": bs * args.steps / wall,
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "wall_s": wall,
        "ms_per_step": 1e3 * wall / args.steps,
        "threads": args.threads,
        "torch": torch.__version__,
        "blas": blas_info(),
        "n_rows": n_rows,
        "d_in": d_in,
        "d_sae": L,
        "k": k,
        "k_aux": k_aux,
        "batch_size": bs,
        "final_loss": stats["loss"],
        "final_frac_dead": stats["n_dead"] / L,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
