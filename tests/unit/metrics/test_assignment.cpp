// Linear assignment against brute force over every injective matching of small matrices: random, tied,
// constant, rectangular both ways, huge and negative values, forbidden (infinite) entries, maximise and
// minimise. SciPy parity on large matrices lives in tests/parity/stability_parity.py.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/metrics/assignment.hpp"

namespace husai {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Best total over all matchings of min(R, C) rows/columns; +-inf when no matching avoids forbidden entries.
double brute_force(const std::vector<double>& cost, int64_t R, int64_t C, bool maximize) {
  const bool tall = R > C;
  const int64_t small = tall ? C : R, big = tall ? R : C;
  std::vector<int64_t> perm(static_cast<size_t>(big));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  double best = maximize ? -kInf : kInf;
  // Every injective map small -> big appears as the prefix of some permutation.
  do {
    double total = 0;
    for (int64_t s = 0; s < small; ++s) {
      const int64_t b = perm[static_cast<size_t>(s)];
      total += tall ? cost[static_cast<size_t>(b * C + s)] : cost[static_cast<size_t>(s * C + b)];
    }
    best = maximize ? std::max(best, total) : std::min(best, total);
  } while (std::next_permutation(perm.begin(), perm.end()));
  return best;
}

void check_valid(const AssignmentResult& r, const std::vector<double>& cost, int64_t R, int64_t C) {
  ASSERT_EQ(r.rows.size(), static_cast<size_t>(std::min(R, C)));
  ASSERT_EQ(r.cols.size(), r.rows.size());
  EXPECT_TRUE(std::is_sorted(r.rows.begin(), r.rows.end()));
  EXPECT_EQ(std::set<int64_t>(r.rows.begin(), r.rows.end()).size(), r.rows.size());
  EXPECT_EQ(std::set<int64_t>(r.cols.begin(), r.cols.end()).size(), r.cols.size());
  double total = 0;
  for (size_t k = 0; k < r.rows.size(); ++k) {
    ASSERT_GE(r.rows[k], 0);
    ASSERT_LT(r.rows[k], R);
    ASSERT_GE(r.cols[k], 0);
    ASSERT_LT(r.cols[k], C);
    total += cost[static_cast<size_t>(r.rows[k] * C + r.cols[k])];
  }
  EXPECT_EQ(total, r.total);
}

void expect_optimal(const std::vector<double>& cost, int64_t R, int64_t C, bool maximize,
                    const std::string& what) {
  SCOPED_TRACE(what + " " + std::to_string(R) + "x" + std::to_string(C) + (maximize ? " max" : " min"));
  const AssignmentResult r = linear_sum_assignment(cost.data(), R, C, maximize);
  check_valid(r, cost, R, C);
  const double expected = brute_force(cost, R, C, maximize);
  EXPECT_NEAR(r.total, expected, 1e-9 * std::max(1.0, std::fabs(expected)));
}

TEST(Assignment, HandExample) {
  // SciPy's documentation example: minimum 5 with rows (0,1,2) -> cols (1,0,2).
  const std::vector<double> cost = {4, 1, 3, 2, 0, 5, 3, 2, 2};
  const AssignmentResult r = linear_sum_assignment(cost.data(), 3, 3);
  EXPECT_EQ(r.total, 5.0);
  EXPECT_EQ(r.cols, (std::vector<int64_t>{1, 0, 2}));
  EXPECT_EQ(linear_sum_assignment(cost.data(), 3, 3, true).total, 11.0);  // 4 + 5 + 2
}

TEST(Assignment, RandomSquareAndRectangularAgainstBruteForce) {
  std::mt19937_64 gen(7);
  std::uniform_real_distribution<double> uni(-1.0, 1.0);
  for (int trial = 0; trial < 60; ++trial) {
    for (int64_t R = 1; R <= 6; ++R) {
      const int64_t C = 1 + static_cast<int64_t>(gen() % 7);
      std::vector<double> cost(static_cast<size_t>(R * C));
      for (double& x : cost) x = uni(gen);
      expect_optimal(cost, R, C, false, "random");
      expect_optimal(cost, R, C, true, "random");
    }
  }
}

TEST(Assignment, TiesAndSmallIntegers) {
  std::mt19937_64 gen(11);
  for (int trial = 0; trial < 80; ++trial) {
    const int64_t R = 1 + static_cast<int64_t>(gen() % 7), C = 1 + static_cast<int64_t>(gen() % 7);
    std::vector<double> cost(static_cast<size_t>(R * C));
    for (double& x : cost) x = static_cast<double>(gen() % 3);  // values 0, 1, 2: ties everywhere
    expect_optimal(cost, R, C, false, "ties");
    expect_optimal(cost, R, C, true, "ties");
  }
}

TEST(Assignment, ConstantMatrices) {
  for (int64_t R : {1, 3, 6}) {
    for (int64_t C : {1, 4, 6}) {
      const std::vector<double> cost(static_cast<size_t>(R * C), 0.25);
      expect_optimal(cost, R, C, false, "constant");
      expect_optimal(cost, R, C, true, "constant");
    }
  }
  // A large constant matrix exercises the Jonker-Volgenant initialisation's tie handling.
  const int64_t n = 300;
  const std::vector<double> cost(static_cast<size_t>(n * n), -3.0);
  const AssignmentResult r = linear_sum_assignment(cost.data(), n, n, true);
  check_valid(r, cost, n, n);
  EXPECT_EQ(r.total, -3.0 * n);
}

TEST(Assignment, HugeAndNegativeValues) {
  std::mt19937_64 gen(3);
  std::uniform_real_distribution<double> uni(-1.0, 1.0);
  for (double scale : {1e-12, 1e6, 1e12, 1e100}) {
    for (int trial = 0; trial < 10; ++trial) {
      const int64_t R = 2 + trial % 5, C = 2 + (trial * 3) % 5;
      std::vector<double> cost(static_cast<size_t>(R * C));
      for (double& x : cost) x = scale * uni(gen) - (trial % 2 == 0 ? 0.0 : 5.0 * scale);
      expect_optimal(cost, R, C, false, "scale " + std::to_string(scale));
      expect_optimal(cost, R, C, true, "scale " + std::to_string(scale));
    }
  }
  // Mixed magnitudes: one huge entry must not swamp the choice among small ones.
  const std::vector<double> mixed = {1e15, 1, 2, 3, 1e-3, 7, 2, 9, 4};
  expect_optimal(mixed, 3, 3, false, "mixed");
  expect_optimal(mixed, 3, 3, true, "mixed");
}

TEST(Assignment, LargerRandomSquareUsesInitialisationAndStaysOptimal) {
  // Beyond brute force: the optimum of a random 8x8 (40320 matchings) and a permuted-diagonal matrix whose
  // optimum is known.
  std::mt19937_64 gen(5);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  for (int trial = 0; trial < 10; ++trial) {
    std::vector<double> cost(64);
    for (double& x : cost) x = uni(gen);
    expect_optimal(cost, 8, 8, false, "8x8");
    expect_optimal(cost, 8, 8, true, "8x8");
  }
  const int64_t n = 500;
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  std::shuffle(perm.begin(), perm.end(), gen);
  std::vector<double> cost(static_cast<size_t>(n * n));
  for (double& x : cost) x = 0.5 * uni(gen);
  for (int64_t i = 0; i < n; ++i) cost[static_cast<size_t>(i * n + perm[static_cast<size_t>(i)])] = 1.0;
  const AssignmentResult r = linear_sum_assignment(cost.data(), n, n, true);
  EXPECT_EQ(r.total, static_cast<double>(n));
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(r.cols[static_cast<size_t>(i)], perm[static_cast<size_t>(i)]);
}

TEST(Assignment, ForbiddenEntries) {
  // +inf forbids a pair when minimising (-inf when maximising); the optimum avoids them.
  std::vector<double> cost = {kInf, 1, 5, 2, kInf, 1, 1, 4, kInf};
  expect_optimal(cost, 3, 3, false, "forbidden");
  for (double& x : cost) x = std::isinf(x) ? -kInf : -x;
  expect_optimal(cost, 3, 3, true, "forbidden max");
  // Rectangular with forbidden entries.
  const std::vector<double> rect = {kInf, 2, 3, kInf, 1, kInf, kInf, kInf};
  expect_optimal(rect, 2, 4, false, "forbidden rect");
  // No complete matching through allowed pairs.
  const std::vector<double> infeasible = {1, kInf, 2, kInf};
  EXPECT_THROW(linear_sum_assignment(infeasible.data(), 2, 2), Error);
}

TEST(Assignment, InvalidEntriesAndEmpty) {
  const std::vector<double> nan = {1, std::nan(""), 2, 3};
  EXPECT_THROW(linear_sum_assignment(nan.data(), 2, 2), Error);
  const std::vector<double> neg_inf = {1, -kInf, 2, 3};
  EXPECT_THROW(linear_sum_assignment(neg_inf.data(), 2, 2), Error);
  const std::vector<double> pos_inf = {1, kInf, 2, 3};
  EXPECT_THROW(linear_sum_assignment(pos_inf.data(), 2, 2, true), Error);
  const AssignmentResult empty = linear_sum_assignment(nullptr, 0, 5);
  EXPECT_TRUE(empty.rows.empty());
  EXPECT_EQ(empty.total, 0.0);
}

TEST(Assignment, SolverReuseAndFloatInput) {
  // One solver over matrices of different shapes gives the same answers as fresh calls; float input is
  // solved exactly as its double conversion.
  std::mt19937_64 gen(9);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  AssignmentSolver solver;
  for (const auto& [R, C] : std::vector<std::pair<int64_t, int64_t>>{{40, 40}, {7, 30}, {30, 7}, {64, 64}}) {
    std::vector<float> f(static_cast<size_t>(R * C));
    for (float& x : f) x = uni(gen);
    const std::vector<double> d(f.begin(), f.end());
    const AssignmentResult a = solver.solve(f.data(), R, C, true);
    const AssignmentResult b = linear_sum_assignment(d.data(), R, C, true);
    EXPECT_EQ(a.total, b.total);
    EXPECT_EQ(a.cols, b.cols);
  }
}

}  // namespace
}  // namespace husai
