// Stability metrics on hand-built dictionaries (values worked out on paper), orientation for d_sae < d_in,
// thread-count independence, and the null dictionaries. NumPy/SciPy parity on random and trained-like
// dictionaries is in tests/parity/stability_parity.py.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/core/threading.hpp"
#include "husai/metrics/nulls.hpp"
#include "husai/metrics/stability.hpp"

namespace husai {
namespace {

// Element k of a float vector as a double (the tests compute their references in double).
double at(const std::vector<float>& v, int64_t k) {
  return static_cast<double>(v[static_cast<size_t>(k)]);
}

FeatureSet rows(std::vector<float> r, int64_t n, int64_t d) {
  return features_from_rows(r.data(), n, d);
}

TEST(Stability, IdenticalSignFlippedAndPermutedDictionariesAreFullyStable) {
  const FeatureSet a = rows({1, 2, 0, 0, 0, 3, 1, 1, 1, 4, 0, -2}, 4, 3);
  // b: a's rows in another order, two of them negated and rescaled.
  const FeatureSet b = rows({-2, -2, -2, 0, 0, 3, 8, 0, -4, 1, 2, 0}, 4, 3);
  const PairStability s = pair_stability(a, b, true);
  EXPECT_NEAR(s.pwmcc, 1.0, 1e-6);
  EXPECT_NEAR(s.pwmcc_ab, 1.0, 1e-6);
  EXPECT_NEAR(s.pwmcc_ba, 1.0, 1e-6);
  EXPECT_NEAR(s.matched_mean_cos, 1.0, 1e-6);
  for (double f : s.shared_frac) EXPECT_EQ(f, 1.0);
  for (float v : s.best_ab) EXPECT_NEAR(v, 1.0f, 1e-6f);
}

TEST(Stability, RotatedBasisAtFortyFiveDegrees) {
  // Every |cos| is 1/sqrt(2) = 0.7071: shared at 0.5 and 0.7, not at 0.9.
  const FeatureSet a = rows({1, 0, 0, 1}, 2, 2);
  const FeatureSet b = rows({1, 1, 1, -1}, 2, 2);
  const PairStability s = pair_stability(a, b);
  const double c = 1.0 / std::sqrt(2.0);
  EXPECT_NEAR(s.pwmcc, c, 1e-7);
  EXPECT_NEAR(s.matched_mean_cos, c, 1e-7);
  EXPECT_EQ(s.shared_frac[0], 1.0);
  EXPECT_EQ(s.shared_frac[1], 1.0);
  EXPECT_EQ(s.shared_frac[2], 0.0);
}

TEST(Stability, MaxBasedAndMatchedScoresDiffer) {
  // a = {e1, e1}, b = {e1, e2}: C = [[1, 0], [1, 0]]. Max-based: ab = 1, ba = (1 + 0) / 2; matched: one of
  // a's copies gets e1, the other e2: (1 + 0) / 2.
  const FeatureSet a = rows({1, 0, 0, 1, 0, 0}, 2, 3);
  const FeatureSet b = rows({1, 0, 0, 0, 1, 0}, 2, 3);
  const PairStability s = pair_stability(a, b, true);
  EXPECT_NEAR(s.pwmcc_ab, 1.0, 1e-7);
  EXPECT_NEAR(s.pwmcc_ba, 0.5, 1e-7);
  EXPECT_NEAR(s.pwmcc, 0.75, 1e-7);
  EXPECT_NEAR(s.matched_mean_cos, 0.5, 1e-7);
  EXPECT_EQ(s.shared_frac[0], 0.5);
  EXPECT_EQ(s.best_ba, (std::vector<float>{1.0f, 0.0f}));
}

TEST(Stability, RectangularDictionariesMatchTheSmallerOne) {
  // a has 1 feature, b has 3: matched mean over 1 pair (the best); pwmcc_ba averages over b's 3 features.
  const FeatureSet a = rows({3, 4}, 1, 2);                    // (0.6, 0.8)
  const FeatureSet b = rows({1, 0, 0, 1, 0.6f, 0.8f}, 3, 2);  // cos 0.6, 0.8, 1
  const PairStability s = pair_stability(a, b);
  EXPECT_NEAR(s.pwmcc_ab, 1.0, 1e-6);
  EXPECT_NEAR(s.pwmcc_ba, (0.6 + 0.8 + 1.0) / 3, 1e-6);
  EXPECT_NEAR(s.matched_mean_cos, 1.0, 1e-6);
  const PairStability t = pair_stability(b, a);
  EXPECT_NEAR(t.pwmcc_ab, s.pwmcc_ba, 1e-7);
  EXPECT_NEAR(t.matched_mean_cos, 1.0, 1e-6);
}

TEST(Stability, ZeroFeatureHasNoMatch) {
  const FeatureSet a = rows({0, 0, 1, 0}, 2, 2);
  const FeatureSet b = rows({1, 0, 0, 1}, 2, 2);
  const PairStability s = pair_stability(a, b);
  EXPECT_NEAR(s.pwmcc_ab, 0.5, 1e-7);
  EXPECT_NEAR(s.matched_mean_cos, 0.5, 1e-7);
  EXPECT_THROW(pair_stability(a, rows({1, 0, 0}, 1, 3)), Error);  // different dimension
}

SaeModel model_with(int64_t d_sae, int64_t d_in, std::vector<float> W_dec, std::vector<float> W_enc) {
  SaeModel m;
  m.architecture = "topk";
  m.d_sae = d_sae;
  m.d_in = d_in;
  m.k = 1;
  m.W_dec = std::move(W_dec);
  m.W_enc = std::move(W_enc);
  m.b_enc.assign(static_cast<size_t>(d_sae), 0.0f);
  m.b_dec.assign(static_cast<size_t>(d_in), 0.0f);
  return m;
}

TEST(Stability, OrientationFollowsTheLayoutNotTheShape) {
  // d_sae = 2 < d_in = 4. Decoder rows of A: (1,0,0,0), (0,1,1,0); B has the same rows in the other order.
  // Features are rows, so B matches A exactly. Reading the columns instead (what a shape-based transpose
  // does) would compare 4 vectors in R^2 and give a different answer.
  const std::vector<float> a_dec = {1, 0, 0, 0, 0, 1, 1, 0};
  const std::vector<float> b_dec = {0, 1, 1, 0, 1, 0, 0, 0};
  // Encoders W_enc [d_in, d_sae]: A's columns are (1,1,0,0) and (0,0,1,0); B's are (0,0,0,1) and (1,1,0,0).
  const std::vector<float> a_enc = {1, 0, 1, 0, 0, 1, 0, 0};
  const std::vector<float> b_enc = {0, 1, 0, 1, 0, 0, 1, 0};
  const SaeModel A = model_with(2, 4, a_dec, a_enc), B = model_with(2, 4, b_dec, b_enc);
  const FeatureSet fa = decoder_features(A), fb = decoder_features(B);
  ASSERT_EQ(fa.n_features, 2);
  ASSERT_EQ(fa.dim, 4);
  const PairStability dec = pair_stability(fa, fb);
  EXPECT_NEAR(dec.pwmcc, 1.0, 1e-6);
  EXPECT_NEAR(dec.matched_mean_cos, 1.0, 1e-6);
  // Encoder: A's column 0 equals B's column 1 (cos 1); A's column 1 (e3) is orthogonal to both of B's.
  const FeatureSet ea = encoder_features(A), eb = encoder_features(B);
  ASSERT_EQ(ea.n_features, 2);
  ASSERT_EQ(ea.dim, 4);
  const PairStability enc = pair_stability(ea, eb);
  EXPECT_NEAR(enc.pwmcc_ab, 0.5, 1e-6);
  EXPECT_NEAR(enc.matched_mean_cos, 0.5, 1e-6);
  // The wrong orientation (columns of W_dec as features) gives something else: proof the test can fail.
  const FeatureSet wrong_a = features_from_columns(a_dec.data(), 2, 4);
  const FeatureSet wrong_b = features_from_columns(b_dec.data(), 2, 4);
  EXPECT_LT(pair_stability(wrong_a, wrong_b).matched_mean_cos, 0.9);
}

TEST(Stability, PerFeatureStabilityOverThreeDictionaries) {
  // Three dictionaries of 2 features in R^2. A = {e1, e2}; B = {e1, (e1+e2)/sqrt2}; C = {e2, -e1}.
  const FeatureSet A = rows({1, 0, 0, 1}, 2, 2), B = rows({1, 0, 1, 1}, 2, 2), C = rows({0, 1, -1, 0}, 2, 2);
  const std::vector<const FeatureSet*> sets = {&A, &B, &C};
  const auto pairs = pair_stabilities(sets, upper_pairs(3), true);
  const auto pf = per_feature_stability(3, pairs);
  const double h = 1.0 / std::sqrt(2.0);
  // A's e1: best 1 in B and 1 in C; A's e2: best h in B, 1 in C.
  EXPECT_NEAR(pf[0][0], 1.0, 1e-6);
  EXPECT_NEAR(pf[0][1], (h + 1.0) / 2, 1e-6);
  // B's e1: 1 in A, 1 in C; B's diagonal: h in A, h in C.
  EXPECT_NEAR(pf[1][0], 1.0, 1e-6);
  EXPECT_NEAR(pf[1][1], h, 1e-6);
  // C's e2: 1 in A, h in B; C's -e1: 1 in A, 1 in B.
  EXPECT_NEAR(pf[2][0], (1.0 + h) / 2, 1e-6);
  EXPECT_NEAR(pf[2][1], 1.0, 1e-6);
}

TEST(Stability, ResultsDoNotDependOnThreadCount) {
  std::vector<FeatureSet> sets;
  for (uint64_t s = 0; s < 4; ++s)
    sets.push_back(features_from_rows(gaussian_null_decoder(96, 16, s).data(), 96, 16));
  std::vector<const FeatureSet*> ptrs;
  for (const FeatureSet& f : sets) ptrs.push_back(&f);
  set_num_threads(1);
  const auto one = pair_stabilities(ptrs, upper_pairs(4), true);
  set_num_threads(2);
  const auto two = pair_stabilities(ptrs, upper_pairs(4), true);
  set_num_threads(0);
  ASSERT_EQ(one.size(), 6u);
  for (size_t p = 0; p < one.size(); ++p) {
    EXPECT_EQ(one[p].pwmcc, two[p].pwmcc);
    EXPECT_EQ(one[p].matched_mean_cos, two[p].matched_mean_cos);
    EXPECT_EQ(one[p].best_ab, two[p].best_ab);
  }
}

double row_norm(const std::vector<float>& w, int64_t i, int64_t d) {
  double s = 0;
  for (int64_t k = 0; k < d; ++k) s += at(w, i * d + k) * at(w, i * d + k);
  return std::sqrt(s);
}

TEST(Nulls, GaussianIsUnitSeededAndAtTheKnownChanceLevel) {
  const std::vector<float> a = gaussian_null_decoder(128, 128, 1000),
                           b = gaussian_null_decoder(128, 128, 1001);
  EXPECT_EQ(a, gaussian_null_decoder(128, 128, 1000));
  EXPECT_NE(a, b);
  for (int64_t i = 0; i < 128; ++i) EXPECT_NEAR(row_norm(a, i, 128), 1.0, 1e-6);
  // REFERENCE.md: random PWMCC for 128 Gaussian vectors in R^128 is about 0.246.
  const PairStability s =
      pair_stability(features_from_rows(a.data(), 128, 128), features_from_rows(b.data(), 128, 128));
  EXPECT_NEAR(s.pwmcc, 0.246, 0.02);
  EXPECT_EQ(parse_null_kind("covariance"), NullKind::Covariance);
  EXPECT_THROW(parse_null_kind("uniform"), Error);
}

TEST(Nulls, UntrainedIsTheInitialisationWithEncoderEqualToDecoderTranspose) {
  const SaeModel like = model_with(6, 4, std::vector<float>(24, 0.5f), std::vector<float>(24, 0.25f));
  const SaeModel n0 = untrained_null_sae(like, 1000), n1 = untrained_null_sae(like, 1001);
  EXPECT_NO_THROW(n0.validate("untrained null"));
  EXPECT_NE(n0.W_dec, n1.W_dec);
  EXPECT_EQ(n0.W_dec, untrained_null_sae(like, 1000).W_dec);
  for (int64_t i = 0; i < 6; ++i) {
    EXPECT_NEAR(row_norm(n0.W_dec, i, 4), 1.0, 1e-6);
    for (int64_t d = 0; d < 4; ++d)
      EXPECT_EQ(n0.W_enc[static_cast<size_t>(d * 6 + i)], n0.W_dec[static_cast<size_t>(i * 4 + d)]);
  }
  const SaeModel g = null_sae_from_decoder(like, gaussian_null_decoder(6, 4, 3));
  EXPECT_NEAR(pair_stability(decoder_features(g), encoder_features(g)).matched_mean_cos, 1.0, 1e-6);
}

TEST(Nulls, CovarianceNullLivesInTheDataSubspace) {
  // Rows x = mean + a u + b w with u, w orthonormal in R^5: Sigma has rank 2, every null feature lies in
  // span(u, w). Sigma is checked against a direct double computation.
  const int64_t n = 400, D = 5;
  const double u[D] = {0.6, 0.8, 0, 0, 0}, w[D] = {0, 0, 0, 0, 1};
  std::vector<float> x(static_cast<size_t>(n * D));
  const std::vector<float> g = gaussian_null_decoder(n, 2, 7);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t d = 0; d < D; ++d) {
      x[static_cast<size_t>(r * D + d)] =
          static_cast<float>(1.0 + 3.0 * at(g, 2 * r) * u[d] + at(g, 2 * r + 1) * w[d]);
    }
  }
  const CovarianceNull cov(x.data(), n, D);
  // Streamed in blocks of 64 rows (the last one partial): the same mean bit for bit, Sigma to rounding.
  const CovarianceNull streamed(
      [&](int64_t first, int64_t count, float* out) { std::copy_n(x.begin() + first * D, count * D, out); },
      n, D, 64);
  EXPECT_EQ(streamed.mean(), cov.mean());
  EXPECT_LT((streamed.covariance() - cov.covariance()).cwiseAbs().maxCoeff(), 1e-12);
  for (int64_t i = 0; i < D; ++i) {
    for (int64_t j = 0; j < D; ++j) {
      double mi = 0, mj = 0, s = 0;
      for (int64_t r = 0; r < n; ++r) {
        mi += at(x, r * D + i);
        mj += at(x, r * D + j);
      }
      mi /= n;
      mj /= n;
      for (int64_t r = 0; r < n; ++r) s += (at(x, r * D + i) - mi) * (at(x, r * D + j) - mj);
      EXPECT_NEAR(cov.covariance()(i, j), s / (n - 1), 1e-9);
    }
  }
  const std::vector<float> f = cov.decoder(50, 1000);
  EXPECT_NE(f, cov.decoder(50, 1001));
  for (int64_t i = 0; i < 50; ++i) {
    double in_span = 0;
    double pu = 0, pw = 0;
    for (int64_t d = 0; d < D; ++d) {
      pu += at(f, i * D + d) * u[d];
      pw += at(f, i * D + d) * w[d];
    }
    in_span = pu * pu + pw * pw;
    EXPECT_NEAR(in_span, 1.0, 1e-5);
    EXPECT_NEAR(row_norm(f, i, D), 1.0, 1e-6);
  }
  const std::vector<float> constant(static_cast<size_t>(10 * D), 2.0f);
  EXPECT_THROW(CovarianceNull(constant.data(), 10, D), Error);
}

}  // namespace
}  // namespace husai
