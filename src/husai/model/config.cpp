#include "husai/model/config.hpp"

#include "husai/core/error.hpp"

namespace husai {

ActFn parse_act_fn(const std::string& name) {
  if (name == "relu") return ActFn::Relu;
  if (name == "gelu") return ActFn::Gelu;
  if (name == "gelu_new") return ActFn::GeluNew;
  if (name == "gelu_fast") return ActFn::GeluFast;
  if (name == "silu") return ActFn::Silu;
  throw Error("unknown act_fn '" + name + "' (expected relu, gelu, gelu_new, gelu_fast or silu)")
      .key("model.act_fn");
}

std::string to_string(ActFn act) {
  switch (act) {
    case ActFn::Relu:
      return "relu";
    case ActFn::Gelu:
      return "gelu";
    case ActFn::GeluNew:
      return "gelu_new";
    case ActFn::GeluFast:
      return "gelu_fast";
    case ActFn::Silu:
      return "silu";
  }
  return "relu";
}

void TransformerConfig::validate() const {
  auto positive = [](int64_t v, const char* key) {
    if (v < 1) throw Error("must be >= 1, got " + std::to_string(v)).key(key);
  };
  positive(n_layers, "model.n_layers");
  positive(d_model, "model.d_model");
  positive(n_heads, "model.n_heads");
  positive(d_head, "model.d_head");
  positive(d_mlp, "model.d_mlp");
  positive(d_vocab, "model.d_vocab");
  positive(n_ctx, "model.n_ctx");
  if (!(ln_eps > 0.0)) throw Error("must be > 0").key("model.ln_eps");
}

}  // namespace husai
