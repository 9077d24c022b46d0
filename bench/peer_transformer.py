#!/usr/bin/python3
"""PyTorch peer for `make bench`: trains the same transformer on the same task as a husai run and
prints its training throughput as one JSON line.

    /usr/bin/python3 bench/peer_transformer.py --config-json RUN/config.json --epochs N --threads T

Architecture, task, batch size, learning rate, weight decay, betas and train fraction come from the
husai run folder's config.json, so both sides do the same work per epoch: every training sample goes
through the full forward pass over all n_ctx positions (the ordinary dense computation; nothing is
pruned to the answer position), cross-entropy at the answer position, backward and an AdamW step
per minibatch. One untimed warm-up epoch comes first, so one-off costs (allocator growth, OpenBLAS
and OpenMP thread start-up, oneDNN primitive creation) stay out of the measurement.

Output: {"samples_per_s", "epochs", "wall_s", "threads", "torch", "blas", ...}, where "blas" says
which kernels torch actually runs on: its build summary and, when an OpenBLAS library is mapped into
this process (Debian's torch calls the system libblas.so.3, which is OpenBLAS when
libopenblas0-pthread is installed), that library's own core name and build configuration.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import re
import sys
import time

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------
# Model: TransformerLens HookedTransformer semantics, written as a plain nn.Module.
# ----------------------------------------------------------------------------------------------
def _act(name: str):
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu
    if name == "gelu_new":
        return lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
    if name == "gelu_fast":
        return lambda x: 0.5 * x * (1.0 + torch.tanh(0.7978845608 * x * (1.0 + 0.044715 * x * x)))
    if name == "silu":
        return F.silu
    raise SystemExit(f"peer: act_fn {name!r} not supported")


class Transformer(torch.nn.Module):
    def __init__(self, cfg: dict, gen: torch.Generator):
        super().__init__()
        self.cfg = cfg
        d, h, e, m = cfg["d_model"], cfg["n_heads"], cfg["d_head"], cfg["d_mlp"]
        self.ln = cfg.get("normalization_type") == "LN"
        self.ln_eps = float(cfg.get("eps", 1e-5))  # TransformerLens keeps LayerNorm's eps in cfg.eps
        self.attn_only = bool(cfg.get("attn_only", False))
        if cfg.get("normalization_type") not in ("LN", None):
            raise SystemExit(f"peer: normalization_type {cfg['normalization_type']!r} not supported")
        self.act = _act(cfg["act_fn"])
        std = 0.8 / math.sqrt(d)

        def w(*shape):  # same init law as husai; throughput does not depend on it
            return torch.nn.Parameter(torch.randn(*shape, generator=gen) * std)

        def zeros(*shape):
            return torch.nn.Parameter(torch.zeros(*shape))

        def ones(*shape):
            return torch.nn.Parameter(torch.ones(*shape))

        self.W_E = w(cfg["d_vocab"], d)
        self.W_pos = w(cfg["n_ctx"], d)
        self.blocks = torch.nn.ModuleList()
        for _ in range(cfg["n_layers"]):
            b = torch.nn.Module()
            if self.ln:
                b.ln1_w, b.ln1_b, b.ln2_w, b.ln2_b = ones(d), zeros(d), ones(d), zeros(d)
            b.W_Q, b.W_K, b.W_V, b.W_O = w(h, d, e), w(h, d, e), w(h, d, e), w(h, e, d)
            b.b_Q, b.b_K, b.b_V, b.b_O = zeros(h, e), zeros(h, e), zeros(h, e), zeros(d)
            if not cfg.get("attn_only", False):
                b.W_in, b.b_in, b.W_out, b.b_out = w(d, m), zeros(m), w(m, d), zeros(d)
            self.blocks.append(b)
        if self.ln:
            self.lnf_w, self.lnf_b = ones(d), zeros(d)
        self.W_U = w(d, cfg["d_vocab_out"])
        self.b_U = zeros(cfg["d_vocab_out"])
        n = cfg["n_ctx"]
        self.register_buffer("causal", torch.ones(n, n, dtype=torch.bool).triu(1), persistent=False)

    def _layer_norm(self, x, w, b):
        # F.layer_norm computes exactly TL's LN (biased variance, eps inside the sqrt) in one kernel,
        # which is what a PyTorch user would write.
        return F.layer_norm(x, x.shape[-1:], w, b, self.ln_eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        e = self.cfg["d_head"]
        x = self.W_E[tokens] + self.W_pos[:n]
        for b in self.blocks:
            y = self._layer_norm(x, b.ln1_w, b.ln1_b) if self.ln else x
            # einsum("bpd,hde->bphe") for Q, K, V, then heads to the batch dimension for the bmm's
            q = (torch.einsum("bpd,hde->bphe", y, b.W_Q) + b.b_Q).transpose(1, 2)  # [B,h,n,e]
            k = (torch.einsum("bpd,hde->bphe", y, b.W_K) + b.b_K).transpose(1, 2)
            v = (torch.einsum("bpd,hde->bphe", y, b.W_V) + b.b_V).transpose(1, 2)
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(e)
            pattern = scores.masked_fill(self.causal[:n, :n], float("-inf")).softmax(-1)
            z = (pattern @ v).transpose(1, 2)  # [B,n,h,e]
            x = x + torch.einsum("bphe,hed->bpd", z, b.W_O) + b.b_O
            if self.attn_only:
                continue
            y = self._layer_norm(x, b.ln2_w, b.ln2_b) if self.ln else x
            x = x + self.act(y @ b.W_in + b.b_in) @ b.W_out + b.b_out
        if self.ln:
            x = self._layer_norm(x, self.lnf_w, self.lnf_b)
        return x @ self.W_U + self.b_U


# ----------------------------------------------------------------------------------------------
# Task data: all p^2 pairs, seeded split.
# ----------------------------------------------------------------------------------------------
def make_dataset(task: dict, seed: int, train_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    p, fmt, op = task["modulus"], task["format"], task.get("operation", "add")
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    ops = {"add": a + b, "+": a + b, "sub": a - b, "-": a - b, "mul": a * b, "*": a * b}
    if op not in ops:
        raise SystemExit(f"peer: task.operation {op!r} not supported")
    c = ops[op] % p
    full = lambda v: torch.full_like(a, v)  # noqa: E731
    if fmt == "seq7":
        tokens = torch.stack([full(p), a, full(p + 3), b, full(p + 2), c, full(p + 1)], dim=1)
    elif fmt == "abeq":
        tokens = torch.stack([a, b, full(p)], dim=1)
    else:
        raise SystemExit(f"peer: task.format {fmt!r} not supported")
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n_train = int(train_fraction * p * p)
    idx = perm[:n_train]
    return tokens[idx].contiguous(), c[idx].contiguous()


# ----------------------------------------------------------------------------------------------
# BLAS identification.
# ----------------------------------------------------------------------------------------------
def blas_info() -> dict:
    show = torch.__config__.show()
    summary = []
    for key in ("BLAS_INFO", "LAPACK_INFO", "USE_MKLDNN", "USE_OPENMP"):
        m = re.search(rf"{key}=([^,\s]+)", show)
        if m:
            summary.append(f"{key}={m.group(1)}")
    for pat in (r"CPU capability usage: (\S+)", r"(Intel\(R\) MKL-DNN v[\d.]+)", r"(Intel\(R\) Math Kernel Library[^\n]*)",
                r"(OpenMP \d+)"):
        m = re.search(pat, show)
        if m:
            summary.append(m.group(1).strip())
    info: dict = {"torch_build": ", ".join(summary), "openblas": None}

    # A library in /proc/self/maps is the one actually serving sgemm_, whatever the build said.
    paths = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and "openblas" in parts[5].lower() and parts[5] not in paths:
                paths.append(parts[5])
    for path in paths:
        try:
            lib = ctypes.CDLL(path)  # already mapped: this only returns a handle to it
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
        except (OSError, AttributeError):
            continue  # e.g. libblas.so.3 is a link name without these symbols exported
        info["openblas"] = {
            "library": path,
            "corename": lib.openblas_get_corename().decode(),
            "config": lib.openblas_get_config().decode().strip(),
            "num_threads": int(lib.openblas_get_num_threads()),
        }
        break
    ob = info["openblas"]
    info["summary"] = (f"OpenBLAS {ob['corename']} ({ob['config']}, {ob['num_threads']} thr)" if ob
                       else "no OpenBLAS mapped") + f"; torch: {info['torch_build']}"
    return info


def set_openblas_threads(n: int) -> None:
    """torch.set_num_threads sets OpenMP's count, not OpenBLAS's own pthread pool, so the peer sets
    that too; otherwise --threads would not hold for the GEMMs."""
    with open("/proc/self/maps") as f:
        paths = {l.split()[5] for l in f if len(l.split()) >= 6 and "openblas" in l.split()[5].lower()}
    for path in paths:
        try:
            ctypes.CDLL(path).openblas_set_num_threads(ctypes.c_int(n))
        except (OSError, AttributeError):
            pass


# ----------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-json", required=True, help="config.json of a husai run folder")
    ap.add_argument("--epochs", type=int, required=True, help="timed epochs (after 1 untimed warm-up)")
    ap.add_argument("--threads", type=int, required=True)
    args = ap.parse_args()
    if args.epochs < 1 or args.threads < 1:
        ap.error("--epochs and --threads must be >= 1")

    with open(args.config_json) as f:
        cfg = json.load(f)
    cfg.setdefault("d_vocab_out", cfg["d_vocab"])
    cfg.setdefault("d_head", cfg["d_model"] // cfg["n_heads"])
    task, tr = cfg["task"], cfg["training"]
    pos = task["answer_position"]

    torch.set_num_threads(args.threads)
    torch.manual_seed(tr.get("seed", 0))
    tokens, labels = make_dataset(task, tr.get("seed", 0), tr["train_fraction"])
    n_train = tokens.shape[0]
    bs = n_train if tr["batch_size"] == "full" else min(int(tr["batch_size"]), n_train)

    model = Transformer(cfg, torch.Generator().manual_seed(tr.get("seed", 0)))
    betas = tuple(tr.get("betas", (0.9, 0.98)))
    # foreach=True: one fused multi-tensor update instead of a Python loop over ~40 parameters,
    # the fastest AdamW this torch offers on CPU (same arithmetic).
    opt = torch.optim.AdamW(model.parameters(), lr=tr["lr"], betas=betas, eps=tr.get("eps", 1e-8),
                            weight_decay=tr["weight_decay"], foreach=True)
    set_openblas_threads(args.threads)  # after the first torch ops, once libblas is surely mapped
    shuffle_gen = torch.Generator().manual_seed(tr.get("seed", 0) + 1)

    def epoch() -> float:
        order = torch.randperm(n_train, generator=shuffle_gen) if bs < n_train else None
        loss = torch.zeros(())
        for start in range(0, n_train, bs):
            if order is None:
                x, y = tokens, labels
            else:
                idx = order[start : start + bs]
                x, y = tokens[idx], labels[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x)[:, pos, :], y)
            loss.backward()
            opt.step()
        return loss.item()

    epoch()  # warm-up, untimed
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        last_loss = epoch()
    wall = time.perf_counter() - t0

    print(json.dumps({
        "samples_per_s": n_train * args.epochs / wall,
        "epochs": args.epochs,
        "wall_s": wall,
        "threads": args.threads,
        "torch": torch.__version__,
        "blas": blas_info(),
        "n_train": n_train,
        "batch_size": bs,
        "final_train_loss": last_loss,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
