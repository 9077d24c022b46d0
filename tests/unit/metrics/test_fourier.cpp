// Fourier ground truth on planted data: the embedding's power spectrum and key frequencies against hand
// values, the key-frequency subspace's rank, variance and fraction against the planted components, and the
// recovery of that subspace by decoders that contain all, part or none of the planted directions.

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"
#include "husai/metrics/fourier.hpp"

namespace husai {
namespace {

double cosf_(int64_t f, int64_t t, int64_t p) {
  return std::cos(2 * std::numbers::pi * static_cast<double>(f * t) / static_cast<double>(p));
}
double sinf_(int64_t f, int64_t t, int64_t p) {
  return std::sin(2 * std::numbers::pi * static_cast<double>(f * t) / static_cast<double>(p));
}

TEST(Fourier, EmbeddingPowerAndKeyFrequencies) {
  // W_E[t] = 3 cos_2(t) e0 + 3 sin_2(t) e1 + 2 cos_5(t) e2 + 0.1 cos_1(t) e3. Projecting 3 cos_2 on the
  // unit cos_2 gives 3 ||cos_2|| = 3 sqrt(13 / 2): P(2) = 2 * 9 * 6.5 = 117, P(5) = 4 * 6.5 = 26,
  // P(1) = 0.01 * 6.5 = 0.065, every other frequency 0.
  const int64_t p = 13, d = 5;
  std::vector<float> w(static_cast<size_t>(p * d), 0.0f);
  for (int64_t t = 0; t < p; ++t) {
    w[static_cast<size_t>(t * d + 0)] = static_cast<float>(3 * cosf_(2, t, p));
    w[static_cast<size_t>(t * d + 1)] = static_cast<float>(3 * sinf_(2, t, p));
    w[static_cast<size_t>(t * d + 2)] = static_cast<float>(2 * cosf_(5, t, p));
    w[static_cast<size_t>(t * d + 3)] = static_cast<float>(0.1 * cosf_(1, t, p));
  }
  const std::vector<double> power = embedding_frequency_power(w.data(), p, d);
  ASSERT_EQ(power.size(), 6u);
  EXPECT_NEAR(power[1], 117.0, 1e-4);
  EXPECT_NEAR(power[4], 26.0, 1e-4);
  EXPECT_NEAR(power[0], 0.065, 1e-6);
  EXPECT_NEAR(power[2], 0.0, 1e-9);
  EXPECT_EQ(key_frequencies(power, 2), (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(key_frequencies(power, 3), (std::vector<int64_t>{2, 5, 1}));
}

class FourierPlanted : public ::testing::Test {
 protected:
  // All 13 x 13 pairs in R^10: variance 2 on e0 (cos_3 a), 1.5 on e1 (sin_3 a), 1.125 on e2 (cos_3 c),
  // 0.5 on e3 (sin_4 b), plus 0.125 on e5 from frequency 1 (not key) and a constant offset.
  static constexpr int64_t p = 13, D = 10;
  std::vector<int64_t> a, b, c;
  std::vector<float> x;
  void SetUp() override {
    for (int64_t i = 0; i < p; ++i) {
      for (int64_t j = 0; j < p; ++j) {
        a.push_back(i);
        b.push_back(j);
        c.push_back((i + j) % p);
        std::vector<double> row(D, 0.3);
        row[0] += 2.0 * cosf_(3, i, p);
        row[1] += std::sqrt(3.0) * sinf_(3, i, p);
        row[2] += 1.5 * cosf_(3, (i + j) % p, p);
        row[3] += 1.0 * sinf_(4, j, p);
        row[5] += 0.5 * cosf_(1, i, p);
        for (const double v : row) x.push_back(static_cast<float>(v));
      }
    }
  }
  std::vector<float> decoder(const std::vector<int64_t>& planted_axes, int64_t n_random) const {
    std::vector<float> w;
    const Philox rng(9, 1);
    uint64_t k = 0;
    for (const int64_t axis : planted_axes) {
      for (int64_t d = 0; d < D; ++d) w.push_back(d == axis ? 2.0f : 0.0f);  // any norm: rows are normalised
    }
    for (int64_t i = 0; i < n_random; ++i) {
      for (int64_t d = 0; d < D; ++d) w.push_back(static_cast<float>(rng.normal(k++)));
    }
    return w;
  }
};

TEST_F(FourierPlanted, SubspaceIsThePlantedComponents) {
  const FourierSubspace s = fourier_subspace(x.data(), p * p, D, a, b, c, p, {3, 4});
  EXPECT_EQ(s.all.rank, 4);
  EXPECT_NEAR(s.all.variance, 2.0 + 1.5 + 1.125 + 0.5, 1e-5);
  EXPECT_NEAR(s.total_variance, 5.125 + 0.125, 1e-5);
  EXPECT_NEAR(s.fourier_fraction(), 5.125 / 5.25, 1e-6);
  ASSERT_EQ(s.per_frequency.size(), 2u);
  EXPECT_EQ(s.per_frequency[0].rank, 3);
  EXPECT_NEAR(s.per_frequency[0].variance, 4.625, 1e-5);
  EXPECT_EQ(s.per_frequency[1].rank, 1);
  // The basis spans e0..e3: each basis row has no weight outside the first four axes.
  for (int64_t k = 0; k < s.all.rank; ++k) {
    double outside = 0;
    for (int64_t d = 4; d < D; ++d) outside += std::pow(s.all.basis[static_cast<size_t>(k * D + d)], 2);
    EXPECT_LT(outside, 1e-10);
  }
  EXPECT_THROW(fourier_subspace(x.data(), p * p, D, a, b, c, p, {7}), Error);  // 2 * 7 >= 13
}

TEST_F(FourierPlanted, RecoveryOfFullPartialAndRandomDecoders) {
  const FourierSubspace s = fourier_subspace(x.data(), p * p, D, a, b, c, p, {3, 4});
  // All four planted axes among random rows: the 4 most aligned rows are exactly them.
  const std::vector<float> full = decoder({3, 0, 2, 1}, 20);
  const FourierRecovery r_full = fourier_recovery(s.all, D, full.data(), 24, 0);
  EXPECT_EQ(r_full.m, 4);
  EXPECT_NEAR(r_full.variance_recovered, 1.0, 1e-6);
  EXPECT_NEAR(r_full.mean_top_alignment, 1.0, 1e-6);
  EXPECT_DOUBLE_EQ(r_full.random_baseline, 0.4);
  // Only e0 and e2: at m = 2 the captured variance is (2 + 1.125) / 5.125.
  const std::vector<float> part = decoder({0, 2}, 20);
  EXPECT_NEAR(fourier_recovery(s.all, D, part.data(), 22, 2).variance_recovered, 3.125 / 5.125, 1e-6);
  // Per frequency: frequency 4 (e3 only) is not recovered by the partial decoder's best row at all.
  const nlohmann::json j = fourier_recovery_json(s, part.data(), 22, {0, 2});
  EXPECT_EQ(j["key_subspace"].size(), 2u);
  // Frequency 3 (rank 3: e0, e1, e2): e0 and e2 plus the best random row, which adds part of e1's variance.
  EXPECT_GE(j["per_frequency"][0]["variance_recovered"].get<double>(), 3.125 / 4.625 - 1e-9);
  EXPECT_LT(j["per_frequency"][0]["variance_recovered"].get<double>(), 1.0);
  EXPECT_LT(j["per_frequency"][1]["variance_recovered"].get<double>(), 0.9);
  // Random rows only: strictly partial recovery.
  const std::vector<float> random = decoder({}, 4);
  const double rr = fourier_recovery(s.all, D, random.data(), 4, 0).variance_recovered;
  EXPECT_GT(rr, 0.0);
  EXPECT_LT(rr, 0.95);
}

}  // namespace
}  // namespace husai
