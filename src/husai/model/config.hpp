#pragma once

#include <cstdint>
#include <string>

namespace husai {

enum class ActFn { Relu, Gelu, GeluNew, GeluFast, Silu };

ActFn parse_act_fn(const std::string& name);
std::string to_string(ActFn act);

// The architecture, in TransformerLens' terms (HookedTransformerConfig keys).
struct TransformerConfig {
  int64_t n_layers = 2;
  int64_t d_model = 128;
  int64_t n_heads = 4;
  int64_t d_head = 32;
  int64_t d_mlp = 512;
  int64_t d_vocab = 117;
  int64_t n_ctx = 7;
  ActFn act_fn = ActFn::Relu;
  bool layer_norm = true;  // normalization_type "LN" (true) or None (false)
  double ln_eps = 1e-5;

  // Throws husai::Error naming the offending key.
  void validate() const;
};

}  // namespace husai
