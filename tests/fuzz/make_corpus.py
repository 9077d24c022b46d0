#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/ (run from anywhere).

Seeds are small valid files and the edge cases each parser must refuse cleanly. Inputs named `regress-*` are
regression inputs of bugs the fuzzers found; this script never touches them. Re-running it rewrites the seeds
with the same bytes."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def st(header, data=b"", pad=True, size=None):
    """safetensors bytes: u64 header size, header JSON (dict or raw bytes), data."""
    h = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h) if size is None else size) + h + data


def f32(vals):
    return struct.pack("<%df" % len(vals), *vals)


# ---------------------------------------------------------------------------------------------------- safetensors
T = "safetensors"
out(T, "valid_f32_2x3", st({"x": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}},
                           f32([1, 2, 3, 4, 5, 6])))
dtypes = [("F64", 8), ("F32", 4), ("F16", 2), ("BF16", 2), ("I64", 8), ("I32", 4), ("I16", 2), ("I8", 1),
          ("U8", 1), ("BOOL", 1)]
hdr, data = {}, b""
for i, (name, size) in enumerate(dtypes):
    hdr["t_" + name] = {"dtype": name, "shape": [2], "data_offsets": [len(data), len(data) + 2 * size]}
    data += bytes((i * 17 + j) % 256 for j in range(2 * size))
hdr["__metadata__"] = {"format": "pt", "producer": "husai"}
out(T, "valid_every_dtype", st(hdr, data))
out(T, "valid_scalar", st({"s": {"dtype": "F64", "shape": [], "data_offsets": [0, 8]}}, struct.pack("<d", 3.5)))
out(T, "valid_zero_rows", st({"z": {"dtype": "F32", "shape": [0, 4], "data_offsets": [0, 0]},
                              "y": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, struct.pack("<q", -7)))
out(T, "valid_empty_header", st({}))
out(T, "valid_metadata_only", st({"__metadata__": {"a": "b"}}))
out(T, "valid_metadata_null", st({"__metadata__": None}))
out(T, "valid_unpadded_header", st({"x": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]}}, b"abc", pad=False))
out(T, "valid_nan_inf", st({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}},
                           f32([float("nan"), float("inf"), -float("inf")])))
out(T, "bad_too_short", b"\x08\x00\x00")
out(T, "bad_header_beyond_file", st({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, f32([1]),
                                    size=4096))
out(T, "bad_header_size_huge", struct.pack("<Q", 2**63 + 5) + b"{}")
out(T, "bad_truncated_data", st({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, f32([1, 2])))
out(T, "bad_overlap", st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, f32([1, 2, 3])))
out(T, "bad_gap", st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, f32([1, 2])))
out(T, "bad_trailing", st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, f32([1, 2])))
out(T, "bad_offsets_reversed", st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, f32([1])))
out(T, "bad_shape_mismatch", st({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, f32([1, 2])))
out(T, "bad_dtype_unknown", st({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\x00"))
out(T, "bad_negative_dim", st({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}))
out(T, "bad_shape_overflow", st({"a": {"dtype": "F64", "shape": [2**62, 2**62], "data_offsets": [0, 0]}}))
out(T, "bad_duplicate_key", st(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                               b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"x"))
out(T, "bad_not_json", st(b"{not json", b""))
out(T, "bad_header_array", st(b"[1,2,3]"))
out(T, "bad_invalid_utf8", st(b'{"\xff\xfe":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"x"))
out(T, "bad_metadata_number", st({"__metadata__": {"a": 1}}))
out(T, "bad_offsets_float", st({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1.5]}}, b"x"))

# ------------------------------------------------------------------------------------------------------- config
C = "config"
for sub in ("transformer", "sae"):
    for fn in sorted(os.listdir(os.path.join(ROOT, "configs", sub))):
        with open(os.path.join(ROOT, "configs", sub, fn), "rb") as f:
            out(C, "valid_%s_%s" % (sub, fn.replace(".yaml", "")), f.read())
out(C, "valid_empty", "")
out(C, "valid_comment_only", "# nothing here\n")
out(C, "valid_flow", "{model: {d_model: 64, n_heads: 4}, training: {batch_size: full, betas: [0.9, 0.98]}}\n")
out(C, "valid_anchor", "training: &t {lr: 0.01}\n")
out(C, "valid_set_lines", "training.lr=0.01\nmodel.d_model=64\ntask.modulus=97\n")
out(C, "valid_set_sae", "sae.k=8\ntraining.seeds=[1,2,3]\ntraining.data_order_seed=null\n")
out(C, "valid_nulls", "model:\n  d_head: null\ntraining:\n  init_range: ~\n")
out(C, "valid_int_as_float", "training:\n  epochs: 1e3\n  lr: 1\n")
out(C, "bad_unknown_key", "model:\n  d_modle: 64\n")
out(C, "bad_unknown_section", "optimiser:\n  lr: 0.1\n")
out(C, "bad_mistyped", "model:\n  d_model: sixty-four\n")
out(C, "bad_bool_yes", "sae:\n  normalize_decoder: yes\n")
out(C, "bad_modulus_1", "task:\n  modulus: 1\n")
out(C, "bad_not_divisible", "model:\n  d_model: 130\n  n_heads: 4\n")
out(C, "bad_k_zero", "sae:\n  k: 0\n")
out(C, "bad_duplicate", "training:\n  lr: 0.1\n  lr: 0.2\n")
out(C, "bad_section_scalar", "model: 3\n")
out(C, "bad_value_map", "training:\n  lr: {a: 1}\n")
out(C, "bad_list_length", "training:\n  betas: [0.9]\n")
out(C, "bad_nan", "training:\n  lr: .nan\n")
out(C, "bad_syntax", "model:\n  d_model: [64\n")
out(C, "bad_tab", "model:\n\td_model: 64\n")
out(C, "bad_top_list", "- a\n- b\n")
out(C, "bad_two_docs", "model:\n  d_model: 64\n---\nmodel:\n  d_model: 32\n")
out(C, "bad_alias_loop", "a: &a [*a]\n")
out(C, "bad_deep", "[" * 200 + "]" * 200 + "\n")
out(C, "bad_set_no_eq", "training.lr\n")
out(C, "bad_set_empty_key", "=3\n")
out(C, "bad_seeds_repeated", "training.seeds=[1,1]\n")
out(C, "bad_huge_int", "training:\n  epochs: 99999999999999999999999\n")

# ---------------------------------------------------------------------------------------------------- saelens
S = "saelens"


def cfg(**kw):
    return json.dumps(kw, indent=2)


def sae_weights(d_in, d_sae, extra=()):
    hdr, data = {}, b""
    tensors = [("W_enc", [d_in, d_sae]), ("W_dec", [d_sae, d_in]), ("b_enc", [d_sae]), ("b_dec", [d_in])]
    tensors += [(n, [d_sae]) for n in extra]
    for name, shape in sorted(tensors):
        n = 1
        for s in shape:
            n *= s
        hdr[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + 4 * n]}
        data += f32([((i * 7) % 11 - 5) * 0.1 for i in range(n)])
    return st(hdr, data)


v6 = dict(d_in=4, d_sae=8, dtype="float32", device="cpu", apply_b_dec_to_input=True,
          normalize_activations="none", reshape_activations="none", metadata={"hook_name": "blocks.1.hook_resid_post"})
out(S, "valid_standard", cfg(architecture="standard", **v6))
out(S, "valid_topk", cfg(architecture="topk", k=3, **v6))
out(S, "valid_jumprelu", cfg(architecture="jumprelu", **v6))
out(S, "valid_gated", cfg(architecture="gated", **v6))
out(S, "valid_pre_v6_topk", cfg(d_in=4, d_sae=8, activation_fn_str="topk", activation_fn_kwargs={"k": 2}))
out(S, "valid_sparsify", cfg(k=3, d_in=4, expansion_factor=2))
out(S, "valid_null_options", cfg(d_in=4, d_sae=8, architecture=None, normalize_activations=None))
out(S, "valid_with_weights", cfg(architecture="topk", k=2, d_in=3, d_sae=5).encode() + b"\0" + sae_weights(3, 5))
out(S, "valid_jumprelu_weights", cfg(architecture="jumprelu", d_in=2, d_sae=3).encode() + b"\0" +
    sae_weights(2, 3, ["threshold"]))
out(S, "bad_not_object", "[1, 2, 3]")
out(S, "bad_not_json", "{\"d_in\": 4,")
out(S, "bad_d_in_string", cfg(d_in="4", d_sae=8))
out(S, "bad_d_in_negative", cfg(d_in=-4, d_sae=8))
out(S, "bad_d_in_huge", cfg(d_in=2**62, d_sae=2**62))
out(S, "bad_d_in_float", cfg(d_in=4.5, d_sae=8))
out(S, "bad_architecture_number", cfg(architecture=3, d_in=4, d_sae=8))
out(S, "bad_architecture_unknown", cfg(architecture="crosscoder", d_in=4, d_sae=8))
out(S, "bad_k_missing", cfg(architecture="topk", d_in=4, d_sae=8))
out(S, "bad_k_too_big", cfg(architecture="topk", k=9, d_in=4, d_sae=8))
out(S, "bad_k_string", cfg(architecture="topk", k="3", d_in=4, d_sae=8))
out(S, "bad_kwargs_not_object", cfg(d_in=4, d_sae=8, activation_fn_str="topk", activation_fn_kwargs=[2]))
out(S, "bad_kwargs_k_string", cfg(d_in=4, d_sae=8, activation_fn_str="topk", activation_fn_kwargs={"k": "2"}))
out(S, "bad_apply_b_dec_string", cfg(d_in=4, d_sae=8, apply_b_dec_to_input="yes"))
out(S, "bad_normalize", cfg(d_in=4, d_sae=8, normalize_activations="expected_average_only_in"))
out(S, "bad_normalize_number", cfg(d_in=4, d_sae=8, normalize_activations=1))
out(S, "bad_sparsify_d_in_string", cfg(k=3, d_in="four"))
out(S, "bad_shape_mismatch", cfg(architecture="standard", d_in=4, d_sae=5).encode() + b"\0" + sae_weights(3, 5))
out(S, "bad_jumprelu_no_threshold", cfg(architecture="jumprelu", d_in=2, d_sae=3).encode() + b"\0" +
    sae_weights(2, 3))
print("corpora written under", os.path.join(HERE, "corpus"))
