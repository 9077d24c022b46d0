#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "husai/model/config.hpp"

namespace husai {

// All parameters live in one flat buffer; each tensor is a named view into it with the TransformerLens
// name and shape, so saving is "write each view under its name" and AdamW is one loop over the buffer.
struct ParamEntry {
  std::string name;            // e.g. "blocks.0.attn.W_Q"
  std::vector<int64_t> shape;  // TransformerLens shape, e.g. [n_heads, d_model, d_head]
  int64_t offset = 0;          // into the flat buffer, in elements
  int64_t size = 0;            // product of shape
  bool is_weight = false;      // a W_* tensor (initialised N(0, init_range^2)); biases and LN are not
};

struct ParamLayout {
  std::vector<ParamEntry> entries;  // TransformerLens state-dict order
  int64_t total = 0;
  const ParamEntry* find(const std::string& name) const;
};

ParamLayout make_param_layout(const TransformerConfig& cfg);

template <typename T>
struct BlockParams {
  T* ln1_w = nullptr;  // [D] (null without LayerNorm)
  T* ln1_b = nullptr;
  T* W_Q = nullptr;  // [H, D, E]
  T* W_K = nullptr;
  T* W_V = nullptr;
  T* W_O = nullptr;  // [H, E, D]
  T* b_Q = nullptr;  // [H, E]
  T* b_K = nullptr;
  T* b_V = nullptr;
  T* b_O = nullptr;    // [D]
  T* ln2_w = nullptr;  // [D]
  T* ln2_b = nullptr;
  T* W_in = nullptr;   // [D, M]
  T* b_in = nullptr;   // [M]
  T* W_out = nullptr;  // [M, D]
  T* b_out = nullptr;  // [D]
};

template <typename T>
struct ParamViews {
  T* W_E = nullptr;    // [V, D]
  T* W_pos = nullptr;  // [n_ctx, D]
  std::vector<BlockParams<T>> blocks;
  T* lnf_w = nullptr;  // [D] (null without LayerNorm)
  T* lnf_b = nullptr;
  T* W_U = nullptr;  // [D, V]
  T* b_U = nullptr;  // [V]
};

template <typename T>
ParamViews<T> make_views(const TransformerConfig& cfg, const ParamLayout& layout, T* base);

// TransformerLens "gpt2" initialisation: every W_* ~ N(0, init_range^2), biases 0, LN w = 1, b = 0.
// Element i of tensor `name` is Philox(seed, stream_id(name)).normal(i): independent of thread count
// and of which other tensors exist.
template <typename T>
void init_params(const ParamLayout& layout, T* base, uint64_t seed, double init_range);

}  // namespace husai
