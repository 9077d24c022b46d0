// Activation-based similarity of SAE latents (metrics/activation_similarity.hpp): a case worked out on paper,
// NumPy/SciPy reference values (np.corrcoef + linear_sum_assignment, written by
// tests/parity/activation_similarity_fixture.py into tests/unit/fixtures/activation_similarity_numpy.json),
// invariances, the row-permuted chance level, SAE encoding, and thread-count independence.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"
#include "husai/core/threading.hpp"
#include "husai/io/json_file.hpp"
#include "husai/metrics/activation_similarity.hpp"

namespace husai {
namespace {

// Draws in sequence from a Philox stream.
struct Rng {
  explicit Rng(uint64_t seed) : philox(seed, 0) {}
  double normal() { return philox.normal(next++); }
  double uniform() { return philox.uniform_f64(next++); }
  Philox philox;
  uint64_t next = 0;
};

LatentActivations dense(const std::vector<float>& z, int64_t n_rows, int64_t n_latents) {
  return latent_activations_from_dense(z.data(), n_rows, n_latents);
}

LatentActivations from_json(const nlohmann::json& m) {
  const auto n = static_cast<int64_t>(m.size());
  const auto f = static_cast<int64_t>(m[0].size());
  std::vector<float> z;
  for (const auto& row : m)
    for (const auto& v : row) z.push_back(v.get<float>());
  return dense(z, n, f);
}

// On paper: 4 rows. a: latent 0 fires on row 0 only (value 1), latent 1 is dead. b: latent 0 = a's latent 0
// (doubled, correlation 1), latent 1 fires on row 1 only. Centred, a0 = (3,-1,-1,-1)/4 and b1 =
// (-1,3,-1,-1)/4: cov = -4/16, each sum of squares 12/16, so corr(a0, b1) = -1/3.
//   C = [[1, 1/3], [0, 0]]: pwmcc_ab = (1 + 0)/2, pwmcc_ba = (1 + 1/3)/2, pwmcc = 7/12;
//   matching {0-0, 1-1}: mean (1 + 0)/2; shared at 0.5/0.7/0.9: 1/2 each.
TEST(ActivationSimilarity, HandWorkedCase) {
  const LatentActivations a = dense({1, 0, 0, 0, 0, 0, 0, 0}, 4, 2);
  const LatentActivations b = dense({2, 0, 0, 1, 0, 0, 0, 0}, 4, 2);
  EXPECT_EQ(a.n_zero_variance(), 1);
  EXPECT_EQ(b.n_zero_variance(), 0);
  std::vector<double> c(4);
  abs_correlation_matrix(a, b, c.data());
  EXPECT_NEAR(c[0], 1.0, 1e-15);
  EXPECT_NEAR(c[1], 1.0 / 3.0, 1e-15);
  EXPECT_EQ(c[2], 0.0);
  EXPECT_EQ(c[3], 0.0);
  const ActivationPairSimilarity s = activation_pair_similarity(a, b);
  EXPECT_NEAR(s.act_pwmcc_ab, 0.5, 1e-15);
  EXPECT_NEAR(s.act_pwmcc_ba, 2.0 / 3.0, 1e-15);
  EXPECT_NEAR(s.act_pwmcc, 7.0 / 12.0, 1e-15);
  EXPECT_NEAR(s.act_matched_mean_corr, 0.5, 1e-15);
  for (double f : s.act_shared_frac) EXPECT_EQ(f, 0.5);
  EXPECT_EQ(s.zero_variance_a, 1);
  EXPECT_EQ(s.zero_variance_b, 0);
}

TEST(ActivationSimilarity, MatchesNumpyFixture) {
  const nlohmann::json fx =
      read_json_file(std::string(HUSAI_SOURCE_DIR) + "/tests/unit/fixtures/activation_similarity_numpy.json");
  ASSERT_GE(fx.at("cases").size(), 3u);
  for (const auto& cs : fx.at("cases")) {
    SCOPED_TRACE(cs.at("name").get<std::string>());
    const LatentActivations a = from_json(cs.at("za"));
    const LatentActivations b = from_json(cs.at("zb"));
    const nlohmann::json& e = cs.at("expected");
    const ActivationPairSimilarity s = activation_pair_similarity(a, b);
    EXPECT_NEAR(s.act_pwmcc, e.at("act_pwmcc").get<double>(), 1e-12);
    EXPECT_NEAR(s.act_pwmcc_ab, e.at("act_pwmcc_ab").get<double>(), 1e-12);
    EXPECT_NEAR(s.act_pwmcc_ba, e.at("act_pwmcc_ba").get<double>(), 1e-12);
    EXPECT_NEAR(s.act_matched_mean_corr, e.at("act_matched_mean_corr").get<double>(), 1e-12);
    for (size_t t = 0; t < 3; ++t)
      EXPECT_DOUBLE_EQ(s.act_shared_frac[t], e.at("act_shared_frac")[t].get<double>());
    std::vector<double> c(static_cast<size_t>(a.n_latents * b.n_latents));
    abs_correlation_matrix(a, b, c.data());
    EXPECT_NEAR(c[0], e.at("corr_00").get<double>(), 1e-12);
  }
}

// Correlation ignores each latent's scale and offset and the order of the latents: a dense matrix against its
// columns permuted, scaled by positive or negative factors and shifted is fully alike.
TEST(ActivationSimilarity, InvariantToLatentOrderScaleShiftAndSign) {
  Rng rng(5);
  const int64_t n = 64, f = 6;
  std::vector<float> za(static_cast<size_t>(n * f)), zb(za.size());
  for (float& v : za) v = static_cast<float>(rng.normal());
  const int perm[6] = {3, 0, 5, 1, 4, 2};
  const float scale[6] = {2.0f, -0.5f, 4.0f, 1.0f, -8.0f, 0.25f};
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < f; ++j)
      zb[static_cast<size_t>(r * f + j)] = scale[j] * za[static_cast<size_t>(r * f + perm[j])] + 3.0f;
  const ActivationPairSimilarity s = activation_pair_similarity(dense(za, n, f), dense(zb, n, f));
  EXPECT_NEAR(s.act_pwmcc, 1.0, 1e-6);
  EXPECT_NEAR(s.act_matched_mean_corr, 1.0, 1e-6);
  for (double v : s.act_shared_frac) EXPECT_EQ(v, 1.0);
}

// Shuffling the rows of one side breaks the correspondence: an SAE against a row-permuted copy of itself
// falls far below 1 (the chance level), while the copy keeps its own column statistics.
TEST(ActivationSimilarity, RowPermutationGivesChanceLevel) {
  Rng rng(9);
  const int64_t n = 400, f = 20;
  std::vector<float> z(static_cast<size_t>(n * f), 0.0f);
  for (int64_t r = 0; r < n; ++r)
    for (int t = 0; t < 3; ++t)
      z[static_cast<size_t>(r * f + static_cast<int64_t>(rng.uniform() * f) % f)] =
          static_cast<float>(1.0 + rng.uniform());
  const LatentActivations a = dense(z, n, f);
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) order[static_cast<size_t>(r)] = (r * 7 + 3) % n;  // 7 is coprime to 400
  const LatentActivations p = permute_rows(a, order);
  for (int64_t j = 0; j < f; ++j) {
    EXPECT_NEAR(p.mean[static_cast<size_t>(j)], a.mean[static_cast<size_t>(j)], 1e-12);
    EXPECT_NEAR(p.centred_ss[static_cast<size_t>(j)], a.centred_ss[static_cast<size_t>(j)], 1e-9);
  }
  EXPECT_NEAR(activation_pair_similarity(a, a).act_pwmcc, 1.0, 1e-12);
  const ActivationPairSimilarity s = activation_pair_similarity(a, p);
  EXPECT_LT(s.act_pwmcc, 0.3);
  EXPECT_LT(s.act_matched_mean_corr, 0.3);
  EXPECT_THROW(permute_rows(a, std::vector<int64_t>(static_cast<size_t>(n), 0)), Error);
}

// sae_latent_activations in batches equals SaeModel::encode on all rows at once.
TEST(ActivationSimilarity, SaeLatentActivationsMatchEncode) {
  Rng rng(3);
  SaeModel sae;
  sae.architecture = "topk";
  sae.d_in = 5;
  sae.d_sae = 8;
  sae.k = 2;
  sae.W_enc.resize(40);
  sae.W_dec.resize(40);
  sae.b_enc.resize(8);
  sae.b_dec.resize(5);
  for (float& v : sae.W_enc) v = static_cast<float>(rng.normal());
  for (float& v : sae.W_dec) v = static_cast<float>(rng.normal());
  for (float& v : sae.b_enc) v = static_cast<float>(0.1 * rng.normal());
  for (float& v : sae.b_dec) v = static_cast<float>(0.1 * rng.normal());
  const int64_t n = 37;
  std::vector<float> x(static_cast<size_t>(n * 5));
  for (float& v : x) v = static_cast<float>(rng.normal());
  const LatentActivations batched = sae_latent_activations(sae, x.data(), n, 10);
  const LatentActivations whole = dense(sae.encode(x.data(), n), n, 8);
  EXPECT_EQ(batched.row_ptr, whole.row_ptr);
  EXPECT_EQ(batched.latent, whole.latent);
  EXPECT_EQ(batched.value, whole.value);
}

TEST(ActivationSimilarity, ThreadCountIndependentAndChecked) {
  Rng rng(17);
  const int64_t n = 120, f = 30;
  std::vector<LatentActivations> sets;
  for (int s = 0; s < 4; ++s) {
    std::vector<float> z(static_cast<size_t>(n * f), 0.0f);
    for (float& v : z) v = rng.uniform() < 0.15 ? static_cast<float>(rng.normal()) : 0.0f;
    sets.push_back(dense(z, n, f));
  }
  std::vector<const LatentActivations*> ptrs;
  for (const auto& s : sets) ptrs.push_back(&s);
  const auto pairs = upper_pairs(4);
  const int before = num_threads();
  set_num_threads(1);
  const auto one = activation_pair_similarities(ptrs, pairs);
  set_num_threads(2);
  const auto two = activation_pair_similarities(ptrs, pairs);
  set_num_threads(before);
  for (size_t p = 0; p < pairs.size(); ++p) {
    EXPECT_EQ(std::memcmp(&one[p].act_pwmcc, &two[p].act_pwmcc, sizeof(double)), 0);
    EXPECT_EQ(std::memcmp(&one[p].act_matched_mean_corr, &two[p].act_matched_mean_corr, sizeof(double)), 0);
  }
  const LatentActivations shorter = dense(std::vector<float>(static_cast<size_t>(10 * f), 1.0f), 10, f);
  EXPECT_THROW(activation_pair_similarity(sets[0], shorter), Error);
  std::vector<float> bad(static_cast<size_t>(4 * 2), 0.0f);
  bad[3] = std::nanf("");
  EXPECT_THROW(dense(bad, 4, 2), Error);
  EXPECT_THROW(dense(std::vector<float>(2, 0.0f), 1, 2), Error);
}

}  // namespace
}  // namespace husai

namespace husai {
namespace {

// Sparse latents with shared structure: b's latents are noisy copies of some of a's, so the matching is not
// trivial; several blocks of kLargeBlockRows latents, both orders (F_a < F_b and F_a > F_b).
LatentActivations sparse_latents(int64_t n_rows, int64_t n_latents, uint64_t seed,
                                 const LatentActivations* like) {
  Rng rng(seed);
  std::vector<float> z(static_cast<size_t>(n_rows * n_latents), 0.0f);
  for (int64_t n = 0; n < n_rows; ++n) {
    for (int64_t i = 0; i < n_latents; ++i) {
      float v = rng.uniform() < 0.03 ? static_cast<float>(rng.uniform() + 0.1) : 0.0f;
      if (like != nullptr && i < like->n_latents && i % 3 != 0) {
        for (int64_t e = like->row_ptr[static_cast<size_t>(n)]; e < like->row_ptr[static_cast<size_t>(n + 1)];
             ++e) {
          if (like->latent[static_cast<size_t>(e)] == (i * 7) % like->n_latents)
            v = static_cast<float>(like->value[static_cast<size_t>(e)] * (1.0 + 0.2 * rng.uniform()));
        }
      }
      z[static_cast<size_t>(n * n_latents + i)] = v;
    }
  }
  return latent_activations_from_dense(z.data(), n_rows, n_latents);
}

TEST(ActivationSimilarity, LargeBlockwiseEqualsDense) {
  const LatentActivations a = sparse_latents(400, 600, 1, nullptr);
  const LatentActivations b = sparse_latents(400, 700, 2, &a);
  for (const bool swap : {false, true}) {
    const LatentActivations& x = swap ? b : a;
    const LatentActivations& y = swap ? a : b;
    const ActivationPairSimilarity d = activation_pair_similarity(x, y);
    LargeMatchingInfo info;
    const ActivationPairSimilarity l = large_activation_pair_similarity(x, y, &info);
    EXPECT_TRUE(info.certified);
    EXPECT_NEAR(l.act_pwmcc, d.act_pwmcc, 1e-6);
    EXPECT_NEAR(l.act_pwmcc_ab, d.act_pwmcc_ab, 1e-6);
    EXPECT_NEAR(l.act_pwmcc_ba, d.act_pwmcc_ba, 1e-6);
    EXPECT_NEAR(l.act_matched_mean_corr, d.act_matched_mean_corr, 1e-6);
    for (size_t t = 0; t < 3; ++t) EXPECT_NEAR(l.act_shared_frac[t], d.act_shared_frac[t], 2.0 / 600);
    EXPECT_EQ(l.zero_variance_a, d.zero_variance_a);
    EXPECT_GT(d.act_matched_mean_corr, 0.3);  // the planted copies are found
  }
}

}  // namespace
}  // namespace husai
