"""Cross-checks `husai extract` against an independent PyTorch forward pass.

1. The last block's resid_post at the answer position, pushed through ln_final and the unembedding in
   PyTorch, must give the logits of the PyTorch model (rebuilt from model.safetensors + config.json) at '='.
2. `--position all` rows at the answer position must equal the `answer` extraction at the same hook.
3. a, b, labels and is_train must match split.safetensors.
Usage: extract_check.py RUN_DIR ANSWER_FILE ALL_FILE_LAYER0_MLP_OUT ANSWER_FILE_LAYER0_MLP_OUT
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "parity"))
from transformer_parity import forward, read_safetensors  # noqa: E402


def main() -> int:
    run, answer_file, all_file, answer_l0 = (Path(a) for a in sys.argv[1:5])
    cfg = json.loads((run / "config.json").read_text())
    params, _ = read_safetensors(run / "model.safetensors")
    split, _ = read_safetensors(run / "split.safetensors")
    acts, meta = read_safetensors(answer_file)
    pos = cfg["task"]["answer_position"]
    p = cfg["task"]["modulus"]

    P = {k: torch.from_numpy(v.astype(np.float64)) for k, v in params.items()}
    tokens = torch.from_numpy(split["tokens"])
    with torch.no_grad():
        ref_logits = forward(P, cfg, tokens)[:, pos].numpy()
        x = torch.from_numpy(acts["activations"].astype(np.float64))
        if cfg["normalization_type"] == "LN":
            x = torch.nn.functional.layer_norm(x, (x.shape[-1],), P["ln_final.w"], P["ln_final.b"], 1e-5)
        logits = (x @ P["unembed.W_U"] + P["unembed.b_U"]).numpy()
    err = float(np.abs(logits - ref_logits).max())
    print(f"extract: resid_post -> logits vs torch forward: max abs err {err:.2e}")
    assert err < 1e-3, err
    assert meta["hook_name"] == f"blocks.{cfg['n_layers'] - 1}.hook_resid_post", meta
    assert acts["activations"].shape == (p * p, cfg["d_model"])

    rows = np.arange(p * p)
    assert (acts["a"] == rows // p).all() and (acts["b"] == rows % p).all()
    assert (acts["labels"] == split["labels"]).all()
    is_train = np.zeros(p * p, dtype=np.int64)
    is_train[split["train_idx"]] = 1
    assert (acts["is_train"] == is_train).all()

    all_acts, all_meta = read_safetensors(all_file)
    ans_acts, _ = read_safetensors(answer_l0)
    n_ctx = cfg["n_ctx"]
    assert all_acts["activations"].shape == (p * p * n_ctx, cfg["d_model"])
    assert (all_acts["position"] == np.tile(np.arange(n_ctx), p * p)).all()
    at_answer = all_acts["activations"][pos::n_ctx]
    err2 = float(np.abs(at_answer - ans_acts["activations"]).max())
    print(f"extract: --position all at '=' vs --position answer: max abs err {err2:.2e}")
    assert err2 < 1e-4, err2
    assert all_meta["position"] == "all"
    print("extract_check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
