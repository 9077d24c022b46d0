#include "husai/model/params.hpp"

#include "husai/core/rng.hpp"
#include "husai/core/threading.hpp"

namespace husai {

const ParamEntry* ParamLayout::find(const std::string& name) const {
  for (const auto& e : entries) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

ParamLayout make_param_layout(const TransformerConfig& cfg) {
  ParamLayout layout;
  const int64_t D = cfg.d_model, H = cfg.n_heads, E = cfg.d_head, M = cfg.d_mlp, V = cfg.d_vocab;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool is_weight) {
    ParamEntry e;
    e.name = name;
    e.size = 1;
    for (const int64_t s : shape) e.size *= s;
    e.shape = std::move(shape);
    e.offset = layout.total;
    e.is_weight = is_weight;
    layout.total += e.size;
    layout.entries.push_back(std::move(e));
  };
  add("embed.W_E", {V, D}, true);
  add("pos_embed.W_pos", {cfg.n_ctx, D}, true);
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    const std::string b = "blocks." + std::to_string(l) + ".";
    if (cfg.layer_norm) {
      add(b + "ln1.w", {D}, false);
      add(b + "ln1.b", {D}, false);
    }
    add(b + "attn.W_Q", {H, D, E}, true);
    add(b + "attn.W_K", {H, D, E}, true);
    add(b + "attn.W_V", {H, D, E}, true);
    add(b + "attn.W_O", {H, E, D}, true);
    add(b + "attn.b_Q", {H, E}, false);
    add(b + "attn.b_K", {H, E}, false);
    add(b + "attn.b_V", {H, E}, false);
    add(b + "attn.b_O", {D}, false);
    if (cfg.layer_norm) {
      add(b + "ln2.w", {D}, false);
      add(b + "ln2.b", {D}, false);
    }
    add(b + "mlp.W_in", {D, M}, true);
    add(b + "mlp.b_in", {M}, false);
    add(b + "mlp.W_out", {M, D}, true);
    add(b + "mlp.b_out", {D}, false);
  }
  if (cfg.layer_norm) {
    add("ln_final.w", {D}, false);
    add("ln_final.b", {D}, false);
  }
  add("unembed.W_U", {D, V}, true);
  add("unembed.b_U", {V}, false);
  return layout;
}

template <typename T>
ParamViews<T> make_views(const TransformerConfig& cfg, const ParamLayout& layout, T* base) {
  auto at = [&](const std::string& name) -> T* {
    const ParamEntry* e = layout.find(name);
    return e ? base + e->offset : nullptr;
  };
  ParamViews<T> v;
  v.W_E = at("embed.W_E");
  v.W_pos = at("pos_embed.W_pos");
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    const std::string b = "blocks." + std::to_string(l) + ".";
    BlockParams<T> p;
    p.ln1_w = at(b + "ln1.w");
    p.ln1_b = at(b + "ln1.b");
    p.W_Q = at(b + "attn.W_Q");
    p.W_K = at(b + "attn.W_K");
    p.W_V = at(b + "attn.W_V");
    p.W_O = at(b + "attn.W_O");
    p.b_Q = at(b + "attn.b_Q");
    p.b_K = at(b + "attn.b_K");
    p.b_V = at(b + "attn.b_V");
    p.b_O = at(b + "attn.b_O");
    p.ln2_w = at(b + "ln2.w");
    p.ln2_b = at(b + "ln2.b");
    p.W_in = at(b + "mlp.W_in");
    p.b_in = at(b + "mlp.b_in");
    p.W_out = at(b + "mlp.W_out");
    p.b_out = at(b + "mlp.b_out");
    v.blocks.push_back(p);
  }
  v.lnf_w = at("ln_final.w");
  v.lnf_b = at("ln_final.b");
  v.W_U = at("unembed.W_U");
  v.b_U = at("unembed.b_U");
  return v;
}

template <typename T>
void init_params(const ParamLayout& layout, T* base, uint64_t seed, double init_range) {
  for (const ParamEntry& e : layout.entries) {
    T* p = base + e.offset;
    const bool is_ln_weight =
        e.name.ends_with("ln1.w") || e.name.ends_with("ln2.w") || e.name == "ln_final.w";
    if (e.is_weight) {
      const Philox rng(seed, stream_id(e.name));
      parallel_chunks(e.size, 4096, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          p[i] = static_cast<T>(init_range * rng.normal(static_cast<uint64_t>(i)));
        }
      });
    } else {
      const T value = is_ln_weight ? T(1) : T(0);
      for (int64_t i = 0; i < e.size; ++i) p[i] = value;
    }
  }
}

template ParamViews<float> make_views<float>(const TransformerConfig&, const ParamLayout&, float*);
template ParamViews<double> make_views<double>(const TransformerConfig&, const ParamLayout&, double*);
template void init_params<float>(const ParamLayout&, float*, uint64_t, double);
template void init_params<double>(const ParamLayout&, double*, uint64_t, double);

}  // namespace husai
