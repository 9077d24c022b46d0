// relu trains on the sparse path (only the active entries after the dense encoder product); its loss and
// every gradient equal the dense reference (relu_loss_backward_dense) up to rounding, in double and float,
// with apply_b_dec_to_input on and off, as an SAE and as a transcoder, at a sparsity like training's (a
// negative b_enc leaves a few latents active per row) and with rows where nothing fires.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "gradcheck.hpp"
#include "husai/sae/architecture.hpp"
#include "husai/sae/dense_path.hpp"
#include "husai/sae/sae.hpp"

namespace husai {
namespace {

template <typename T>
void compare_paths(bool centre, bool transcoder, double tol) {
  constexpr int64_t D = 16, L = 96, B = 40;
  SaeConfig cfg;
  cfg.arch = &sae_architecture("relu");
  cfg.d_in = D;
  cfg.d_sae = L;
  cfg.l1_coefficient = 0.7;
  cfg.l1_warmup_steps = 10;
  cfg.apply_b_dec_to_input = centre;
  const SaeLayout layout = make_sae_layout(cfg);
  std::vector<double> pd(static_cast<size_t>(layout.total)), xd(static_cast<size_t>(B * D)), yd(xd.size());
  gradcheck::fill_normal(pd, 5, 0.4);
  gradcheck::fill_normal(xd, 6, 1.0);
  gradcheck::fill_normal(yd, 7, 1.0);
  for (int64_t i = 0; i < L; ++i) pd[static_cast<size_t>(layout.b_enc + i)] -= 0.9;  // L0 of a few per row
  for (int64_t d = 0; d < D; ++d) xd[static_cast<size_t>(3 * D + d)] = 0.0;          // a row at the origin
  const std::vector<T> params(pd.begin(), pd.end()), x(xd.begin(), xd.end()), y(yd.begin(), yd.end());
  const SaeView<const T> p = make_sae_view(layout, params.data());
  std::vector<T> g_sparse(params.size()), g_dense(params.size());
  const SaeView<T> vs = make_sae_view(layout, g_sparse.data());
  const SaeView<T> vd = make_sae_view(layout, g_dense.data());
  const SaeBatch<T> batch{x.data(), B, 4, nullptr, transcoder ? y.data() : nullptr};
  SaeWorkspace<T> ws_s, ws_d;
  const SaeLossParts s = cfg.arch->loss_backward<T>()(cfg, p, &vs, batch, ws_s);
  const SaeLossParts d = sae_detail::relu_loss_backward_dense<T>(cfg, p, &vd, batch, ws_d);
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

TEST(ReluSparsePath, EqualsDenseReferenceDouble) {
  for (const bool centre : {true, false}) {
    for (const bool transcoder : {false, true}) {
      if (centre && transcoder) continue;  // a transcoder never centres its input
      compare_paths<double>(centre, transcoder, 1e-12);
    }
  }
}

TEST(ReluSparsePath, EqualsDenseReferenceFloat) {
  compare_paths<float>(true, false, 2e-5);
  compare_paths<float>(false, true, 2e-5);
}

}  // namespace
}  // namespace husai
