// The one reader of compare's stability.json (summarize_stability) on a hand-written document in compare's
// layout (docs/formats.md), and the adaptive-L0 choice rule.

#include <gtest/gtest.h>

#include <cmath>

#include "husai/core/error.hpp"
#include "husai/experiments/claims.hpp"
#include "husai/experiments/study.hpp"

namespace husai {
namespace {

nlohmann::json null_entry(double mean, double diff, double lo, double hi, double p, double p_holm) {
  return {{"mean", mean},
          {"ci_bca", {mean - 0.01, mean + 0.01}},
          {"difference", {{"estimate", diff}, {"ci_bca", {lo, hi}}}},
          {"ratio", nullptr},
          {"permutation", {{"p_value", p}, {"p_holm", p_holm}}},
          {"cohens_d", nullptr},
          {"mann_whitney", {{"u", 3.0}, {"p_value", 0.25}}},
          {"verdict", "v"}};
}

nlohmann::json stability_doc() {
  nlohmann::json nulls = {{"gaussian", null_entry(0.1, 0.4, 0.3, 0.5, 0.01, 0.02)},
                          {"covariance", null_entry(0.45, 0.05, -0.02, 0.12, 0.2, 0.2)}};
  return {
      {"primary_null", {{"name", "covariance"}, {"reason", "activations given"}}},
      {"summary", {{"pwmcc", {{"trained", {{"mean", 0.5}, {"ci_bca", {0.48, 0.53}}}}, {"nulls", nulls}}}}}};
}

TEST(StabilitySummary, ReadsThePrimaryNullFromComparesLayout) {
  const StabilitySummary s = summarize_stability(stability_doc(), "pwmcc");
  EXPECT_EQ(s.null_name, "covariance");
  EXPECT_DOUBLE_EQ(s.trained, 0.5);
  EXPECT_DOUBLE_EQ(s.trained_lo, 0.48);
  EXPECT_DOUBLE_EQ(s.trained_hi, 0.53);
  EXPECT_DOUBLE_EQ(s.null_mean, 0.45);
  EXPECT_DOUBLE_EQ(s.null_lo, 0.44);
  EXPECT_DOUBLE_EQ(s.delta, 0.05);
  EXPECT_DOUBLE_EQ(s.delta_lo, -0.02);
  EXPECT_DOUBLE_EQ(s.delta_hi, 0.12);
  EXPECT_DOUBLE_EQ(s.p_permutation, 0.2);
  EXPECT_DOUBLE_EQ(s.mann_whitney_p, 0.25);
  EXPECT_TRUE(std::isnan(s.ratio));     // written as null by compare
  EXPECT_TRUE(std::isnan(s.cohens_d));  // likewise
  EXPECT_EQ(s.verdict, "v");
  ASSERT_TRUE(s.all_nulls.contains("gaussian"));
  EXPECT_DOUBLE_EQ(s.all_nulls["gaussian"]["p_holm"].get<double>(), 0.02);
  // Round trip through the results.json form keeps every number (NaN as null).
  const StabilitySummary r = stability_from_json(to_json(s));
  EXPECT_DOUBLE_EQ(r.delta_lo, s.delta_lo);
  EXPECT_DOUBLE_EQ(r.p_holm, s.p_holm);
  EXPECT_TRUE(std::isnan(r.ratio));
}

TEST(StabilitySummary, RefusesDocumentsWithoutTheMetricOrANull) {
  EXPECT_THROW(summarize_stability(stability_doc(), "matched_mean_cos"), Error);
  nlohmann::json no_null = stability_doc();
  no_null["primary_null"] = nullptr;
  EXPECT_THROW(summarize_stability(no_null, "pwmcc"), Error);
  nlohmann::json missing = stability_doc();
  missing["primary_null"]["name"] = "untrained";
  EXPECT_THROW(summarize_stability(missing, "pwmcc"), Error);
}

TEST(AdaptiveChoice, LargestLowerBoundAmongCandidatesAboveTheEvFloor) {
  auto cand = [](int64_t k, double ev, double lo) {
    return nlohmann::json{{"k", k},
                          {"metrics", {{"mean", {{"ev_held_out", ev}}}}},
                          {"stability",
                           {{"pwmcc",
                             {{"metric", "pwmcc"},
                              {"null", "covariance"},
                              {"trained", 0.5},
                              {"trained_ci", {0.4, 0.6}},
                              {"null_mean", 0.4},
                              {"null_ci", {0.3, 0.5}},
                              {"delta", lo + 0.05},
                              {"delta_ci", {lo, lo + 0.1}},
                              {"ratio", 1.2},
                              {"p_permutation", 0.1},
                              {"p_holm", 0.1},
                              {"cohens_d", 1.0},
                              {"mann_whitney_p", 0.1},
                              {"verdict", ""},
                              {"all_nulls", nlohmann::json::object()}}}}}};
  };
  // k 4 has the best bound but fails the EV floor; 8 and 16 tie, the smaller k wins.
  const nlohmann::json search =
      nlohmann::json::array({cand(4, 0.1, 0.3), cand(8, 0.5, 0.1), cand(16, 0.6, 0.1), cand(32, 0.9, -0.05)});
  const AdaptiveChoice c = choose_adaptive_k(search, "pwmcc", 0.2);
  ASSERT_TRUE(c.k.has_value());
  EXPECT_EQ(*c.k, 8);
  EXPECT_EQ(c.index, 1U);
  EXPECT_EQ(c.eligible, (std::vector<int64_t>{8, 16, 32}));
  EXPECT_FALSE(choose_adaptive_k(search, "pwmcc", 0.95).k.has_value());
}

}  // namespace
}  // namespace husai
