// The consistency penalty lambda * (1 - mean_i max_j |cos(D_i, R_j)|): value against a direct computation,
// (sub)gradient against finite differences away from ties, orthogonality of the gradient to each row, and
// the trainer hook (lambda 0 changes nothing; a positive lambda raises the alignment to the reference).

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "gradcheck.hpp"
#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"
#include "husai/train/consistency.hpp"
#include "husai/train/sae_trainer.hpp"

namespace husai {
namespace {

double direct_alignment(const std::vector<double>& dec, int64_t L, const std::vector<float>& ref, int64_t LR,
                        int64_t D) {
  double sum = 0;
  for (int64_t i = 0; i < L; ++i) {
    double best = 0;
    for (int64_t j = 0; j < LR; ++j) {
      double dot = 0, ni = 0, nj = 0;
      for (int64_t d = 0; d < D; ++d) {
        const double u = dec[static_cast<size_t>(i * D + d)], v = ref[static_cast<size_t>(j * D + d)];
        dot += u * v;
        ni += u * u;
        nj += v * v;
      }
      best = std::max(best, std::abs(dot) / std::sqrt(ni * nj));
    }
    sum += best;
  }
  return sum / static_cast<double>(L);
}

TEST(Consistency, ValueAndGradient) {
  const int64_t L = 7, LR = 5, D = 6;
  std::vector<float> ref(static_cast<size_t>(LR * D));
  const Philox rng(3, 4);
  for (size_t i = 0; i < ref.size(); ++i) ref[i] = static_cast<float>(2.0 * rng.normal(i));
  const ConsistencyReference r = make_consistency_reference(ref.data(), LR, D);
  std::vector<double> dec(static_cast<size_t>(L * D));
  gradcheck::fill_normal(dec, 21, 1.5);
  const double lambda = 0.7;
  ConsistencyWorkspace<double> ws;
  std::vector<double> grad(dec.size(), 0.0);
  const double align = consistency_alignment<double>(dec.data(), L, r, lambda, grad.data(), ws);
  // The reference is stored in float; compare with the float rows' own cosines.
  EXPECT_NEAR(align, direct_alignment(dec, L, ref, LR, D), 1e-6);
  // Away from ties: the arg-max is unique with a margin for this draw.
  for (int64_t i = 0; i < L; ++i) {
    std::vector<double> c;
    for (int64_t j = 0; j < LR; ++j) c.push_back(std::abs(ws.cos[static_cast<size_t>(i * LR + j)]));
    std::sort(c.rbegin(), c.rend());
    ASSERT_GT(c[0] - c[1], 1e-3) << "tie at row " << i;
  }
  const auto f = [&] {
    ConsistencyWorkspace<double> w2;
    return lambda * (1.0 - consistency_alignment<double>(dec.data(), L, r, lambda, nullptr, w2));
  };
  gradcheck::expect_gradient_matches("consistency", f, dec.data(), grad.data(), L * D);
  for (int64_t i = 0; i < L; ++i) {
    double dot = 0;
    for (int64_t d = 0; d < D; ++d)
      dot += grad[static_cast<size_t>(i * D + d)] * dec[static_cast<size_t>(i * D + d)];
    EXPECT_NEAR(dot, 0.0, 1e-12);
  }
  // A row equal to a reference row (up to sign and scale) has alignment 1.
  std::vector<double> same(ref.begin(), ref.begin() + D);
  for (double& v : same) v *= -3.0;
  EXPECT_NEAR(consistency_alignment<double>(same.data(), 1, r, 0.0, nullptr, ws), 1.0, 1e-6);
}

TEST(Consistency, TrainerHook) {
  const int64_t n = 512, D = 8;
  std::vector<float> x(static_cast<size_t>(n * D));
  const Philox rng(5, 6);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.normal(i));
  std::vector<float> ref(static_cast<size_t>(16 * D));
  for (size_t i = 0; i < ref.size(); ++i) ref[i] = static_cast<float>(rng.normal(100000 + i));
  auto settings = [&](double lambda, bool with_ref) {
    SaeTrainSettings s;
    s.sae.arch = &sae_architecture("topk");
    s.sae.d_in = D;
    s.sae.d_sae = 16;
    s.sae.k = 2;
    s.steps = 60;
    s.batch_size = 64;
    s.adam.lr = 1e-2;
    s.seeds = {1};
    s.data_order_seed = 0;
    s.log_every = 60;
    s.checkpoint_every = 0;
    if (with_ref)
      s.consistency_reference =
          std::make_shared<const ConsistencyReference>(make_consistency_reference(ref.data(), 16, D));
    s.consistency_lambda = lambda;
    return s;
  };
  auto train = [&](const SaeTrainSettings& s) {
    SaeTrainer t(s, x.data(), n, std::vector<float>(static_cast<size_t>(D), 0.0f));
    t.init_fresh();
    t.run([] { return false; }, [](int64_t) {}, [] {});
    return t.seeds().front();
  };
  const SaeSeedState plain = train(settings(0.0, false));
  const SaeSeedState zero = train(settings(0.0, true));
  EXPECT_EQ(plain.params, zero.params);  // lambda 0: the hook is off
  const SaeSeedState pulled = train(settings(50.0, true));
  const SaeLayout layout = make_sae_layout(settings(0, false).sae);
  const ConsistencyReference r = make_consistency_reference(ref.data(), 16, D);
  ConsistencyWorkspace<float> ws;
  const double a_plain =
      consistency_alignment<float>(plain.params.data() + layout.W_dec, 16, r, 0, nullptr, ws);
  const double a_pulled =
      consistency_alignment<float>(pulled.params.data() + layout.W_dec, 16, r, 0, nullptr, ws);
  EXPECT_GT(a_pulled, a_plain + 0.05) << a_plain << " -> " << a_pulled;
  EXPECT_GT(pulled.history.back().consistency_alignment, 0.0);
  // A reference of another width is refused.
  SaeTrainSettings bad = settings(1.0, false);
  bad.consistency_reference =
      std::make_shared<const ConsistencyReference>(make_consistency_reference(ref.data(), 8, 16));
  EXPECT_THROW(SaeTrainer(bad, x.data(), n, std::vector<float>(static_cast<size_t>(D), 0.0f)), Error);
}

}  // namespace
}  // namespace husai
