// Seed-level statistics on cases worked out by hand (pair means, resample statistics, an exact permutation
// p with a floating-point tie, Holm, Cohen's d, a Mann-Whitney U, numpy's quantile), the redraw rule, the
// bootstrap distribution against its exact expectation, Monte Carlo against exact permutation p-values, and
// determinism (seed, thread count). SciPy parity lives in tests/parity/statistics_parity.py.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>
#include <tuple>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/core/threading.hpp"
#include "husai/metrics/statistics.hpp"

namespace husai::stats {
namespace {

SimilarityMatrix make_sim(int64_t n, const std::vector<std::tuple<int, int, double>>& pairs) {
  SimilarityMatrix s;
  s.n = n;
  s.values.assign(static_cast<size_t>(n * n), 1.0);
  for (const auto& [i, j, v] : pairs) {
    s.values[static_cast<size_t>(i * n + j)] = v;
    s.values[static_cast<size_t>(j * n + i)] = v;
  }
  return s;
}

// Deterministic pseudo-random symmetric matrix (no RNG under test involved).
SimilarityMatrix grid_sim(int64_t n, double base) {
  SimilarityMatrix s;
  s.n = n;
  s.values.assign(static_cast<size_t>(n * n), 1.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) {
      const double v = base + 0.1 * std::sin(static_cast<double>(3 * i + 7 * j + 1));
      s.values[static_cast<size_t>(i * n + j)] = v;
      s.values[static_cast<size_t>(j * n + i)] = v;
    }
  return s;
}

const SimilarityMatrix kThree = make_sim(3, {{0, 1, 0.2}, {0, 2, 0.4}, {1, 2, 0.9}});

TEST(Statistics, MeanPairwiseByHand) {
  EXPECT_DOUBLE_EQ(mean_pairwise(kThree), 0.5);
  // Seeds {0, 0, 1}: the (0, 0) pair is skipped, the two (0, 1) pairs give 0.2.
  EXPECT_DOUBLE_EQ(mean_pairwise_resample(kThree, {0, 0, 1}), 0.2);
  // Seeds {0, 1, 2, 2}: (0,1) 0.2, (0,2) x2 0.4, (1,2) x2 0.9, (2,2) skipped: 2.8 / 5.
  EXPECT_DOUBLE_EQ(mean_pairwise_resample(kThree, {0, 1, 2, 2}), 0.56);
  EXPECT_DOUBLE_EQ(mean_pairwise_resample(kThree, {2, 1, 0}), mean_pairwise(kThree));
  EXPECT_THROW(mean_pairwise_resample(kThree, {1, 1, 1}), Error);
  EXPECT_THROW(mean_pairwise_resample(kThree, {0, 3}), Error);
  EXPECT_THROW(mean_pairwise(make_sim(1, {})), Error);
}

TEST(Statistics, ResamplesAreDeterministicAndHoldTwoDistinctSeeds) {
  // Two seeds: every resample must be {0, 1}; half the draws of size 2 are rejected, so redraws happen.
  int64_t total_redrawn = 0;
  for (int64_t b = 0; b < 2000; ++b) {
    int64_t redrawn = 0;
    const auto s = bootstrap_resample_seeds(2, 7, b, 0, &redrawn);
    ASSERT_EQ(std::set<int64_t>(s.begin(), s.end()).size(), 2u);
    total_redrawn += redrawn;
    ASSERT_EQ(s, bootstrap_resample_seeds(2, 7, b, 0));
  }
  // Rejections per resample are geometric with mean 1: 2000 +- 5 * sqrt(2 * 2000).
  EXPECT_NEAR(static_cast<double>(total_redrawn), 2000.0, 320.0);
  EXPECT_NE(bootstrap_resample_seeds(10, 7, 0, 0), bootstrap_resample_seeds(10, 7, 0, 1));
  EXPECT_NE(bootstrap_resample_seeds(10, 7, 0, 0), bootstrap_resample_seeds(10, 8, 0, 0));
}

TEST(Statistics, BootstrapStatisticsAreTheResampleStatistics) {
  const SimilarityMatrix sim = grid_sim(4, 0.5);
  const BootstrapDetail d = seed_bootstrap_detail(sim, 500, 0.95, 3);
  int64_t redrawn = 0;
  for (int64_t b = 0; b < 500; ++b) {
    int64_t k = 0;
    const auto seeds = bootstrap_resample_seeds(4, 3, b, 0, &k);
    redrawn += k;
    ASSERT_DOUBLE_EQ(d.statistics[static_cast<size_t>(b)], mean_pairwise_resample(sim, seeds)) << b;
  }
  EXPECT_EQ(d.result.n_redrawn, redrawn);
  EXPECT_GT(redrawn, 0);  // P(one seed four times) = 4 / 256 per draw
}

TEST(Statistics, TwoSeedBootstrapIsDegenerate) {
  const SimilarityMatrix sim = make_sim(2, {{0, 1, 0.37}});
  const BootstrapResult r = seed_bootstrap(sim, 1000, 0.95, 1);
  EXPECT_EQ(r.estimate, 0.37);
  EXPECT_EQ(r.percentile.lo, 0.37);
  EXPECT_EQ(r.percentile.hi, 0.37);
  EXPECT_EQ(r.bca.lo, 0.37);
  EXPECT_EQ(r.bca.hi, 0.37);
  EXPECT_EQ(r.standard_error, 0.0);
  EXPECT_GT(r.n_redrawn, 0);
}

TEST(Statistics, BootstrapMeanMatchesExactConditionalExpectation) {
  // Three seeds: the 27 equally likely draws minus the 3 with one seed. The statistic of a draw with
  // multiplicities c is sum c_i c_j s_ij / sum c_i c_j; its mean over the 24 valid draws is exact.
  double exact = 0;
  int valid = 0;
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b)
      for (int c = 0; c < 3; ++c) {
        if (a == b && b == c) continue;
        exact += mean_pairwise_resample(kThree, {a, b, c});
        ++valid;
      }
  exact /= valid;
  const BootstrapDetail d = seed_bootstrap_detail(kThree, 100000, 0.95, 11);
  const double mean = std::accumulate(d.statistics.begin(), d.statistics.end(), 0.0) / 100000.0;
  // SE of the mean: sd / sqrt(B) with sd <= 0.35.
  EXPECT_NEAR(mean, exact, 5 * 0.35 / std::sqrt(100000.0));
  // Redraw rate: P(reject) = 1/9, so rejections per resample are (1/9) / (8/9) = 1/8 on average.
  EXPECT_NEAR(static_cast<double>(d.result.n_redrawn) / 100000.0, 0.125, 0.01);
  // Jackknife by hand: leaving out seed 0, 1, 2 leaves one pair each.
  ASSERT_EQ(d.jackknife.size(), 3u);
  EXPECT_DOUBLE_EQ(d.jackknife[0], 0.9);
  EXPECT_DOUBLE_EQ(d.jackknife[1], 0.4);
  EXPECT_DOUBLE_EQ(d.jackknife[2], 0.2);
  // Acceleration by hand (SciPy's formula): mean 0.5, U = 2 (0.5 - theta_i) = (-0.8, 0.2, 0.6).
  const double num = (-0.512 + 0.008 + 0.216) / 27, den = (0.64 + 0.04 + 0.36) / 9;
  EXPECT_NEAR(d.acceleration, num / (6 * std::pow(den, 1.5)), 1e-15);
  // The percentile interval is numpy's quantile of the distribution.
  EXPECT_EQ(d.result.percentile.lo, quantile(d.statistics, 0.025));
  EXPECT_EQ(d.result.percentile.hi, quantile(d.statistics, 0.975));
  EXPECT_LE(d.result.bca.lo, d.result.bca.hi);
}

TEST(Statistics, BootstrapIsDeterministicAndThreadIndependent) {
  const SimilarityMatrix sim = grid_sim(7, 0.6);
  const SimilarityMatrix null = grid_sim(5, 0.2);
  const int saved = num_threads();
  set_num_threads(1);
  const BootstrapDetail one = seed_bootstrap_detail(sim, 5000, 0.9, 42);
  const BootstrapDetail diff_one = seed_bootstrap_difference_detail(sim, null, 5000, 0.9, 42);
  set_num_threads(4);
  const BootstrapDetail four = seed_bootstrap_detail(sim, 5000, 0.9, 42);
  const BootstrapDetail diff_four = seed_bootstrap_difference_detail(sim, null, 5000, 0.9, 42);
  EXPECT_EQ(one.statistics, four.statistics);
  EXPECT_EQ(one.result.bca.lo, four.result.bca.lo);
  EXPECT_EQ(one.result.n_redrawn, four.result.n_redrawn);
  EXPECT_EQ(diff_one.statistics, diff_four.statistics);
  // Large enough (64 seeds, 12,000 resamples or labelings) to run on the thread pool.
  const SimilarityMatrix big = grid_sim(64, 0.5);
  set_num_threads(1);
  const BootstrapDetail big_one = seed_bootstrap_detail(big, 12000, 0.95, 5);
  const PermutationResult perm_one = permutation_test(big, 32, 12000, 5);
  set_num_threads(4);
  const BootstrapDetail big_four = seed_bootstrap_detail(big, 12000, 0.95, 5);
  const PermutationResult perm_four = permutation_test(big, 32, 12000, 5);
  set_num_threads(saved);
  EXPECT_EQ(big_one.statistics, big_four.statistics);
  EXPECT_EQ(perm_one.p_value, perm_four.p_value);
  EXPECT_EQ(perm_one.p_value_two_sided, perm_four.p_value_two_sided);
  EXPECT_FALSE(perm_one.exact);
  const BootstrapDetail other = seed_bootstrap_detail(sim, 5000, 0.9, 43);
  EXPECT_NE(one.statistics, other.statistics);
  // seed_bootstrap returns the detail's result.
  const BootstrapResult plain = seed_bootstrap(sim, 5000, 0.9, 42);
  EXPECT_EQ(plain.bca.hi, one.result.bca.hi);
  EXPECT_EQ(plain.standard_error, one.result.standard_error);
  // Group A of the difference draws what the one-group bootstrap draws; the difference's statistic is
  // the group-A statistic minus group B's resample.
  for (int64_t b = 0; b < 50; ++b) {
    const double want = one.statistics[static_cast<size_t>(b)] -
                        mean_pairwise_resample(null, bootstrap_resample_seeds(5, 42, b, 1));
    ASSERT_DOUBLE_EQ(diff_one.statistics[static_cast<size_t>(b)], want);
  }
  EXPECT_DOUBLE_EQ(diff_one.result.estimate, mean_pairwise(sim) - mean_pairwise(null));
  EXPECT_EQ(diff_one.jackknife.size(), 12u);
}

TEST(Statistics, BootstrapRejectsBadArguments) {
  EXPECT_THROW(seed_bootstrap(make_sim(1, {}), 100, 0.95, 1), Error);
  EXPECT_THROW(seed_bootstrap(kThree, 1, 0.95, 1), Error);
  EXPECT_THROW(seed_bootstrap(kThree, 100, 1.0, 1), Error);
  SimilarityMatrix bad = kThree;
  bad.values.pop_back();
  EXPECT_THROW(seed_bootstrap(bad, 100, 0.95, 1), Error);
  EXPECT_THROW(seed_bootstrap_difference(kThree, make_sim(1, {}), 100, 0.95, 1), Error);
}

TEST(Statistics, ExactPermutationByHand) {
  // Four dictionaries, two per group: each labeling has one pair per group, stat = s_A - s_B.
  // {01|23} 0.9 - 0.1 = 0.8, {02|13} 0.2 - 0.35, {03|12} 0.25 - 0.3, {12|03} 0.3 - 0.25, {13|02} 0.35 - 0.2,
  // {23|01} 0.1 - 0.9: one of six at least 0.8, two of six at least 0.8 in absolute value.
  const SimilarityMatrix sim =
      make_sim(4, {{0, 1, 0.9}, {2, 3, 0.1}, {0, 2, 0.2}, {1, 3, 0.35}, {0, 3, 0.25}, {1, 2, 0.3}});
  const PermutationResult r = permutation_test(sim, 2, 0, 1);
  EXPECT_TRUE(r.exact);
  EXPECT_EQ(r.n_permutations, 6);
  EXPECT_DOUBLE_EQ(r.observed, 0.8);
  EXPECT_DOUBLE_EQ(r.p_value, 1.0 / 6);
  EXPECT_DOUBLE_EQ(r.p_value_two_sided, 2.0 / 6);
}

TEST(Statistics, PermutationCountsFloatingPointTies) {
  // Observed 0.3 - 0.1 = 0.19999999999999998; {02|13} gives 0.7 - 0.5 = 0.19999999999999996, the same
  // number in exact arithmetic. With the tolerance: {01|23}, {02|13}, {12|03} (0.6 - 0.05) reach it: 3 of 6.
  const SimilarityMatrix sim =
      make_sim(4, {{0, 1, 0.3}, {2, 3, 0.1}, {0, 2, 0.7}, {1, 3, 0.5}, {0, 3, 0.05}, {1, 2, 0.6}});
  ASSERT_NE(0.3 - 0.1, 0.7 - 0.5);  // the premise: a tie only up to rounding
  const PermutationResult r = permutation_test(sim, 2, 0, 1);
  EXPECT_DOUBLE_EQ(r.p_value, 0.5);
  EXPECT_DOUBLE_EQ(r.p_value_two_sided, 1.0);
}

TEST(Statistics, MonteCarloPermutationAgreesWithExact) {
  SimilarityMatrix sim = grid_sim(10, 0.3);
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 0; j < 5; ++j)
      if (i != j) sim.values[static_cast<size_t>(i * 10 + j)] += 0.04;
  const PermutationResult exact = permutation_test(sim, 5, 0, 1);
  ASSERT_TRUE(exact.exact);
  EXPECT_EQ(exact.n_permutations, 252);
  const int saved = num_threads();
  set_num_threads(1);
  const PermutationResult mc1 = permutation_test(sim, 5, 20000, 9, /*max_exact=*/0);
  set_num_threads(3);
  const PermutationResult mc3 = permutation_test(sim, 5, 20000, 9, /*max_exact=*/0);
  set_num_threads(saved);
  EXPECT_FALSE(mc1.exact);
  EXPECT_EQ(mc1.n_permutations, 20001);
  EXPECT_EQ(mc1.p_value, mc3.p_value);
  EXPECT_EQ(mc1.p_value_two_sided, mc3.p_value_two_sided);
  const double p = exact.p_value;
  EXPECT_NEAR(mc1.p_value, p, 5 * std::sqrt(p * (1 - p) / 20000) + 1e-4);
  const double p2 = exact.p_value_two_sided;
  EXPECT_NEAR(mc1.p_value_two_sided, p2, 5 * std::sqrt(p2 * (1 - p2) / 20000) + 1e-4);
  EXPECT_THROW(permutation_test(sim, 1, 100, 1), Error);
  EXPECT_THROW(permutation_test(sim, 9, 100, 1), Error);
}

TEST(Statistics, CohensDByHand) {
  // x = {2, 4}: mean 3, sum of squares 2; y = {1, 1, 1}: mean 1, 0; pooled sd sqrt(2 / 3); d = sqrt(6).
  EXPECT_NEAR(cohens_d({2, 4}, {1, 1, 1}), std::sqrt(6.0), 1e-15);
  EXPECT_DOUBLE_EQ(cohens_d({1, 2, 3}, {4, 5, 6}), -3.0);
  EXPECT_EQ(cohens_d({1, 1}, {0, 0}), std::numeric_limits<double>::infinity());
  EXPECT_EQ(cohens_d({0, 0}, {1, 1}), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(cohens_d({1, 1}, {1, 1}), 0.0);
  EXPECT_TRUE(std::isnan(cohens_d({1}, {2})));
  EXPECT_TRUE(std::isnan(cohens_d({}, {1, 2})));
}

TEST(Statistics, MannWhitneyByHand) {
  // x above every y: U = 6; exact P(U >= 6) = 1 / C(5, 2).
  MannWhitneyResult r = mann_whitney_greater({3, 4, 5}, {1, 2});
  EXPECT_EQ(r.method, "exact");
  EXPECT_EQ(r.u, 6.0);
  EXPECT_NEAR(r.p_value, 0.1, 1e-15);
  r = mann_whitney_greater({1, 2}, {3, 4, 5});
  EXPECT_EQ(r.u, 0.0);
  EXPECT_DOUBLE_EQ(r.p_value, 1.0);
  // Ties: x = {2, 3}, y = {1, 2}: ranks 2.5, 4 | 1, 2.5; U = 6.5 - 3 = 3.5; tie term 6;
  // s = sqrt(4 / 12 * (5 - 6 / 12)) = sqrt(1.5); z = (3.5 - 2 - 0.5) / s; p = erfc(z / sqrt 2) / 2.
  r = mann_whitney_greater({2, 3}, {1, 2});
  EXPECT_EQ(r.method, "asymptotic");
  EXPECT_EQ(r.u, 3.5);
  EXPECT_NEAR(r.p_value, 0.5 * std::erfc(1 / std::sqrt(1.5) / std::sqrt(2.0)), 1e-15);
  EXPECT_THROW(mann_whitney_greater({}, {1}), Error);
}

TEST(Statistics, MannWhitneyExactMatchesEnumeration) {
  // All C(7, 3) placements of 3 x-values among 7 distinct ranks: P(U >= u) by counting.
  const std::vector<double> x = {2.5, 6.1, 4.4}, y = {1.0, 3.3, 5.2, 7.7};
  const MannWhitneyResult r = mann_whitney_greater(x, y);
  ASSERT_EQ(r.method, "exact");
  EXPECT_EQ(r.u, 6.0);  // 2.5 > 1; 6.1 > 1, 3.3, 5.2; 4.4 > 1, 3.3
  int at_least = 0, total = 0;
  for (int a = 0; a < 7; ++a)
    for (int b = a + 1; b < 7; ++b)
      for (int c = b + 1; c < 7; ++c) {
        const int u = (a - 0) + (b - 1) + (c - 2);  // y-ranks below each x-rank
        at_least += u >= 6 ? 1 : 0;
        ++total;
      }
  EXPECT_NEAR(r.p_value, static_cast<double>(at_least) / total, 1e-15);
}

TEST(Statistics, HolmByHand) {
  // Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running max 0.06.
  const std::vector<double> h = holm_adjust({0.01, 0.04, 0.03, 0.005});
  ASSERT_EQ(h.size(), 4u);
  EXPECT_NEAR(h[0], 0.03, 1e-16);
  EXPECT_NEAR(h[1], 0.06, 1e-16);
  EXPECT_NEAR(h[2], 0.06, 1e-16);
  EXPECT_NEAR(h[3], 0.02, 1e-16);
  EXPECT_EQ(holm_adjust({0.5, 0.6}), (std::vector<double>{1.0, 1.0}));
  const std::vector<double> with_nan = holm_adjust({0.01, std::nan(""), 0.02});
  EXPECT_DOUBLE_EQ(with_nan[0], 0.02);
  EXPECT_TRUE(std::isnan(with_nan[1]));
  EXPECT_DOUBLE_EQ(with_nan[2], 0.02);
  EXPECT_TRUE(holm_adjust({}).empty());
  EXPECT_THROW(holm_adjust({1.5}), Error);
}

TEST(Statistics, QuantileLikeNumpy) {
  const std::vector<double> v = {4, 1, 3, 2};
  EXPECT_EQ(quantile(v, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(quantile(v, 0.1), 1.3);  // virtual index 0.3
  EXPECT_EQ(quantile(v, 0.0), 1.0);
  EXPECT_EQ(quantile(v, 1.0), 4.0);
  EXPECT_EQ(quantile({5}, 0.3), 5.0);
  EXPECT_TRUE(std::isnan(quantile({1, std::nan(""), 2}, 0.5)));
  EXPECT_THROW(quantile(v, 1.5), Error);
  EXPECT_THROW(quantile({}, 0.5), Error);
}

TEST(Statistics, NormalDistribution) {
  EXPECT_EQ(normal_cdf(0), 0.5);
  EXPECT_NEAR(normal_cdf(1.959963984540054), 0.975, 1e-15);
  EXPECT_NEAR(normal_quantile(0.975), 1.959963984540054, 1e-14);
  EXPECT_EQ(normal_quantile(0), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(normal_quantile(1), std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(normal_quantile(1.5)));
  EXPECT_EQ(normal_cdf(-std::numeric_limits<double>::infinity()), 0.0);
  EXPECT_EQ(normal_cdf(std::numeric_limits<double>::infinity()), 1.0);
}

}  // namespace
}  // namespace husai::stats
