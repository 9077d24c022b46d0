// Causal proxy: with an SAE that reconstructs exactly (latent d = ReLU(x_d), latent d + D = ReLU(-x_d)), the
// reconstruction-only condition equals the clean model, and ablating chosen latents equals splicing the
// hand-made reconstruction with those parts of x removed; the stable/unstable selection skips dead latents
// and breaks ties by index; the random control is a pure function of its seed.

#include <gtest/gtest.h>

#include <vector>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"
#include "husai/metrics/causal.hpp"
#include "husai/model/params.hpp"

namespace husai {
namespace {

constexpr int64_t kD = 8;

LoadedModel tiny_model() {
  LoadedModel m;
  m.task.modulus = 7;
  m.cfg.n_layers = 2;
  m.cfg.d_model = kD;
  m.cfg.n_heads = 2;
  m.cfg.d_head = 4;
  m.cfg.d_mlp = 16;
  m.cfg.d_vocab = m.task.d_vocab();
  m.cfg.n_ctx = m.task.n_ctx();
  m.layout = make_param_layout(m.cfg);
  m.params.resize(static_cast<size_t>(m.layout.total));
  init_params(m.layout, m.params.data(), 11, 1.0);
  return m;
}

SaeModel split_sign_sae() {
  SaeModel s;
  s.architecture = "standard";
  s.d_in = kD;
  s.d_sae = 2 * kD;
  s.apply_b_dec_to_input = false;
  s.W_enc.assign(static_cast<size_t>(kD * 2 * kD), 0.0f);
  s.W_dec.assign(static_cast<size_t>(2 * kD * kD), 0.0f);
  for (int64_t d = 0; d < kD; ++d) {
    s.W_enc[static_cast<size_t>(d * 2 * kD + d)] = 1.0f;
    s.W_enc[static_cast<size_t>(d * 2 * kD + d + kD)] = -1.0f;
    s.W_dec[static_cast<size_t>(d * kD + d)] = 1.0f;
    s.W_dec[static_cast<size_t>((d + kD) * kD + d)] = -1.0f;
  }
  s.b_enc.assign(static_cast<size_t>(2 * kD), 0.0f);
  s.b_dec.assign(static_cast<size_t>(kD), 0.0f);
  return s;
}

TEST(Causal, SelectionSkipsDeadLatentsAndBreaksTiesByIndex) {
  const std::vector<double> stab = {0.9, 0.1, 0.5, 0.5, 0.05, 0.9};
  const std::vector<uint8_t> alive = {1, 1, 1, 1, 0, 1};
  EXPECT_EQ(select_by_stability(stab, alive, 2, true), (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(select_by_stability(stab, alive, 3, false), (std::vector<int64_t>{1, 2, 3}));  // 4 is dead
  EXPECT_THROW(select_by_stability(stab, alive, 6, true), Error);
}

TEST(Causal, AblationsMatchHandMadeReconstructions) {
  const LoadedModel model = tiny_model();
  const SaeModel sae = split_sign_sae();
  SpliceSpec spec;  // last layer, resid_post, answer position
  spec.batch_size = 20;
  std::vector<float> rows(static_cast<size_t>(200 * kD));
  const Philox rng(2, 3);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<float>(rng.normal(i));
  // Most stable: latents 15 and 14 (the negative parts of dims 7 and 6); least stable: 0 and 1.
  std::vector<double> stability;
  for (int64_t i = 0; i < 2 * kD; ++i) stability.push_back(static_cast<double>(i) / 16.0);
  CausalProxyOptions opt;
  opt.m = 2;
  opt.random_repeats = 2;
  opt.seed = 4;
  const nlohmann::json out = causal_proxy(model, spec, sae, stability, rows.data(), 200, opt);
  const nlohmann::json& cond = out["conditions"];
  EXPECT_EQ(out["n_alive"].get<int64_t>(), 2 * kD);
  EXPECT_EQ(cond["reconstruction_only"]["delta_ce_vs_clean"].get<double>(), 0.0);
  EXPECT_EQ(cond["reconstruction_only"]["delta_accuracy_vs_clean"].get<double>(), 0.0);
  EXPECT_EQ(cond["most_stable"]["latents"], nlohmann::json({15, 14}));
  EXPECT_EQ(cond["least_stable"]["latents"], nlohmann::json({0, 1}));

  auto direct = [&](const std::vector<int64_t>& keep_positive_only,
                    const std::vector<int64_t>& keep_negative_only) {
    const ReconstructFn fn = [&](const float* x, int64_t n, float* out_x) {
      std::copy_n(x, n * kD, out_x);
      for (int64_t r = 0; r < n; ++r) {
        for (const int64_t d : keep_positive_only) out_x[r * kD + d] = std::max(0.0f, out_x[r * kD + d]);
        for (const int64_t d : keep_negative_only) out_x[r * kD + d] = std::min(0.0f, out_x[r * kD + d]);
      }
    };
    return splice_metrics(model, spec, fn, true);
  };
  const SpliceMetrics most = direct({6, 7}, {});
  EXPECT_NEAR(cond["most_stable"]["ce_loss"].get<double>(), most.ce_sae, 1e-12);
  EXPECT_NEAR(cond["most_stable"]["accuracy"].get<double>(), most.accuracy_sae, 1e-12);
  EXPECT_NEAR(cond["most_stable"]["delta_ce_vs_clean"].get<double>(), most.ce_sae - most.ce_clean, 1e-12);
  const SpliceMetrics least = direct({}, {0, 1});
  EXPECT_NEAR(cond["least_stable"]["ce_loss"].get<double>(), least.ce_sae, 1e-12);
  EXPECT_GT(std::abs(most.ce_sae - most.ce_clean), 0.0);  // the ablation is visible at all
  // L1 share: latents 14, 15 carry sum of max(0, -x_6) + max(0, -x_7) over the rows.
  double removed = 0, total = 0;
  for (int64_t r = 0; r < 200; ++r) {
    for (int64_t d = 0; d < kD; ++d) {
      const double v = rows[static_cast<size_t>(r * kD + d)];
      total += std::abs(v);
      if (d >= 6 && v < 0) removed += -v;
    }
  }
  EXPECT_NEAR(cond["most_stable"]["ablated_l1_fraction"].get<double>(), removed / total, 1e-9);
  // Random control: reproducible from its seed, two repeats averaged.
  const nlohmann::json again = causal_proxy(model, spec, sae, stability, rows.data(), 200, opt);
  EXPECT_EQ(again["conditions"]["random"], cond["random"]);
  ASSERT_EQ(cond["random"]["repeats"].size(), 2u);
  const double mean_ce = (cond["random"]["repeats"][0]["ce_loss"].get<double>() +
                          cond["random"]["repeats"][1]["ce_loss"].get<double>()) /
                         2;
  EXPECT_NEAR(cond["random"]["ce_loss"].get<double>(), mean_ce, 1e-12);
}

}  // namespace
}  // namespace husai
