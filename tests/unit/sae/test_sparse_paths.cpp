// relu and jumprelu train on the sparse path (only the active entries after the dense encoder product, and
// for jumprelu the band entries near its threshold); their loss and every gradient equal the dense references
// (relu_loss_backward_dense, jumprelu_loss_backward_dense) up to rounding, in double and float, with
// apply_b_dec_to_input on and off, as an SAE and as a transcoder, at a sparsity like training's (a negative
// b_enc leaves a few latents active per row) and with rows where nothing fires. Every sparse path gives the
// same bits on 1 and 2 threads.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "husai/core/threading.hpp"
#include "husai/sae/architecture.hpp"
#include "husai/sae/dense_path.hpp"
#include "husai/sae/sae.hpp"

namespace husai {
namespace {

enum class Penalty { kL1, kJumpStep, kJumpTanh };

SaeConfig make_config(Penalty pen, int64_t D, int64_t L) {
  SaeConfig cfg;
  cfg.arch = &sae_architecture(pen == Penalty::kL1 ? "relu" : "jumprelu");
  cfg.d_in = D;
  cfg.d_sae = L;
  cfg.l1_coefficient = 0.7;
  cfg.l1_warmup_steps = 10;
  cfg.l0_coefficient = 0.3;
  cfg.bandwidth = 0.2;
  cfg.tanh_penalty = pen == Penalty::kJumpTanh;
  return cfg;
}

// Parameters at a training-like sparsity: b_enc lowered, and jumprelu's thresholds spread over [0.05, 0.6]
// so that many pre-activations fall inside the straight-through band.
std::vector<double> make_params(const SaeConfig& cfg, const SaeLayout& layout) {
  std::vector<double> pd(static_cast<size_t>(layout.total));
  gradcheck::fill_normal(pd, 5, 0.4);
  const bool jump = cfg.arch->name == "jumprelu";
  for (int64_t i = 0; i < cfg.d_sae; ++i) pd[static_cast<size_t>(layout.b_enc + i)] -= jump ? 0.6 : 0.9;
  for (int64_t i = 0; i < layout.n_extra; ++i)
    pd[static_cast<size_t>(layout.extra + i)] = std::log(0.05 + 0.55 * static_cast<double>(i % 11) / 10.0);
  return pd;
}

template <typename T>
SaeLossParts dense_reference(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>* g,
                             const SaeBatch<T>& batch, SaeWorkspace<T>& ws) {
  return cfg.arch->name == "relu" ? sae_detail::relu_loss_backward_dense<T>(cfg, p, g, batch, ws)
                                  : sae_detail::jumprelu_loss_backward_dense<T>(cfg, p, g, batch, ws);
}

template <typename T>
void compare_paths(Penalty pen, bool centre, bool transcoder, double tol) {
  constexpr int64_t D = 16, L = 96, B = 40;
  SaeConfig cfg = make_config(pen, D, L);
  cfg.apply_b_dec_to_input = centre;
  const SaeLayout layout = make_sae_layout(cfg);
  const std::vector<double> pd = make_params(cfg, layout);
  std::vector<double> xd(static_cast<size_t>(B * D)), yd(xd.size());
  gradcheck::fill_normal(xd, 6, 1.0);
  gradcheck::fill_normal(yd, 7, 1.0);
  for (int64_t d = 0; d < D; ++d) xd[static_cast<size_t>(3 * D + d)] = 0.0;  // a row at the origin
  const std::vector<T> params(pd.begin(), pd.end()), x(xd.begin(), xd.end()), y(yd.begin(), yd.end());
  const SaeView<const T> p = make_sae_view(layout, params.data());
  std::vector<T> g_sparse(params.size()), g_dense(params.size());
  const SaeView<T> vs = make_sae_view(layout, g_sparse.data());
  const SaeView<T> vd = make_sae_view(layout, g_dense.data());
  const SaeBatch<T> batch{x.data(), B, 4, nullptr, transcoder ? y.data() : nullptr};
  SaeWorkspace<T> ws_s, ws_d;
  const SaeLossParts s = cfg.arch->loss_backward<T>()(cfg, p, &vs, batch, ws_s);
  const SaeLossParts d = dense_reference<T>(cfg, p, &vd, batch, ws_d);
  EXPECT_GT(s.l0, 1.0);
  EXPECT_LT(s.l0, 0.3 * L);
  EXPECT_EQ(s.l0, d.l0);
  EXPECT_NEAR(s.loss, d.loss, tol * std::abs(d.loss));
  EXPECT_NEAR(s.mse, d.mse, tol * std::abs(d.mse));
  EXPECT_NEAR(s.sparsity, d.sparsity, tol * std::abs(d.sparsity));
  EXPECT_NEAR(s.explained_variance, d.explained_variance, tol);
  EXPECT_EQ(ws_s.fired, ws_d.fired);
  double scale = 0;
  for (const T v : g_dense) scale = std::max(scale, std::abs(static_cast<double>(v)));
  for (size_t k = 0; k < g_dense.size(); ++k) {
    ASSERT_NEAR(g_sparse[k], g_dense[k], tol * scale) << "parameter " << k;
  }
}

TEST(SparsePaths, EqualDenseReferencesDouble) {
  for (const Penalty pen : {Penalty::kL1, Penalty::kJumpStep, Penalty::kJumpTanh}) {
    for (const bool centre : {true, false}) {
      for (const bool transcoder : {false, true}) {
        if (centre && transcoder) continue;  // a transcoder never centres its input
        compare_paths<double>(pen, centre, transcoder, 1e-12);
      }
    }
  }
}

TEST(SparsePaths, EqualDenseReferencesFloat) {
  for (const Penalty pen : {Penalty::kL1, Penalty::kJumpStep, Penalty::kJumpTanh}) {
    compare_paths<float>(pen, true, false, 2e-5);
    compare_paths<float>(pen, false, true, 2e-5);
  }
}

// The band entries are what the threshold gradient is made of: the test above needs some, and the sparse
// path must not hold [B, d_sae] of anything.
TEST(SparsePaths, JumpReluBandIsUsedAndSmall) {
  constexpr int64_t D = 16, L = 96, B = 200;
  const SaeConfig cfg = make_config(Penalty::kJumpStep, D, L);
  const SaeLayout layout = make_sae_layout(cfg);
  const std::vector<double> pd = make_params(cfg, layout);
  std::vector<double> xd(static_cast<size_t>(B * D));
  gradcheck::fill_normal(xd, 6, 1.0);
  const std::vector<float> params(pd.begin(), pd.end()), x(xd.begin(), xd.end());
  std::vector<float> grads(params.size());
  const SaeView<const float> p = make_sae_view(layout, params.data());
  const SaeView<float> g = make_sae_view(layout, grads.data());
  SaeWorkspace<float> ws;
  cfg.arch->loss_backward<float>()(cfg, p, &g, SaeBatch<float>{x.data(), B, 4, nullptr}, ws);
  int64_t in_band = 0;
  for (const float t : ws.band_term) in_band += t != 0.0f ? 1 : 0;
  EXPECT_GT(in_band, B / 2);
  EXPECT_LT(ws.band_idx.size(), static_cast<size_t>(B * L / 2));
  EXPECT_LE(ws.z.size(), static_cast<size_t>(std::max(1, num_threads()) * 64 * L));
  EXPECT_TRUE(ws.f.empty());
  EXPECT_TRUE(ws.df.empty());
}

// Same bits on 1 and 2 threads for every sparse path, at a batch of several 64-row blocks (with a partial
// last one) and a d_sae of several 256-latent gradient ranges.
TEST(SparsePaths, SameBitsOnOneAndTwoThreads) {
  for (const std::string arch : {"relu", "jumprelu", "topk", "batchtopk", "matryoshka"}) {
    constexpr int64_t D = 24, L = 600, B = 300;
    SaeConfig cfg = make_config(Penalty::kJumpTanh, D, L);
    cfg.arch = &sae_architecture(arch);
    cfg.k = 8;
    cfg.group_sizes = {100, 200, 300};
    const SaeLayout layout = make_sae_layout(cfg);
    const std::vector<double> pd = make_params(cfg, layout);
    std::vector<double> xd(static_cast<size_t>(B * D));
    gradcheck::fill_normal(xd, 8, 1.0);
    std::vector<uint8_t> dead(static_cast<size_t>(L), 0);
    for (int64_t i = 0; i < L; i += 3) dead[static_cast<size_t>(i)] = 1;
    const std::vector<float> params(pd.begin(), pd.end()), x(xd.begin(), xd.end());
    std::vector<float> g1(params.size()), g2(params.size());
    const SaeView<const float> p = make_sae_view(layout, params.data());
    const SaeView<float> v1 = make_sae_view(layout, g1.data());
    const SaeView<float> v2 = make_sae_view(layout, g2.data());
    const SaeBatch<float> batch{x.data(), B, 4, dead.data()};
    SaeWorkspace<float> ws1, ws2;
    set_num_threads(1);
    const SaeLossParts a = cfg.arch->loss_backward<float>()(cfg, p, &v1, batch, ws1);
    set_num_threads(2);
    const SaeLossParts b = cfg.arch->loss_backward<float>()(cfg, p, &v2, batch, ws2);
    set_num_threads(0);
    EXPECT_GT(a.l0, 0.0) << arch;
    EXPECT_EQ(a.loss, b.loss) << arch;
    EXPECT_EQ(a.aux, b.aux) << arch;
    EXPECT_EQ(std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(float)), 0)
        << arch << ": gradients differ";
  }
}

}  // namespace
}  // namespace husai
