#include "husai/model/transformer.hpp"

#include <algorithm>

#include "husai/core/error.hpp"
#include "husai/core/threading.hpp"
#include "husai/model/embed.hpp"
#include "husai/model/layernorm.hpp"
#include "husai/model/mlp.hpp"
#include "husai/model/unembed.hpp"

namespace husai {
namespace {

template <typename T>
void add_into(T* dst, const T* src, int64_t n) {
  parallel_chunks(n, 65536, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) dst[i] += src[i];
  });
}

template <typename T>
void sum_into(T* dst, const T* a, const T* b, int64_t n) {
  parallel_chunks(n, 65536, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) dst[i] = a[i] + b[i];
  });
}

template <typename T>
void zero(std::vector<T>& v, int64_t n) {
  std::fill_n(v.begin(), n, T(0));
}

// resid_pre rows of the query positions: row b*Q + i of the block output sits at b*T + (T-Q) + i.
template <typename T>
void gather_query_rows(T* dst, const T* src, int64_t B, int64_t n_pos, int64_t n_query, int64_t D) {
  parallel_chunks(B, 256, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      std::copy_n(src + (b * n_pos + n_pos - n_query) * D, n_query * D, dst + b * n_query * D);
    }
  });
}

template <typename T>
AttentionWeights<T> attention_weights(const BlockParams<T>& p) {
  return {p.W_Q, p.W_K, p.W_V, p.W_O, p.b_Q, p.b_K, p.b_V, p.b_O};
}

template <typename T>
AttentionActs<T> attention_acts(BlockActs<T>& a) {
  return {a.w_q.data(), a.w_kv.data(), a.x_q.data(), a.q.data(), a.kv.data(), a.pattern.data(), a.z.data()};
}

}  // namespace

const char* hook_site_name(HookSite site) {
  switch (site) {
    case HookSite::ResidPre:
      return "resid_pre";
    case HookSite::AttnOut:
      return "attn_out";
    case HookSite::ResidMid:
      return "resid_mid";
    case HookSite::MlpOut:
      return "mlp_out";
    case HookSite::ResidPost:
      return "resid_post";
  }
  return "resid_post";
}

std::string hook_point_name(int64_t layer, HookSite site) {
  return "blocks." + std::to_string(layer) + ".hook_" + hook_site_name(site);
}

HookSite parse_hook_site(const std::string& name) {
  for (HookSite s :
       {HookSite::ResidPre, HookSite::AttnOut, HookSite::ResidMid, HookSite::MlpOut, HookSite::ResidPost}) {
    if (name == hook_site_name(s)) return s;
  }
  throw Error("unknown site '" + name + "' (expected resid_pre, resid_mid, attn_out, mlp_out or resid_post)");
}

template <typename T>
void TransformerWorkspace<T>::resize(const TransformerConfig& cfg, int64_t batch, int64_t positions,
                                     int64_t queries) {
  B = batch;
  n_pos = positions;
  n_query = queries;
  const int64_t D = cfg.d_model, HE = cfg.n_heads * cfg.d_head, M = cfg.d_mlp, V = cfg.d_vocab;
  const auto L = static_cast<size_t>(cfg.n_layers);
  const int64_t rows = B * n_pos;
  resid.resize(L + 1);
  blocks.resize(L);
  auto sz = [](int64_t n) { return static_cast<size_t>(n); };
  for (size_t l = 0; l < L; ++l) {
    const int64_t q_rows = B * out_positions(cfg, static_cast<int64_t>(l));
    const int64_t q_pos = out_positions(cfg, static_cast<int64_t>(l));
    resid[l].resize(sz(rows * D));
    BlockActs<T>& a = blocks[l];
    if (cfg.layer_norm) {
      a.ln1_out.resize(sz(rows * D));
      a.ln1_mean.resize(sz(rows));
      a.ln1_rstd.resize(sz(rows));
      a.ln2_out.resize(sz(q_rows * D));
      a.ln2_mean.resize(sz(q_rows));
      a.ln2_rstd.resize(sz(q_rows));
    }
    a.w_q.resize(sz(D * HE));
    a.w_kv.resize(sz(D * 2 * HE));
    a.x_q.resize(sz(q_rows * D));
    a.q.resize(sz(q_rows * HE));
    a.kv.resize(sz(rows * 2 * HE));
    a.pattern.resize(sz(B * cfg.n_heads * q_pos * n_pos));
    a.z.resize(sz(q_rows * HE));
    a.attn_out.resize(sz(q_rows * D));
    a.resid_mid.resize(sz(q_rows * D));
    a.mlp_pre.resize(sz(q_rows * M));
    a.mlp_post.resize(sz(q_rows * M));
    a.mlp_out.resize(sz(q_rows * D));
  }
  const int64_t out_rows = B * n_query;
  resid[L].resize(sz(out_rows * D));
  if (cfg.layer_norm) {
    lnf_out.resize(sz(out_rows * D));
    lnf_mean.resize(sz(out_rows));
    lnf_rstd.resize(sz(out_rows));
  }
  logits.resize(sz(out_rows * V));
}

template <typename T>
void transformer_forward(const TransformerConfig& cfg, const ParamViews<T>& params,
                         TransformerWorkspace<T>& ws, const int64_t* tokens, int64_t B, int64_t n_pos,
                         int64_t n_query, const HookFn<T>* hook) {
  if (n_pos < 1 || n_pos > cfg.n_ctx || n_query < 1 || n_query > n_pos) {
    throw Error("transformer_forward: bad positions (n_pos " + std::to_string(n_pos) + ", n_query " +
                std::to_string(n_query) + ", n_ctx " + std::to_string(cfg.n_ctx) + ")");
  }
  ws.resize(cfg, B, n_pos, n_query);
  const int64_t D = cfg.d_model, M = cfg.d_mlp, V = cfg.d_vocab, L = cfg.n_layers;
  const int64_t rows = B * n_pos;
  auto call_hook = [&](int64_t layer, HookSite site, std::vector<T>& acts, int64_t positions) {
    if (hook && *hook) (*hook)(layer, site, acts.data(), B, positions, n_pos - positions);
  };

  embed_forward(ws.resid[0].data(), tokens, cfg.n_ctx, params.W_E, params.W_pos, B, n_pos, D);
  for (int64_t l = 0; l < L; ++l) {
    const auto li = static_cast<size_t>(l);
    const BlockParams<T>& p = params.blocks[li];
    BlockActs<T>& a = ws.blocks[li];
    const int64_t q_pos = ws.out_positions(cfg, l);
    const int64_t q_rows = B * q_pos;
    T* resid_pre = ws.resid[li].data();
    call_hook(l, HookSite::ResidPre, ws.resid[li], n_pos);

    const T* attn_in = resid_pre;
    if (cfg.layer_norm) {
      layernorm_forward(a.ln1_out.data(), a.ln1_mean.data(), a.ln1_rstd.data(), resid_pre, p.ln1_w, p.ln1_b,
                        rows, D, cfg.ln_eps);
      attn_in = a.ln1_out.data();
    }
    AttentionActs<T> acts = attention_acts(a);
    attention_forward(a.attn_out.data(), acts, attn_in, attention_weights(p),
                      AttentionDims{B, n_pos, q_pos, D, cfg.n_heads, cfg.d_head});
    call_hook(l, HookSite::AttnOut, a.attn_out, q_pos);

    gather_query_rows(a.resid_mid.data(), resid_pre, B, n_pos, q_pos, D);
    add_into(a.resid_mid.data(), a.attn_out.data(), q_rows * D);
    call_hook(l, HookSite::ResidMid, a.resid_mid, q_pos);

    const T* mlp_in = a.resid_mid.data();
    if (cfg.layer_norm) {
      layernorm_forward(a.ln2_out.data(), a.ln2_mean.data(), a.ln2_rstd.data(), a.resid_mid.data(), p.ln2_w,
                        p.ln2_b, q_rows, D, cfg.ln_eps);
      mlp_in = a.ln2_out.data();
    }
    mlp_forward(a.mlp_out.data(), a.mlp_pre.data(), a.mlp_post.data(), mlp_in,
                MlpWeights<T>{p.W_in, p.b_in, p.W_out, p.b_out}, cfg.act_fn, q_rows, D, M);
    call_hook(l, HookSite::MlpOut, a.mlp_out, q_pos);

    sum_into(ws.resid[li + 1].data(), a.resid_mid.data(), a.mlp_out.data(), q_rows * D);
    call_hook(l, HookSite::ResidPost, ws.resid[li + 1], q_pos);
  }
  const int64_t out_rows = B * n_query;
  const T* final_in = ws.resid[static_cast<size_t>(L)].data();
  if (cfg.layer_norm) {
    layernorm_forward(ws.lnf_out.data(), ws.lnf_mean.data(), ws.lnf_rstd.data(), final_in, params.lnf_w,
                      params.lnf_b, out_rows, D, cfg.ln_eps);
    final_in = ws.lnf_out.data();
  }
  unembed_forward(ws.logits.data(), final_in, params.W_U, params.b_U, out_rows, D, V);
}

template <typename T>
void transformer_backward(const TransformerConfig& cfg, const ParamViews<T>& params,
                          const ParamViews<T>& grads, TransformerWorkspace<T>& ws, const int64_t* tokens,
                          const T* dlogits) {
  const int64_t B = ws.B, n_pos = ws.n_pos, n_query = ws.n_query;
  const int64_t D = cfg.d_model, HE = cfg.n_heads * cfg.d_head, M = cfg.d_mlp, V = cfg.d_vocab,
                L = cfg.n_layers;
  const int64_t rows = B * n_pos;
  auto sz = [](int64_t n) { return static_cast<size_t>(n); };
  ws.d_resid.resize(sz(rows * D));
  ws.d_resid_next.resize(sz(rows * D));
  ws.d_mid.resize(sz(rows * D));
  ws.d_ln.resize(sz(rows * D));
  ws.d_lnf.resize(sz(B * n_query * D));
  ws.d_mlp_pre.resize(sz(rows * M));
  ws.dz.resize(sz(rows * HE));
  ws.dq.resize(sz(rows * HE));
  ws.dkv.resize(sz(rows * 2 * HE));
  ws.dx_q.resize(sz(rows * D));
  ws.dw_q.resize(sz(D * HE));
  ws.dw_kv.resize(sz(D * 2 * HE));

  // d resid_L (the last block's output rows, B*Q).
  const int64_t out_rows = B * n_query;
  zero(ws.d_resid_next, out_rows * D);
  if (cfg.layer_norm) {
    zero(ws.d_lnf, out_rows * D);
    unembed_backward(ws.d_lnf.data(), grads.W_U, grads.b_U, dlogits, ws.lnf_out.data(), params.W_U, out_rows,
                     D, V);
    layernorm_backward(ws.d_resid_next.data(), grads.lnf_w, grads.lnf_b, ws.d_lnf.data(),
                       ws.resid[static_cast<size_t>(L)].data(), ws.lnf_mean.data(), ws.lnf_rstd.data(),
                       params.lnf_w, out_rows, D);
  } else {
    unembed_backward(ws.d_resid_next.data(), grads.W_U, grads.b_U, dlogits,
                     ws.resid[static_cast<size_t>(L)].data(), params.W_U, out_rows, D, V);
  }

  for (int64_t l = L - 1; l >= 0; --l) {
    const auto li = static_cast<size_t>(l);
    const BlockParams<T>& p = params.blocks[li];
    const BlockParams<T>& g = grads.blocks[li];
    BlockActs<T>& a = ws.blocks[li];
    const int64_t q_pos = ws.out_positions(cfg, l);
    const int64_t q_rows = B * q_pos;
    // d_resid_next holds dL/d resid_post [q_rows, D]. resid_post = resid_mid + mlp_out.
    std::copy_n(ws.d_resid_next.begin(), q_rows * D, ws.d_mid.begin());
    const T* mlp_in = cfg.layer_norm ? a.ln2_out.data() : a.resid_mid.data();
    T* d_mlp_in = ws.d_mid.data();
    if (cfg.layer_norm) {
      zero(ws.d_ln, q_rows * D);
      d_mlp_in = ws.d_ln.data();
    }
    mlp_backward(d_mlp_in, MlpGrads<T>{g.W_in, g.b_in, g.W_out, g.b_out}, ws.d_mlp_pre.data(),
                 ws.d_resid_next.data(), mlp_in, a.mlp_pre.data(), a.mlp_post.data(),
                 MlpWeights<T>{p.W_in, p.b_in, p.W_out, p.b_out}, cfg.act_fn, q_rows, D, M);
    if (cfg.layer_norm) {
      layernorm_backward(ws.d_mid.data(), g.ln2_w, g.ln2_b, ws.d_ln.data(), a.resid_mid.data(),
                         a.ln2_mean.data(), a.ln2_rstd.data(), p.ln2_w, q_rows, D);
    }
    // d_mid = dL/d resid_mid. resid_mid = resid_pre[query rows] + attn_out.
    zero(ws.d_resid, rows * D);
    parallel_chunks(B, 256, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        std::copy_n(ws.d_mid.begin() + b * q_pos * D, q_pos * D,
                    ws.d_resid.begin() + (b * n_pos + n_pos - q_pos) * D);
      }
    });
    const T* attn_in = cfg.layer_norm ? a.ln1_out.data() : ws.resid[li].data();
    T* d_attn_in = ws.d_resid.data();
    if (cfg.layer_norm) {
      zero(ws.d_ln, rows * D);
      d_attn_in = ws.d_ln.data();
    }
    AttentionScratch<T> scratch{ws.dz.data(),   ws.dq.data(),   ws.dkv.data(),
                                ws.dx_q.data(), ws.dw_q.data(), ws.dw_kv.data()};
    AttentionActs<T> acts = attention_acts(a);
    attention_backward(d_attn_in, AttentionGrads<T>{g.W_Q, g.W_K, g.W_V, g.W_O, g.b_Q, g.b_K, g.b_V, g.b_O},
                       scratch, ws.d_mid.data(), acts, attn_in, attention_weights(p),
                       AttentionDims{B, n_pos, q_pos, D, cfg.n_heads, cfg.d_head});
    if (cfg.layer_norm) {
      layernorm_backward(ws.d_resid.data(), g.ln1_w, g.ln1_b, ws.d_ln.data(), ws.resid[li].data(),
                         a.ln1_mean.data(), a.ln1_rstd.data(), p.ln1_w, rows, D);
    }
    std::swap(ws.d_resid, ws.d_resid_next);
  }
  embed_backward(grads.W_E, grads.W_pos, ws.d_resid_next.data(), tokens, cfg.n_ctx, B, n_pos, D);
}

template struct TransformerWorkspace<float>;
template struct TransformerWorkspace<double>;
template void transformer_forward<float>(const TransformerConfig&, const ParamViews<float>&,
                                         TransformerWorkspace<float>&, const int64_t*, int64_t, int64_t,
                                         int64_t, const HookFn<float>*);
template void transformer_forward<double>(const TransformerConfig&, const ParamViews<double>&,
                                          TransformerWorkspace<double>&, const int64_t*, int64_t, int64_t,
                                          int64_t, const HookFn<double>*);
template void transformer_backward<float>(const TransformerConfig&, const ParamViews<float>&,
                                          const ParamViews<float>&, TransformerWorkspace<float>&,
                                          const int64_t*, const float*);
template void transformer_backward<double>(const TransformerConfig&, const ParamViews<double>&,
                                           const ParamViews<double>&, TransformerWorkspace<double>&,
                                           const int64_t*, const double*);

}  // namespace husai
