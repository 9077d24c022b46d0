// Whole-model finite-difference gradient check (double precision): the composed backward pass of
// embed -> blocks (LN, attention, MLP) -> LN_final -> unembed -> cross-entropy against numerical
// derivatives, for both the training path (positions up to '=', last block on the scored position
// only) and the full path (every position, every logit).

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "gradcheck.hpp"
#include "husai/data/modular_arithmetic.hpp"
#include "husai/model/cross_entropy.hpp"
#include "husai/model/params.hpp"
#include "husai/model/transformer.hpp"

namespace husai {
namespace {

struct Case {
  bool layer_norm;
  ActFn act;
  TokenFormat format;
  int64_t n_layers;
  bool answer_only;
};

// Readable parameter text in test listings (gtest would otherwise print the raw bytes, padding included).
void PrintTo(const Case& c, std::ostream* os) {
  *os << (c.layer_norm ? "LN " : "noLN ") << to_string(c.act) << " " << to_string(c.format) << " L"
      << c.n_layers << (c.answer_only ? " answer" : " full");
}

class ModelGradients : public ::testing::TestWithParam<Case> {};

TEST_P(ModelGradients, EveryParameter) {
  const Case c = GetParam();
  ModularTask task;
  task.modulus = 5;
  task.format = c.format;
  TransformerConfig cfg;
  cfg.n_layers = c.n_layers;
  cfg.d_model = 8;
  cfg.n_heads = 2;
  cfg.d_head = 3;
  cfg.d_mlp = 10;
  cfg.d_vocab = task.d_vocab();
  cfg.n_ctx = task.n_ctx();
  cfg.act_fn = c.act;
  cfg.layer_norm = c.layer_norm;
  const ParamLayout layout = make_param_layout(cfg);
  std::vector<double> params(static_cast<size_t>(layout.total));
  init_params(layout, params.data(), 7, 0.8 / std::sqrt(8.0));
  // Non-trivial biases and LN parameters, so their gradients are exercised away from 0/1.
  std::vector<double> noise(params.size());
  gradcheck::fill_normal(noise, 99, 0.1);
  for (size_t i = 0; i < params.size(); ++i) params[i] += noise[i];

  const std::vector<int64_t> all_tokens = task.tokens();
  const std::vector<int64_t> all_labels = task.labels();
  const int64_t B = 6;
  std::vector<int64_t> tokens, labels;
  for (int64_t i = 0; i < B; ++i) {
    const int64_t row = (i * 7 + 3) % task.n_pairs();
    tokens.insert(tokens.end(), all_tokens.begin() + row * cfg.n_ctx,
                  all_tokens.begin() + (row + 1) * cfg.n_ctx);
    labels.push_back(all_labels[static_cast<size_t>(row)]);
  }
  const int64_t n_pos = c.answer_only ? task.answer_position() + 1 : cfg.n_ctx;
  const int64_t n_query = c.answer_only ? 1 : n_pos;
  const int64_t V = cfg.d_vocab;
  std::vector<double> r(static_cast<size_t>(B * n_query * V));
  gradcheck::fill_normal(r, 5);

  TransformerWorkspace<double> ws;
  std::vector<double> losses(static_cast<size_t>(B));
  auto loss = [&] {
    transformer_forward(cfg, make_views(cfg, layout, params.data()), ws, tokens.data(), B, n_pos, n_query);
    if (c.answer_only) {
      cross_entropy_forward_backward<double>(losses.data(), nullptr, nullptr, ws.logits.data(), labels.data(),
                                             B, V, 0.0);
      return std::accumulate(losses.begin(), losses.end(), 0.0) / static_cast<double>(B);
    }
    return std::inner_product(ws.logits.begin(), ws.logits.end(), r.begin(), 0.0);
  };
  loss();
  std::vector<double> dlogits(ws.logits.size());
  if (c.answer_only) {
    cross_entropy_forward_backward<double>(losses.data(), nullptr, dlogits.data(), ws.logits.data(),
                                           labels.data(), B, V, 1.0 / static_cast<double>(B));
  } else {
    dlogits = r;
  }
  std::vector<double> grads(params.size(), 0.0);
  const ParamViews<double> pv = make_views(cfg, layout, params.data());
  transformer_backward(cfg, pv, make_views(cfg, layout, grads.data()), ws, tokens.data(), dlogits.data());
  for (const ParamEntry& e : layout.entries) {
    gradcheck::expect_gradient_matches(e.name, loss, params.data() + e.offset, grads.data() + e.offset,
                                       e.size, 1, 1e-6, 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, ModelGradients,
                         ::testing::Values(Case{true, ActFn::Relu, TokenFormat::Seq7, 2, true},
                                           Case{true, ActFn::Relu, TokenFormat::Seq7, 2, false},
                                           Case{false, ActFn::Gelu, TokenFormat::Abeq, 1, true},
                                           Case{false, ActFn::Silu, TokenFormat::Abeq, 2, false},
                                           Case{true, ActFn::GeluNew, TokenFormat::Seq7, 1, true},
                                           Case{true, ActFn::GeluFast, TokenFormat::Abeq, 3, true}),
                         [](const auto& param_info) {
                           const Case& c = param_info.param;
                           return std::string(c.layer_norm ? "LN_" : "noLN_") + to_string(c.act) + "_" +
                                  to_string(c.format) + "_L" + std::to_string(c.n_layers) +
                                  (c.answer_only ? "_answer" : "_full");
                         });

}  // namespace
}  // namespace husai
