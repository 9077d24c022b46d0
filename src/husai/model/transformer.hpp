#pragma once

// The whole model, TransformerLens semantics, composed from the per-layer forward/backward pairs:
//   resid_0 = embed(tokens) + pos_embed
//   per block l: resid_mid = resid_pre + attn(LN1(resid_pre)); resid_post = resid_mid + mlp(LN2(resid_mid))
//   logits = LN_final(resid_L) @ W_U + b_U
// Shapes: B = batch rows, T = positions computed (a prefix of each row's n_ctx tokens: positions after
// the scored one can never reach the loss through causal attention, so training stops at it),
// Q = positions the *last* block computes outputs for (1 when only the scored position matters, T for
// everything), D = d_model, V = d_vocab. Earlier blocks always compute all T positions, because the last
// block's keys and values need them.

#include <cstdint>
#include <functional>
#include <vector>

#include "husai/model/attention.hpp"
#include "husai/model/config.hpp"
#include "husai/model/params.hpp"

namespace husai {

// TransformerLens hook points of a block.
enum class HookSite { ResidPre, AttnOut, ResidMid, MlpOut, ResidPost };
const char* hook_site_name(HookSite site);  // "resid_pre", ...
HookSite parse_hook_site(const std::string& name);
// TransformerLens hook point name: "blocks.<layer>.hook_<site>".
std::string hook_point_name(int64_t layer, HookSite site);

// Called after each hook point is computed, with its activations [B * n_pos, D] (row = b*n_pos + i,
// position first_pos + i); it may read or overwrite them (activation patching, SAE splicing).
template <typename T>
using HookFn =
    std::function<void(int64_t layer, HookSite site, T* acts, int64_t B, int64_t n_pos, int64_t first_pos)>;

template <typename T>
struct BlockActs {
  std::vector<T> ln1_out, ln1_mean, ln1_rstd;  // [B*T, D], [B*T]
  std::vector<T> w_q, w_kv, x_q, q, kv, pattern, z;
  std::vector<T> attn_out;   // [B*Q_l, D]
  std::vector<T> resid_mid;  // [B*Q_l, D]
  std::vector<T> ln2_out, ln2_mean, ln2_rstd;
  std::vector<T> mlp_pre, mlp_post;  // [B*Q_l, M]
  std::vector<T> mlp_out;            // [B*Q_l, D]
};

// Every activation of one forward pass plus the backward scratch; sized once per (B, T, Q) and reused,
// so the training loop does not allocate.
template <typename T>
struct TransformerWorkspace {
  int64_t B = 0, n_pos = 0, n_query = 0;
  std::vector<std::vector<T>> resid;  // n_layers + 1; resid[l] = resid_pre of block l; resid[L] = final
  std::vector<BlockActs<T>> blocks;
  std::vector<T> lnf_out, lnf_mean, lnf_rstd;  // [B*Q, D], [B*Q]
  std::vector<T> logits;                       // [B*Q, V]
  // Backward scratch.
  std::vector<T> d_resid, d_resid_next, d_mid, d_ln, d_lnf, d_mlp_pre;
  std::vector<T> dz, dq, dkv, dx_q, dw_q, dw_kv;

  void resize(const TransformerConfig& cfg, int64_t batch, int64_t positions, int64_t queries);
  // Rows per block output: B*T for all but the last block, B*Q for the last.
  int64_t out_positions(const TransformerConfig& cfg, int64_t layer) const {
    return layer == cfg.n_layers - 1 ? n_query : n_pos;
  }
};

// Runs the model on tokens [B, n_ctx] (row stride cfg.n_ctx) over positions [0, n_pos), with the last
// block computing outputs for its last n_query positions; ws.logits holds [B*n_query, V].
template <typename T>
void transformer_forward(const TransformerConfig& cfg, const ParamViews<T>& params,
                         TransformerWorkspace<T>& ws, const int64_t* tokens, int64_t B, int64_t n_pos,
                         int64_t n_query, const HookFn<T>* hook = nullptr);

// Backpropagates dlogits [B*n_query, V] through the pass last run on ws; grads += dL/dparams.
template <typename T>
void transformer_backward(const TransformerConfig& cfg, const ParamViews<T>& params,
                          const ParamViews<T>& grads, TransformerWorkspace<T>& ws, const int64_t* tokens,
                          const T* dlogits);

}  // namespace husai
