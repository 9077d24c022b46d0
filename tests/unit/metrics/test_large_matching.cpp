// The large-dictionary path (metrics/large_matching.hpp) against the dense one: the sparse assignment with
// its potentials against the dense solver (itself checked against SciPy) on complete graphs, and
// large_pair_stability against pair_stability on dictionaries where the first candidate graph is enough
// (near-permuted copies) and where it is not (low-dimensional random atoms with many close rivals, so the
// certificate has to add pairs).

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "gradcheck.hpp"
#include "husai/core/error.hpp"
#include "husai/core/threading.hpp"
#include "husai/metrics/assignment.hpp"
#include "husai/metrics/large_matching.hpp"

namespace husai {
namespace {

FeatureSet random_features(int64_t n, int64_t dim, uint64_t seed) {
  std::vector<float> rows(static_cast<size_t>(n * dim));
  std::vector<double> tmp(rows.size());
  gradcheck::fill_normal(tmp, seed, 1.0);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<float>(tmp[i]);
  return features_from_rows(rows.data(), n, dim);
}

TEST(SparseAssignment, CompleteGraphMatchesTheDenseSolverAndItsPotentialsCertify) {
  for (const auto& [nr, nc] : std::vector<std::pair<int64_t, int64_t>>{{40, 40}, {30, 55}, {1, 7}}) {
    std::vector<double> cost(static_cast<size_t>(nr * nc));
    gradcheck::fill_normal(cost, static_cast<uint64_t>(nr * 100 + nc), 1.0);
    std::vector<int64_t> row_ptr = {0};
    std::vector<int32_t> cols;
    std::vector<double> costs;
    for (int64_t i = 0; i < nr; ++i) {
      for (int64_t j = 0; j < nc; ++j) {
        cols.push_back(static_cast<int32_t>(j));
        costs.push_back(cost[static_cast<size_t>(i * nc + j)]);
      }
      row_ptr.push_back(static_cast<int64_t>(cols.size()));
    }
    SparseAssignment s;
    ASSERT_TRUE(solve_sparse_assignment(nr, nc, row_ptr, cols, costs, s));
    double total = 0;
    std::vector<int> used(static_cast<size_t>(nc), 0);
    for (int64_t i = 0; i < nr; ++i) {
      const int64_t j = s.col_of_row[static_cast<size_t>(i)];
      ASSERT_GE(j, 0);
      EXPECT_EQ(used[static_cast<size_t>(j)]++, 0) << "column used twice";
      total += cost[static_cast<size_t>(i * nc + j)];
      EXPECT_NEAR(
          cost[static_cast<size_t>(i * nc + j)] - s.u[static_cast<size_t>(i)] - s.v[static_cast<size_t>(j)],
          0.0, 1e-12);
    }
    EXPECT_NEAR(total, linear_sum_assignment(cost.data(), nr, nc).total, 1e-9) << nr << "x" << nc;
    for (int64_t j = 0; j < nc; ++j) {
      EXPECT_LE(s.v[static_cast<size_t>(j)], 1e-12);
      if (used[static_cast<size_t>(j)] == 0) {
        EXPECT_EQ(s.v[static_cast<size_t>(j)], 0.0);
      }
      for (int64_t i = 0; i < nr; ++i) {
        EXPECT_GE(
            cost[static_cast<size_t>(i * nc + j)] - s.u[static_cast<size_t>(i)] - s.v[static_cast<size_t>(j)],
            -1e-12);
      }
    }
  }
}

TEST(SparseAssignment, AGraphWithoutACompleteMatchingIsReported) {
  // Rows 0 and 1 can only use column 0.
  const std::vector<int64_t> row_ptr = {0, 1, 2};
  const std::vector<int32_t> cols = {0, 0};
  const std::vector<double> costs = {1.0, 2.0};
  SparseAssignment s;
  EXPECT_FALSE(solve_sparse_assignment(2, 3, row_ptr, cols, costs, s));
}

void expect_same_as_dense(const FeatureSet& a, const FeatureSet& b, LargeMatchingInfo& info,
                          int64_t candidates = kLargeCandidates) {
  const PairStability dense = pair_stability(a, b, true);
  const PairStability large = large_pair_stability(a, b, true, &info, nullptr, candidates);
  EXPECT_TRUE(info.certified);
  EXPECT_NEAR(large.pwmcc, dense.pwmcc, 1e-6);
  EXPECT_NEAR(large.matched_mean_cos, dense.matched_mean_cos, 1e-6);
  for (size_t t = 0; t < dense.shared_frac.size(); ++t)
    EXPECT_NEAR(large.shared_frac[t], dense.shared_frac[t], 2.0 / static_cast<double>(a.n_features));
  ASSERT_EQ(large.best_ab.size(), dense.best_ab.size());
  for (size_t i = 0; i < dense.best_ab.size(); ++i) EXPECT_NEAR(large.best_ab[i], dense.best_ab[i], 1e-5);
  for (size_t j = 0; j < dense.best_ba.size(); ++j) EXPECT_NEAR(large.best_ba[j], dense.best_ba[j], 1e-5);
}

TEST(LargeMatching, NearPermutedCopyIsCertifiedInOneRound) {
  const FeatureSet a = random_features(700, 48, 1);
  // b: a's atoms in reverse order, slightly perturbed, plus 100 unrelated atoms.
  const FeatureSet noise = random_features(800, 48, 2);
  std::vector<float> rows(static_cast<size_t>(800 * 48));
  for (int64_t j = 0; j < 800; ++j) {
    for (int64_t d = 0; d < 48; ++d) {
      const float base = j < 700 ? a.rows[static_cast<size_t>((699 - j) * 48 + d)] : 0.0f;
      rows[static_cast<size_t>(j * 48 + d)] = base + 0.05f * noise.rows[static_cast<size_t>(j * 48 + d)];
    }
  }
  const FeatureSet b = features_from_rows(rows.data(), 800, 48);
  LargeMatchingInfo info;
  expect_same_as_dense(a, b, info);
  EXPECT_EQ(info.rounds, 1);
}

TEST(LargeMatching, CrowdedRandomAtomsNeedTheCertificateAndStillMatchTheDenseOptimum) {
  const FeatureSet a = random_features(900, 6, 3);  // 900 atoms in 6 dimensions: many near-equal rivals
  const FeatureSet b = random_features(1000, 6, 4);
  LargeMatchingInfo info;
  expect_same_as_dense(a, b, info, 2);  // two candidates per row to start: the certificate must add pairs
  std::printf("crowded 900 x 1000 in 6-d: %lld rounds, %lld pairs added, %lld edges\n",
              static_cast<long long>(info.rounds), static_cast<long long>(info.violations_added),
              static_cast<long long>(info.edges));
  EXPECT_GT(info.rounds, 1);  // the top-2 candidates alone are not optimal here
}

TEST(LargeMatching, SameResultOnOneAndTwoThreads) {
  const FeatureSet a = random_features(600, 8, 5);
  const FeatureSet b = random_features(650, 8, 6);
  set_num_threads(1);
  std::vector<int64_t> m1, m2;
  const PairStability one = large_pair_stability(a, b, true, nullptr, &m1);
  set_num_threads(2);
  const PairStability two = large_pair_stability(a, b, true, nullptr, &m2);
  set_num_threads(0);
  EXPECT_EQ(one.matched_mean_cos, two.matched_mean_cos);
  EXPECT_EQ(one.pwmcc, two.pwmcc);
  EXPECT_EQ(m1, m2);
}

TEST(LargeMatching, RefusesMoreRowsThanColumns) {
  EXPECT_THROW(large_pair_stability(random_features(10, 4, 1), random_features(9, 4, 2), false), Error);
}

}  // namespace
}  // namespace husai
