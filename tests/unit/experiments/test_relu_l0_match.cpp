// The ReLU L1 search of phase4a (experiments/relu_l0_match.hpp) on L0 curves with known solutions.

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "husai/core/error.hpp"
#include "husai/experiments/relu_l0_match.hpp"

namespace husai {
namespace {

// Runs the search as phase4a does: at most `cap` trials, stopping once converged.
L1Search run_search(const std::function<double(double)>& l0_of, double target, int cap, double tol = 0.02) {
  L1Search s(0.1, 2.5, target, tol);
  for (int i = 0; i < cap && !s.converged(); ++i) {
    const double l1 = s.next();
    s.add(l1, l0_of(l1));
  }
  return s;
}

TEST(L1Search, PowerLawIsSolvedAtTheFirstInterpolation) {
  // L0 = 40 (l1 / 0.5)^-1.3: log-log linear, so the interpolation between bracketing trials is exact.
  const auto l0_of = [](double l1) { return 40.0 * std::pow(l1 / 0.5, -1.3); };
  const double solution = 0.5 * std::pow(40.0 / 32.0, 1.0 / 1.3);  // 0.59331...
  L1Search s(0.1, 2.5, 32, 0.02);
  EXPECT_DOUBLE_EQ(s.next(), 0.5);  // sqrt(0.1 * 2.5), the log-space midpoint
  s.add(0.5, l0_of(0.5));           // 40 > 32: too dense
  EXPECT_FALSE(s.converged());
  EXPECT_NEAR(s.next(), std::sqrt(0.5 * 2.5), 1e-12);  // bisection: only one end is a trial
  s.add(s.next(), l0_of(s.next()));                    // 14.0 < 32: too sparse, the target is bracketed
  const double third = s.next();
  EXPECT_NEAR(third, solution, 1e-9);
  s.add(third, l0_of(third));
  EXPECT_TRUE(s.converged());
  EXPECT_NEAR(s.best().l1_coefficient, solution, 1e-9);
  EXPECT_NEAR(*s.elasticity(), -1.3, 1e-9);
}

TEST(L1Search, ConvergesOnACurvedL0Within2Percent) {
  // L0 = 100 exp(-3 l1) + 2, not a power law: L0 = 32 at l1 = ln(100 / 30) / 3 = 0.40132...
  const auto l0_of = [](double l1) { return 100.0 * std::exp(-3.0 * l1) + 2.0; };
  const L1Search s = run_search(l0_of, 32, 12);
  ASSERT_TRUE(s.converged());
  EXPECT_LE(std::abs(s.best().l0 - 32), 0.02 * 32);
  EXPECT_NEAR(s.best().l1_coefficient, std::log(100.0 / 30.0) / 3.0, 0.01);
  EXPECT_LE(s.trials().size(), 6U);
  // The old rule (plain log bisection, 5 steps) on the same curve, for scale: it needs more runs.
  double lo = std::log(0.1), hi = std::log(2.5), best = 1e9;
  int runs = 0;
  for (; runs < 30 && best > 0.02 * 32; ++runs) {
    const double l1 = std::exp(0.5 * (lo + hi));
    const double l0 = l0_of(l1);
    best = std::min(best, std::abs(l0 - 32));
    (l0 > 32 ? lo : hi) = std::log(l1);
  }
  EXPECT_LT(static_cast<int>(s.trials().size()), runs);
}

TEST(L1Search, TightToleranceOnASteepCurveStillConverges) {
  // Steep near the target and flat elsewhere (a logistic in log l1): plain regula falsi stalls here, the
  // same-side fallback to bisection does not.
  const auto l0_of = [](double l1) { return 2.0 + 60.0 / (1.0 + std::exp(8.0 * std::log(l1 / 0.3))); };
  const L1Search s = run_search(l0_of, 32, 30, 0.002);
  ASSERT_TRUE(s.converged()) << s.trials().size();
  EXPECT_LE(s.trials().size(), 20U);
}

TEST(L1Search, TargetOutsideTheRangeIsReportedUnconverged) {
  // L0 stays above 32 over the whole range: the search walks to the upper end and never converges.
  const auto l0_of = [](double l1) { return 100.0 - l1; };
  const L1Search s = run_search(l0_of, 32, 12);
  EXPECT_FALSE(s.converged());
  EXPECT_EQ(s.trials().size(), 12U);
  EXPECT_GT(s.best().l1_coefficient, 2.49);
  EXPECT_LE(s.best().l1_coefficient, 2.5);
}

TEST(L1Search, RejectsBadArguments) {
  EXPECT_THROW(L1Search(0.0, 1.0, 32, 0.02), Error);
  EXPECT_THROW(L1Search(1.0, 0.5, 32, 0.02), Error);
  EXPECT_THROW(L1Search(0.1, 1.0, 0, 0.02), Error);
  EXPECT_THROW(L1Search(0.1, 1.0, 32, 0.02).best(), Error);
  EXPECT_FALSE(L1Search(0.1, 1.0, 32, 0.02).elasticity().has_value());
}

TEST(L1Search, CorrectionFollowsTheSlope) {
  // Evaluated seeds at l1 0.5 reach L0 40 on L0 = 40 (l1 / 0.5)^-1.3; one step with elasticity -1.3 lands on
  // the solution 0.5 (40 / 32)^(1 / 1.3).
  EXPECT_NEAR(corrected_l1(0.5, 40, 32, -1.3, 0.1, 2.5), 0.5 * std::pow(40.0 / 32.0, 1.0 / 1.3), 1e-12);
  // Too sparse: the coefficient goes down.
  EXPECT_NEAR(corrected_l1(0.5, 16, 32, -1.0, 0.1, 2.5), 0.25, 1e-12);
  // Clamped to the range; no usable slope or L0: unchanged.
  EXPECT_DOUBLE_EQ(corrected_l1(2.0, 320, 32, -1.0, 0.1, 2.5), 2.5);
  EXPECT_DOUBLE_EQ(corrected_l1(0.5, 40, 32, 0.0, 0.1, 2.5), 0.5);
  EXPECT_DOUBLE_EQ(corrected_l1(0.5, 0, 32, -1.0, 0.1, 2.5), 0.5);
}

TEST(ReluL0Match, ReportsAMissLoudly) {
  const nlohmann::json tuning = {
      {"target_l0", 32.0},
      {"tolerance", 0.02},
      {"seed", 7},
      {"steps", 3000},
      {"trials", nlohmann::json::array({{{"l1_coefficient", 0.5}, {"held_out_l0", 31.9}}})},
      {"tuned_l1_coefficient", 0.5},
      {"tuned_l0", 31.9},
      {"evaluated", nlohmann::json::array({{{"l1_coefficient", 0.5}, {"mean_held_out_l0", 34.3}}})},
      {"l1_coefficient", 0.5}};
  // 34.3 is 7.2% above 32: outside 2%.
  const nlohmann::json miss = relu_l0_match_json(tuning, 34.3);
  EXPECT_FALSE(miss["within_tolerance"].get<bool>());
  EXPECT_EQ(miss["trials"].get<int>(), 2);
  EXPECT_DOUBLE_EQ(miss["target"].get<double>(), 32.0);
  EXPECT_DOUBLE_EQ(miss["achieved"].get<double>(), 34.3);
  EXPECT_NE(relu_l0_match_markdown(tuning, miss, 5).find("**WARNING"), std::string::npos);
  // 32.6 is 1.9% above: within.
  const nlohmann::json hit = relu_l0_match_json(tuning, 32.6);
  EXPECT_TRUE(hit["within_tolerance"].get<bool>());
  EXPECT_EQ(relu_l0_match_markdown(tuning, hit, 5).find("WARNING"), std::string::npos);
  EXPECT_FALSE(relu_l0_match_json(tuning, 31.3)["within_tolerance"].get<bool>());  // 2.2% below
}

}  // namespace
}  // namespace husai
