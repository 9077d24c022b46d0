#!/usr/bin/python3
"""Numerical parity between husai's transformer and an independent PyTorch implementation.

For each of several small configurations this script asks the husai dump tool (--dump-bin) to
write its initial parameters, one batch, the full forward pass, the gradients and a short AdamW
run, rebuilds the same model in plain PyTorch from those parameters, and compares:

  setup   config.json / parameter names and shapes / tokens and labels agree with the request
  logits  max |logits_husai - logits_torch| over all positions (float32 and float64 references)
  loss    |loss_husai - loss_torch| / |loss_torch|
  grads   per parameter ||g_husai - g_torch|| / max(||g_torch||, floor); the worst one is reported
  adamw   per step |loss_husai - loss_torch| / |loss_torch| for `steps` full-batch AdamW steps
  final   parameters after those steps: max abs diff and displacement error (see FINAL_* below)
The AdamW checks' tolerances are floored at a multiple of how far PyTorch's own float32 run is from
its float64 run (see NOISE_FACTOR), because a few AdamW steps through ReLUs are chaotic.

The PyTorch model is written from the TransformerLens HookedTransformer semantics by hand (no
TransformerLens import), so it is an oracle independent of husai's code.

--self-test writes the dump files from the PyTorch model itself (same file format) and runs the
same comparison, which proves the comparison machinery before the C++ tool exists;
--self-test --perturb scales one gradient by 1.01 to prove that the gradient check fails.

Run with the Debian interpreter (/usr/bin/python3), which has python3-torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# Tolerances (see module docstring for what each metric is).
# ----------------------------------------------------------------------------------------------
LOGITS_TOL = 1e-4  # absolute
LOSS_TOL = 1e-4  # relative
GRAD_TOL = 1e-3  # relative, per parameter
# A parameter whose true gradient is exactly zero (attn.b_K: a bias added to every key shifts all
# scores of a query by the same amount, which softmax ignores) has only float32 rounding noise as
# its gradient, so relative error against it is meaningless. The denominator is therefore floored
# at GRAD_FLOOR_REL times the global gradient norm over all parameters.
GRAD_FLOOR_REL = 1e-3

# The AdamW run is a different kind of check: after a few steps the trajectory is chaotic, so
# float32 rounding alone moves it by more than any fixed tolerance would allow for some
# initialisations. Two mechanisms, both visible between float32 and float64 PyTorch themselves:
#  * AdamW divides each entry's step by its running gradient RMS sqrt(v_hat) + eps. Where that RMS is
#    tiny the step is a ratio of two rounding-noise-sized numbers and can move by up to ~lr per step
#    (attn.b_K, whose true gradient is exactly zero, is the extreme case).
#  * a ReLU pre-activation within rounding of 0 flips its derivative between implementations, AdamW
#    turns that into an O(lr) change of some entries, and the next steps spread it. In config (a)
#    (ReLU, d_mlp 512) float32 and float64 PyTorch differ by ~4e-4 in the step-10 loss and ~4e-3 in
#    some final mlp.W_in entries for one initialisation, by ~1.5e-7 and ~5e-5 for another.
# So each AdamW metric's tolerance is max(fixed tolerance, NOISE_FACTOR x the same metric between
# float32 and float64 PyTorch on the same initial parameters and batch): husai must match PyTorch as
# closely as PyTorch's own float32 run matches float64, up to NOISE_FACTOR (two independent float32
# roundings of a chaotic run differ by about as much as each from float64; the factor absorbs the
# spread of their maxima). The fixed tolerances below decide whenever the run is not chaotic, which
# is the case for configs (b)-(e); there an optimizer bug (wrong bias correction, coupled decay,
# swapped betas) is off by >= 1e-2.
NOISE_FACTOR = 4.0
ADAMW_TOL = 1e-4  # relative, per step (worst step)
# Final parameters are split by the float64 reference's smallest sqrt(v_hat) over the run:
#   well-conditioned entries (>= FINAL_COND_RMS):
#     max|theta_husai - theta_ref| <= FINAL_ABS_TOL * max(1, max|theta|); an entry given a wrong step
#       is ~lr*steps = 1e-2 off;
#     per parameter ||theta_husai - theta_ref|| / ||theta_ref - theta_init|| <= FINAL_DISP_TOL, the
#       relative error of the AdamW displacement, which catches small systematic errors;
#   ill-conditioned entries: max|diff| <= FINAL_ILL_STEPS_TOL * lr * steps, i.e. AdamW moved them a
#     sane amount (their value is rounding noise in any float32 implementation).
FINAL_COND_RMS = 1e-6  # 100x AdamW's eps
FINAL_ABS_TOL = 1e-4
FINAL_DISP_TOL = 1e-3
FINAL_ILL_STEPS_TOL = 2.0

SUBPROCESS_TIMEOUT_S = 120

# ----------------------------------------------------------------------------------------------
# safetensors, read and written by hand (the Python package is not available).
# ----------------------------------------------------------------------------------------------
_ST_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4")}
_NP_TO_ST = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i8"): "I64", np.dtype("<i4"): "I32"}


class ParityError(Exception):
    """A malformed or inconsistent dump: reported as a failed check, never as a traceback."""


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Returns ({name: array}, metadata). Validates the layout strictly so a writer bug in husai
    shows up as a clear message rather than as garbage numbers later."""
    raw = path.read_bytes()
    if len(raw) < 8:
        raise ParityError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ParityError(f"{path}: header length {n} runs past end of file ({len(raw)} bytes)")
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ParityError(f"{path}: header is not valid UTF-8 JSON: {e}") from e
    data = raw[8 + n :]
    meta = header.pop("__metadata__", {}) or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ParityError(f"{path}: __metadata__ must map strings to strings")
    tensors: dict[str, np.ndarray] = {}
    spans = []
    for name, info in header.items():
        try:
            dt = _ST_DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise ParityError(f"{path}: bad header entry for {name!r}: {info!r}") from e
        count = math.prod(shape)
        if end - begin != count * dt.itemsize or begin < 0 or end > len(data):
            raise ParityError(
                f"{path}: {name}: offsets [{begin},{end}) do not fit shape {shape} of {info['dtype']} "
                f"in a {len(data)}-byte buffer"
            )
        spans.append((begin, end, name))
        tensors[name] = np.frombuffer(data, dtype=dt, count=count, offset=begin).reshape(shape).copy()
    spans.sort()
    for (b0, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise ParityError(f"{path}: tensors {n0} and {n1} overlap")
    return tensors, meta


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks, offset = [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        if arr.dtype not in _NP_TO_ST:
            raise ValueError(f"{name}: unsupported dtype {arr.dtype}")
        b = arr.tobytes()
        header[name] = {"dtype": _NP_TO_ST[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)  # the reference writer pads so the data buffer is 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in chunks:
            f.write(b)


# ----------------------------------------------------------------------------------------------
# The task: (a op b) mod p in two token formats.
# ----------------------------------------------------------------------------------------------
FORMATS = {
    # name: (n_ctx, d_vocab(p), answer_position)
    "seq7": (7, lambda p: p + 4, 4),
    "abeq": (3, lambda p: p + 1, 2),
}

_OPS = {
    "add": lambda a, b, p: (a + b) % p,
    "+": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "-": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
    "*": lambda a, b, p: (a * b) % p,
}


def encode(a: np.ndarray, b: np.ndarray, c: np.ndarray, p: int, fmt: str) -> np.ndarray:
    if fmt == "seq7":
        bos, eos, eq, plus = p, p + 1, p + 2, p + 3
        cols = [np.full_like(a, bos), a, np.full_like(a, plus), b, np.full_like(a, eq), c, np.full_like(a, eos)]
    elif fmt == "abeq":
        cols = [a, b, np.full_like(a, p)]
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return np.stack(cols, axis=1).astype(np.int64)


def check_tokens(tokens: np.ndarray, labels: np.ndarray, p: int, fmt: str, op: str) -> None:
    """The batch must be a valid encoding of the task, with the correct answers as labels."""
    n_ctx = FORMATS[fmt][0]
    if tokens.ndim != 2 or tokens.shape[1] != n_ctx or labels.shape != (tokens.shape[0],):
        raise ParityError(f"tokens {tokens.shape} / labels {labels.shape} do not fit format {fmt}")
    a, b = tokens[:, 0 if fmt == "abeq" else 1], tokens[:, 1 if fmt == "abeq" else 3]
    if a.min() < 0 or a.max() >= p or b.min() < 0 or b.max() >= p:
        raise ParityError("operand tokens out of range [0, p)")
    if op not in _OPS:
        raise ParityError(f"task.operation {op!r} not known to this script ({sorted(_OPS)})")
    c = _OPS[op](a, b, p)
    if not np.array_equal(labels, c):
        bad = int(np.flatnonzero(labels != c)[0])
        raise ParityError(f"row {bad}: label {labels[bad]} but ({a[bad]} {op} {b[bad]}) mod {p} = {c[bad]}")
    expected = encode(a, b, c, p, fmt)
    if not np.array_equal(tokens, expected):
        bad = int(np.flatnonzero((tokens != expected).any(axis=1))[0])
        raise ParityError(f"row {bad}: tokens {tokens[bad].tolist()}, expected {expected[bad].tolist()}")


# ----------------------------------------------------------------------------------------------
# The PyTorch reference model (TransformerLens HookedTransformer semantics, written out by hand).
# ----------------------------------------------------------------------------------------------
def param_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every parameter, by its TransformerLens name, in a fixed order."""
    d, h, e, m = cfg["d_model"], cfg["n_heads"], cfg["d_head"], cfg["d_mlp"]
    ln = cfg["normalization_type"] == "LN"
    shapes: dict[str, tuple[int, ...]] = {
        "embed.W_E": (cfg["d_vocab"], d),
        "pos_embed.W_pos": (cfg["n_ctx"], d),
    }
    for l in range(cfg["n_layers"]):
        pre = f"blocks.{l}."
        if ln:
            shapes[pre + "ln1.w"], shapes[pre + "ln1.b"] = (d,), (d,)
        for w in "QKV":
            shapes[pre + f"attn.W_{w}"] = (h, d, e)
        shapes[pre + "attn.W_O"] = (h, e, d)
        for w in "QKV":
            shapes[pre + f"attn.b_{w}"] = (h, e)
        shapes[pre + "attn.b_O"] = (d,)
        if ln:
            shapes[pre + "ln2.w"], shapes[pre + "ln2.b"] = (d,), (d,)
        shapes[pre + "mlp.W_in"], shapes[pre + "mlp.b_in"] = (d, m), (m,)
        shapes[pre + "mlp.W_out"], shapes[pre + "mlp.b_out"] = (m, d), (d,)
    if ln:
        shapes["ln_final.w"], shapes["ln_final.b"] = (d,), (d,)
    shapes["unembed.W_U"], shapes["unembed.b_U"] = (d, cfg["d_vocab_out"]), (cfg["d_vocab_out"],)
    return shapes


def _act(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return F.relu(x)
    if name == "gelu":
        return F.gelu(x)  # exact, erf-based
    if name == "gelu_new":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
    if name == "gelu_fast":
        return 0.5 * x * (1.0 + torch.tanh(0.7978845608 * x * (1.0 + 0.044715 * x * x)))
    if name == "silu":
        return F.silu(x)
    raise ParityError(f"act_fn {name!r} not known to this script")


def _ln(x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor:
    if w is None:
        return x
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * w + b


def forward(P: dict[str, torch.Tensor], cfg: dict, tokens: torch.Tensor) -> torch.Tensor:
    """logits [B, n_ctx, d_vocab_out] for all positions."""
    n_ctx = tokens.shape[1]
    x = P["embed.W_E"][tokens] + P["pos_embed.W_pos"][:n_ctx]
    causal = torch.ones(n_ctx, n_ctx, dtype=torch.bool).triu(1)  # True where key > query
    for l in range(cfg["n_layers"]):
        g = lambda k: P.get(f"blocks.{l}.{k}")  # noqa: E731  (None for LN params when LN is off)
        y = _ln(x, g("ln1.w"), g("ln1.b"))
        q = torch.einsum("bpd,hde->bphe", y, g("attn.W_Q")) + g("attn.b_Q")
        k = torch.einsum("bpd,hde->bphe", y, g("attn.W_K")) + g("attn.b_K")
        v = torch.einsum("bpd,hde->bphe", y, g("attn.W_V")) + g("attn.b_V")
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(cfg["d_head"])
        pattern = scores.masked_fill(causal, float("-inf")).softmax(-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        x = x + torch.einsum("bphe,hed->bpd", z, g("attn.W_O")) + g("attn.b_O")
        y = _ln(x, g("ln2.w"), g("ln2.b"))
        x = x + _act(cfg["act_fn"], y @ g("mlp.W_in") + g("mlp.b_in")) @ g("mlp.W_out") + g("mlp.b_out")
    x = _ln(x, P.get("ln_final.w"), P.get("ln_final.b"))
    return x @ P["unembed.W_U"] + P["unembed.b_U"]


def answer_loss(logits: torch.Tensor, labels: torch.Tensor, pos: int) -> torch.Tensor:
    return F.cross_entropy(logits[:, pos, :], labels)


@dataclasses.dataclass
class Reference:
    logits: np.ndarray
    loss: float
    grads: dict[str, np.ndarray]
    adamw_losses: np.ndarray
    final: dict[str, np.ndarray]
    min_rms: dict[str, np.ndarray]  # per entry, smallest bias-corrected sqrt(v_hat) over the steps


def run_reference(params: dict[str, np.ndarray], cfg: dict, tokens: np.ndarray, labels: np.ndarray,
                  hp: dict, steps: int, dtype: torch.dtype) -> Reference:
    """Forward, gradient and `steps` full-batch torch.optim.AdamW steps, all in `dtype`."""
    pos = hp["answer_position"]
    P = {n: torch.tensor(a, dtype=dtype, requires_grad=True) for n, a in params.items()}
    tok, lab = torch.from_numpy(tokens), torch.from_numpy(labels)
    logits = forward(P, cfg, tok)
    loss = answer_loss(logits, lab, pos)
    grads = torch.autograd.grad(loss, list(P.values()))
    opt = torch.optim.AdamW(list(P.values()), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
                            weight_decay=hp["weight_decay"])
    losses = []
    min_rms = {n: torch.full_like(t, math.inf) for n, t in P.items()}
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        step_loss = answer_loss(forward(P, cfg, tok), lab, pos)
        step_loss.backward()
        opt.step()
        losses.append(step_loss.item())
        with torch.no_grad():
            for n, t in P.items():
                rms = (opt.state[t]["exp_avg_sq"] / (1.0 - hp["beta2"] ** step)).sqrt()
                torch.minimum(min_rms[n], rms, out=min_rms[n])
    return Reference(
        logits=logits.detach().numpy(),
        loss=loss.item(),
        grads={n: g.numpy() for n, g in zip(P, grads)},
        adamw_losses=np.array(losses),
        final={n: t.detach().numpy() for n, t in P.items()},
        min_rms={n: t.numpy() for n, t in min_rms.items()},
    )


# ----------------------------------------------------------------------------------------------
# Configurations under test.
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
    name: str
    modulus: int
    fmt: str
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    act_fn: str
    ln: bool
    seed: int
    batch: int
    weight_decay: float
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.98
    steps: int = 10


CASES = [
    Case("a_relu_ln_seq7", 113, "seq7", 2, 128, 4, 512, "relu", True, seed=1, batch=256, weight_decay=1.0),
    Case("b_gelu_noln_abeq", 31, "abeq", 1, 64, 2, 128, "gelu", False, seed=2, batch=128, weight_decay=0.1),
    Case("c_gelu_new_ln", 17, "seq7", 2, 32, 4, 64, "gelu_new", True, seed=3, batch=64, weight_decay=1.0),
    Case("d_gelu_fast_ln", 23, "abeq", 1, 48, 3, 96, "gelu_fast", True, seed=4, batch=96, weight_decay=0.5),
    Case("e_silu_noln", 13, "seq7", 2, 32, 2, 128, "silu", False, seed=5, batch=64, weight_decay=0.0),
]


def case_config(c: Case) -> dict:
    """config.json as husai writes it, for the architecture keys this script checks."""
    n_ctx, vocab, ans = FORMATS[c.fmt]
    return {
        "n_layers": c.n_layers, "d_model": c.d_model, "n_heads": c.n_heads, "d_head": c.d_model // c.n_heads,
        "d_mlp": c.d_mlp, "d_vocab": vocab(c.modulus), "d_vocab_out": vocab(c.modulus), "n_ctx": n_ctx,
        "act_fn": c.act_fn, "normalization_type": "LN" if c.ln else None,
        "task": {"modulus": c.modulus, "operation": "add", "format": c.fmt, "answer_position": ans},
        "training": {"epochs": c.steps, "batch_size": c.batch, "train_fraction": 1.0, "lr": c.lr,
                     "weight_decay": c.weight_decay, "betas": [c.beta1, c.beta2], "seed": c.seed},
    }


def dump_with_husai(dump_bin: Path, c: Case, out: Path) -> None:
    cmd = [str(dump_bin), "--out", str(out), "--modulus", str(c.modulus), "--format", c.fmt,
           "--n-layers", str(c.n_layers), "--d-model", str(c.d_model), "--n-heads", str(c.n_heads),
           "--d-mlp", str(c.d_mlp), "--act-fn", c.act_fn, "--normalization", "LN" if c.ln else "none",
           "--seed", str(c.seed), "--batch", str(c.batch), "--lr", repr(c.lr), "--weight-decay", repr(c.weight_decay),
           "--beta1", repr(c.beta1), "--beta2", repr(c.beta2), "--steps", str(c.steps)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise ParityError(f"dump tool timed out after {SUBPROCESS_TIMEOUT_S}s: {' '.join(cmd)}") from e
    if r.returncode != 0:
        tail = (r.stdout + r.stderr).strip().splitlines()[-10:]
        raise ParityError(f"dump tool exited {r.returncode}: {' '.join(cmd)}\n    " + "\n    ".join(tail))


def dump_with_torch(c: Case, out: Path, perturb: str | None) -> None:
    """The self-test's stand-in for husai: the same three files, produced by the reference model."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = case_config(c)
    rng = np.random.default_rng(c.seed)
    std = 0.8 / math.sqrt(c.d_model)
    params = {}
    for name, shape in param_shapes(cfg).items():
        leaf = name.rsplit(".", 1)[1]
        if leaf.startswith("W_"):
            params[name] = rng.normal(0.0, std, size=shape).astype(np.float32)
        elif leaf == "w":
            params[name] = np.ones(shape, np.float32)
        else:
            params[name] = np.zeros(shape, np.float32)
    p = c.modulus
    a, b = rng.integers(0, p, size=c.batch), rng.integers(0, p, size=c.batch)
    labels = _OPS[cfg["task"]["operation"]](a, b, p).astype(np.int64)
    tokens = encode(a, b, labels, p, c.fmt)
    hp = {"lr": c.lr, "weight_decay": c.weight_decay, "beta1": c.beta1, "beta2": c.beta2, "eps": 1e-8,
          "answer_position": cfg["task"]["answer_position"]}
    ref = run_reference(params, cfg, tokens, labels, hp, c.steps, torch.float32)
    dump: dict[str, np.ndarray] = {
        "tokens": tokens, "labels": labels, "logits": ref.logits,
        "loss": np.array([ref.loss], np.float32), "adamw_losses": ref.adamw_losses.astype(np.float32),
    }
    for n, g in ref.grads.items():
        dump["grad." + n] = g * np.float32(1.01) if n == perturb else g
    for n, t in ref.final.items():
        dump["final." + n] = t
    write_safetensors(out / "model.safetensors", params, {"format": "husai-parity-selftest"})
    write_safetensors(out / "parity.safetensors", dump, {k: repr(v) if isinstance(v, float) else str(v) for k, v in hp.items()})
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------
# Comparison.
# ----------------------------------------------------------------------------------------------
class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, case: str, what: str, ok: bool, detail: str) -> None:
        status = "PASS" if ok else "FAIL"
        print(f"  [{status}] {case:<18} {what:<7} {detail}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(f"{case} {what}: {detail}")


CHECKS = ("setup", "logits", "loss", "grads", "adamw", "final")


def _f(x: float) -> str:
    return f"{x:.2e}"


def compare_case(c: Case, d: Path, rep: Report) -> None:
    # --- setup: everything that must be exactly right before numbers mean anything -------------
    try:
        cfg = json.loads((d / "config.json").read_text())
        params, _ = read_safetensors(d / "model.safetensors")
        dump, meta = read_safetensors(d / "parity.safetensors")
        want = case_config(c)
        for k in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx", "act_fn", "normalization_type"):
            if cfg.get(k) != want[k]:
                raise ParityError(f"config.json {k} = {cfg.get(k)!r}, requested {want[k]!r}")
        cfg.setdefault("d_vocab_out", cfg["d_vocab"])
        if cfg.get("attn_only") or cfg.get("positional_embedding_type", "standard") != "standard":
            raise ParityError("config.json: attn_only / non-standard positional embeddings are not modelled here")
        if not math.isclose(float(cfg.get("eps", 1e-5)), 1e-5):
            raise ParityError(f"config.json: LayerNorm eps {cfg['eps']}, the parity semantics fix 1e-5")
        task = cfg.get("task", {})
        for k in ("modulus", "format", "answer_position"):
            if task.get(k) != want["task"][k]:
                raise ParityError(f"config.json task.{k} = {task.get(k)!r}, expected {want['task'][k]!r}")
        shapes = param_shapes(cfg)
        missing, extra = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
        if missing or extra:
            raise ParityError(f"model.safetensors: missing {missing}, unexpected {extra}")
        for n, s in shapes.items():
            if params[n].shape != s or params[n].dtype != np.float32:
                raise ParityError(f"model.safetensors: {n} is {params[n].dtype}{list(params[n].shape)}, want float32{list(s)}")
        for key in ["tokens", "labels", "logits", "loss", "adamw_losses"] + [f"{p}.{n}" for p in ("grad", "final") for n in shapes]:
            if key not in dump:
                raise ParityError(f"parity.safetensors: missing tensor {key!r}")
        try:
            hp = {k: float(meta[k]) for k in ("lr", "weight_decay", "beta1", "beta2", "eps")}
            hp["answer_position"] = int(meta["answer_position"])
        except (KeyError, ValueError) as e:
            raise ParityError(f"parity.safetensors metadata {meta!r}: {e}") from e
        requested = {"lr": c.lr, "weight_decay": c.weight_decay, "beta1": c.beta1, "beta2": c.beta2,
                     "answer_position": want["task"]["answer_position"]}
        for k, v in requested.items():
            if not math.isclose(hp[k], v, rel_tol=1e-6):
                raise ParityError(f"metadata {k} = {hp[k]}, requested {v}")
        tokens, labels = dump["tokens"].astype(np.int64), dump["labels"].astype(np.int64)
        if tokens.shape[0] != c.batch:
            raise ParityError(f"batch has {tokens.shape[0]} rows, requested {c.batch}")
        check_tokens(tokens, labels, c.modulus, c.fmt, task.get("operation", "add"))
        steps = dump["adamw_losses"].shape[0]
        if steps != c.steps:
            raise ParityError(f"adamw_losses has {steps} entries, requested {c.steps}")
        want_logits = (c.batch, cfg["n_ctx"], cfg["d_vocab_out"])
        if dump["logits"].shape != want_logits:
            raise ParityError(f"logits shape {list(dump['logits'].shape)}, want {list(want_logits)}")
    except (ParityError, OSError, json.JSONDecodeError) as e:
        rep.check(c.name, "setup", False, str(e))
        for what in CHECKS[1:]:
            rep.check(c.name, what, False, "skipped (setup failed)")
        return
    rep.check(c.name, "setup", True, f"{len(shapes)} params, batch {c.batch}, n_ctx {cfg['n_ctx']}, "
              f"d_vocab {cfg['d_vocab']}, op {task.get('operation', 'add')}")

    refs = {dt: run_reference(params, cfg, tokens, labels, hp, steps, dt) for dt in (torch.float32, torch.float64)}
    r32, r64 = refs[torch.float32], refs[torch.float64]

    # --- logits --------------------------------------------------------------------------------
    e32 = float(np.abs(dump["logits"] - r32.logits).max())
    e64 = float(np.abs(dump["logits"] - r64.logits).max())
    rep.check(c.name, "logits", max(e32, e64) <= LOGITS_TOL,
              f"max abs err vs torch f32 {_f(e32)}, vs f64 {_f(e64)} (tol {LOGITS_TOL:g})")

    # --- loss ----------------------------------------------------------------------------------
    l = float(dump["loss"].reshape(-1)[0])
    e32, e64 = abs(l - r32.loss) / abs(r32.loss), abs(l - r64.loss) / abs(r64.loss)
    rep.check(c.name, "loss", max(e32, e64) <= LOSS_TOL,
              f"husai {l:.6f} torch {r64.loss:.6f}; rel err f32 {_f(e32)}, f64 {_f(e64)} (tol {LOSS_TOL:g})")

    # --- gradients: relative error of each parameter's gradient, worst reported -----------------
    def grad_errs(ref: Reference) -> dict[str, float]:
        floor = GRAD_FLOOR_REL * math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in ref.grads.values()))
        return {n: float(np.linalg.norm((dump["grad." + n].astype(np.float64) - g).ravel())
                         / max(float(np.linalg.norm(g.astype(np.float64).ravel())), floor, 1e-30))
                for n, g in ref.grads.items()}

    g32, g64 = grad_errs(r32), grad_errs(r64)
    w32, w64 = max(g32, key=g32.get), max(g64, key=g64.get)
    rep.check(c.name, "grads", max(g32[w32], g64[w64]) <= GRAD_TOL,
              f"worst rel err vs f32 {_f(g32[w32])} ({w32}), vs f64 {_f(g64[w64])} ({w64}) (tol {GRAD_TOL:g})")

    # --- AdamW loss trajectory (tolerance floored at NOISE_FACTOR x PyTorch's f32-vs-f64 noise) ---
    def traj_err(cand: np.ndarray, ref: np.ndarray) -> float:
        return float(np.max(np.abs(cand.astype(np.float64) - ref) / np.abs(ref)))

    hl = dump["adamw_losses"]
    e32, e64 = traj_err(hl, r32.adamw_losses), traj_err(hl, r64.adamw_losses)
    noise = traj_err(r32.adamw_losses, r64.adamw_losses)
    tol = max(ADAMW_TOL, NOISE_FACTOR * noise)
    rep.check(c.name, "adamw", max(e32, e64) <= tol,
              f"{steps} steps, loss {hl[0]:.4f} -> {hl[-1]:.4f}; worst rel err vs f32 {_f(e32)}, vs f64 {_f(e64)}; "
              f"torch f32-vs-f64 {_f(noise)} (tol {tol:.3g})")

    # --- final parameters, split by AdamW conditioning (see FINAL_COND_RMS) ----------------------
    well = {n: r64.min_rms[n] >= FINAL_COND_RMS for n in r64.final}
    n_ill = sum(int((~m).sum()) for m in well.values())
    n_all = sum(m.size for m in well.values())

    def final_errs(cand: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, tuple[float, str]]:
        """worst (value, param) of: well-conditioned scaled max abs diff ("abs"), well-conditioned
        displacement relative error ("disp"), ill-conditioned max abs diff ("ill")"""
        out = {"abs": (0.0, "-"), "disp": (0.0, "-"), "ill": (0.0, "-")}

        def worse(key: str, v: float, n: str) -> None:
            if v > out[key][0]:
                out[key] = (v, n)

        for n, t in ref.items():
            diff = cand[n].astype(np.float64) - t
            w = well[n]
            if w.any():
                worse("abs", float(np.abs(diff[w]).max()) / max(1.0, float(np.abs(t).max())), n)
                moved = float(np.linalg.norm((t - params[n].astype(np.float64))[w]))
                worse("disp", float(np.linalg.norm(diff[w])) / max(moved, 1e-30), n)
            if (~w).any():
                worse("ill", float(np.abs(diff[~w]).max()), n)
        return out

    husai_final = {n: dump["final." + n] for n in shapes}
    h32, h64 = final_errs(husai_final, r32.final), final_errs(husai_final, r64.final)
    fnoise = final_errs(r32.final, r64.final)
    fixed = {"abs": FINAL_ABS_TOL, "disp": FINAL_DISP_TOL, "ill": FINAL_ILL_STEPS_TOL * hp["lr"] * steps}
    tols = {k: max(fixed[k], NOISE_FACTOR * fnoise[k][0]) for k in fixed}
    ok = all(max(h32[k][0], h64[k][0]) <= tols[k] for k in fixed)
    part = lambda k: (f"vs f32 {_f(h32[k][0])} ({h32[k][1]}), vs f64 {_f(h64[k][0])} ({h64[k][1]}), "  # noqa: E731
                      f"torch f32-vs-f64 {_f(fnoise[k][0])} (tol {tols[k]:.3g})")
    rep.check(c.name, "final", ok,
              f"max abs diff {part('abs')}; displacement rel err {part('disp')}; "
              f"{n_ill}/{n_all} ill-conditioned entries, max abs diff {part('ill')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump-bin", type=Path, help="husai parity dump tool")
    ap.add_argument("--work", type=Path, help="scratch folder for the dumps (default: a temporary folder)")
    ap.add_argument("--self-test", action="store_true", help="produce the dumps with the PyTorch model itself")
    ap.add_argument("--perturb", action="store_true",
                    help="with --self-test: scale one gradient (case a, blocks.0.mlp.W_in) by 1.01; must FAIL")
    ap.add_argument("--only", help="run only the cases whose name contains this string")
    args = ap.parse_args()
    if args.self_test == (args.dump_bin is not None):
        ap.error("give exactly one of --dump-bin PATH or --self-test")
    if args.perturb and not args.self_test:
        ap.error("--perturb only makes sense with --self-test")
    if args.dump_bin is not None and not args.dump_bin.is_file():
        print(f"parity: dump tool {args.dump_bin} does not exist", file=sys.stderr)
        return 2

    # Same numbers on every machine: the reference runs single-threaded (its reductions are then
    # in a fixed order) and deterministic.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    tmp = None
    if args.work is None:
        tmp = tempfile.mkdtemp(prefix="husai-parity-")
        work = Path(tmp)
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)

    rep = Report()
    t0 = time.perf_counter()
    try:
        for i, c in enumerate(CASES):
            if args.only and args.only not in c.name:
                continue
            d = work / c.name
            shutil.rmtree(d, ignore_errors=True)  # never compare against a stale dump
            d.mkdir(parents=True)
            print(f"{c.name}: p={c.modulus} {c.fmt} L={c.n_layers} d_model={c.d_model} heads={c.n_heads} "
                  f"d_mlp={c.d_mlp} {c.act_fn} {'LN' if c.ln else 'no-LN'} batch={c.batch} wd={c.weight_decay}",
                  flush=True)
            try:
                if args.self_test:
                    dump_with_torch(c, d, "blocks.0.mlp.W_in" if args.perturb and i == 0 else None)
                else:
                    dump_with_husai(args.dump_bin, c, d)
            except ParityError as e:
                for what in CHECKS:
                    rep.check(c.name, what, False, str(e) if what == "setup" else "skipped (no dump)")
                continue
            compare_case(c, d, rep)
    finally:
        # A temporary work folder is kept when something failed: the dumps are the evidence.
        if tmp is not None and not rep.failed:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"({time.perf_counter() - t0:.1f} s)", flush=True)
    if rep.failed:
        print("parity FAILED:", file=sys.stderr)
        for f in rep.failed:
            print(f"  {f}", file=sys.stderr)
        if tmp is not None:
            print(f"  (dumps kept in {tmp})", file=sys.stderr)
        sys.stderr.flush()
    print(f"parity: {rep.passed} passed, {len(rep.failed)} failed", flush=True)
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
