// The one reader of compare's stability.json (summarize_stability) on a hand-written document in compare's
// layout (docs/formats.md), and the adaptive-L0 choice rule.

#include <gtest/gtest.h>

#include <cmath>

#include "husai/core/error.hpp"
#include "husai/experiments/claims.hpp"
#include "husai/experiments/stability_report.hpp"
#include "husai/experiments/study.hpp"
#include "husai/train/sae_run.hpp"

namespace husai {
namespace {

// A hand-built study: trained pwmcc 0.5 [0.48, 0.53] against covariance (a reference), rotation (geometry-
// matched: the decision null) and a surrogate control.
GroupComparison comparison(const std::string& name, GroupRole role, bool geometry, double mean, double diff,
                           double lo, double hi, double p2, double p_holm, Verdict v) {
  GroupComparison c;
  c.group = name;
  c.role = role;
  c.geometry_matched = geometry;
  c.group_similarity.estimate = mean;
  c.group_similarity.bca = {mean - 0.01, mean + 0.01};
  c.group_similarity.percentile = c.group_similarity.bca;
  c.n_seeds = 5;
  c.n_pairs = 10;
  c.difference.estimate = diff;
  c.difference.bca = {lo, hi};
  c.difference.percentile = c.difference.bca;
  c.ratio = std::nan("");
  c.permutation.p_value_two_sided = p2;
  c.permutation.p_value = p2 / 2;
  c.permutation.exact = true;
  c.family = role == GroupRole::Surrogate ? "surrogate" : "nulls";
  c.family_size = role == GroupRole::Surrogate ? 2 : 4;
  c.p_adjusted = p_holm;
  c.verdict = v;
  c.effect_size_seed_level = std::nan("");
  c.reference_mann_whitney.p_value = 0.25;
  c.reference_mann_whitney.method = "exact";
  return c;
}

nlohmann::json stability_doc(bool with_geometry = true) {
  StabilityStudy s;
  s.confidence = 0.95;
  s.trained_labels = {"a", "b"};
  s.groups = {{"covariance", GroupRole::Null, false, "x", {"c0", "c1"}},
              {"surrogate_gaussian", GroupRole::Surrogate, false, "y", {"s0", "s1"}}};
  if (with_geometry)
    s.groups.insert(s.groups.begin() + 1, {"rotation", GroupRole::Null, true, "z", {"r0", "r1"}});
  for (const std::string& metric : study_metrics()) {
    MetricStudy m;
    m.metric = metric;
    m.trained.estimate = 0.5;
    m.trained.bca = {0.48, 0.53};
    m.trained.percentile = m.trained.bca;
    m.n_seeds = 5;
    m.n_pairs = 10;
    m.comparisons.push_back(comparison("covariance", GroupRole::Null, false, 0.45, 0.05, -0.02, 0.12, 0.2,
                                       0.4, Verdict::Indistinguishable));
    if (with_geometry) {
      m.comparisons.push_back(
          comparison("rotation", GroupRole::Null, true, 0.1, 0.4, 0.3, 0.5, 0.01, 0.02, Verdict::Above));
      m.decision_null = "rotation";
    }
    m.comparisons.push_back(comparison("surrogate_gaussian", GroupRole::Surrogate, false, 0.49, 0.01, -0.01,
                                       0.03, 0.6, 0.6, Verdict::Indistinguishable));
    s.metrics.push_back(std::move(m));
  }
  nlohmann::json doc = study_to_json(s);
  doc["schema_version"] = kStabilitySchemaVersion;
  return nlohmann::json::parse(doc.dump());
}

TEST(StabilitySummary, ReadsTheDecisionNullAndTheSurrogate) {
  const StabilitySummary s = summarize_stability(stability_doc(), "pwmcc");
  EXPECT_EQ(s.null_name, "rotation");
  EXPECT_DOUBLE_EQ(s.trained, 0.5);
  EXPECT_DOUBLE_EQ(s.trained_lo, 0.48);
  EXPECT_DOUBLE_EQ(s.trained_hi, 0.53);
  EXPECT_DOUBLE_EQ(s.null_mean, 0.1);
  EXPECT_DOUBLE_EQ(s.null_lo, 0.09);
  EXPECT_DOUBLE_EQ(s.delta, 0.4);
  EXPECT_DOUBLE_EQ(s.delta_lo, 0.3);
  EXPECT_DOUBLE_EQ(s.delta_hi, 0.5);
  EXPECT_DOUBLE_EQ(s.p_permutation, 0.01);  // two-sided
  EXPECT_DOUBLE_EQ(s.p_holm, 0.02);
  EXPECT_EQ(s.holm_family_size, 4);
  EXPECT_DOUBLE_EQ(s.mann_whitney_p, 0.25);
  EXPECT_TRUE(std::isnan(s.ratio));     // written as null
  EXPECT_TRUE(std::isnan(s.cohens_d));  // likewise
  EXPECT_EQ(s.verdict_kind, "above");
  EXPECT_EQ(s.verdict.rfind("above the rotation null", 0), 0u) << s.verdict;
  EXPECT_EQ(s.surrogate_verdict_kind, "indistinguishable");
  EXPECT_DOUBLE_EQ(s.surrogate_delta, 0.01);
  ASSERT_TRUE(s.all_nulls.contains("covariance"));
  EXPECT_DOUBLE_EQ(s.all_nulls["covariance"]["p_holm"].get<double>(), 0.4);
  // Round trip through the results.json form keeps every number (NaN as null).
  const StabilitySummary r = stability_from_json(to_json(s));
  EXPECT_DOUBLE_EQ(r.delta_lo, s.delta_lo);
  EXPECT_DOUBLE_EQ(r.p_holm, s.p_holm);
  EXPECT_EQ(r.verdict_kind, s.verdict_kind);
  EXPECT_EQ(r.surrogate_verdict, s.surrogate_verdict);
  EXPECT_TRUE(std::isnan(r.ratio));
}

TEST(StabilitySummary, RefusesDocumentsWithoutTheMetricOrADecisionNull) {
  EXPECT_THROW(summarize_stability(stability_doc(), "no_such_metric"), Error);
  EXPECT_THROW(summarize_stability(stability_doc(/*with_geometry=*/false), "pwmcc"), Error);
  nlohmann::json old = stability_doc();
  old["schema_version"] = 1;  // an older compare's layout
  EXPECT_THROW(summarize_stability(old, "pwmcc"), Error);
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

namespace husai {
namespace {

nlohmann::json curve(double last_lo, double last_hi, bool plateaued) {
  nlohmann::json points = nlohmann::json::array();
  const double values[] = {0.40, 0.42, 0.43};
  const int64_t steps[] = {250, 500, 1000};
  for (int i = 0; i < 3; ++i) {
    points.push_back({{"step", steps[i]},
                      {"fraction", static_cast<double>(steps[i]) / 1000.0},
                      {"pwmcc", values[i]},
                      {"pwmcc_ci_bca", {values[i] - 0.01, values[i] + 0.01}},
                      {"matched_mean_cos", values[i] - 0.02},
                      {"matched_mean_cos_ci_bca", {nullptr, nullptr}}});
  }
  return {{"points", points},
          {"last_change", {{"estimate", 0.01}, {"ci_bca", {last_lo, last_hi}}}},
          {"margin", 0.01},
          {"plateaued", plateaued}};
}

TEST(ConvergenceReport, TablesEveryPointAndStatesEachPlateauTest) {
  const ConvergenceReport r =
      convergence_report({{"topk", curve(0.005, 0.015, false)}, {"relu", curve(-0.004, 0.006, true)}});
  EXPECT_NE(r.markdown.find("| topk | 500 | 0.500 | 0.4200 [0.4100, 0.4300] | 0.4000 [n/a, n/a] |"),
            std::string::npos)
      << r.markdown;
  EXPECT_NE(
      r.summary.find("- topk: last change of pwmcc +0.0100 [0.0050, 0.0150]: NOT shown to have plateaued"),
      std::string::npos)
      << r.summary;
  EXPECT_NE(r.summary.find("- relu: last change of pwmcc +0.0100 [-0.0040, 0.0060]: plateaued"),
            std::string::npos);
  ASSERT_EQ(r.last_change.size(), 2u);
  EXPECT_EQ(r.last_change[1].first, "relu");
  EXPECT_DOUBLE_EQ(r.last_change[1].second, 0.01);
  // One gnuplot data block per curve, both plotted.
  EXPECT_NE(r.figure_data.find("$c0 << EOD\n250 0.4 0.39"), std::string::npos) << r.figure_data;
  EXPECT_NE(r.figure_data.find("$c1 using 1:2:3:4 with yerrorlines title 'relu'"), std::string::npos);
}

TEST(ConvergenceReport, NoCurveSaysNoSnapshotsWereKept) {
  const ConvergenceReport r = convergence_report({});
  EXPECT_TRUE(r.figure_data.empty());
  EXPECT_NE(r.markdown.find("No snapshots were kept"), std::string::npos);
}

// Every typed setting maps to a key of train-sae's schema with a value of the kind it declares, so a
// misspelt key or a wrong type fails here rather than deep inside an experiment.
TEST(SaeSettings, EveryFieldIsATrainSaeKey) {
  SaeSettings s;
  s.architecture = "relu";
  s.d_sae = 256;
  s.k = 16;
  s.l1_coefficient = 1.5;
  s.steps = 100;
  s.seeds = std::vector<int64_t>{1, 2};
  s.consistency_reference = "ref/seed1";
  s.consistency_lambda = 0.25;
  const nlohmann::json j = s.to_json();
  EXPECT_EQ(j.size(), 8u);
  const ConfigSchema schema = sae_config_schema();
  for (const auto& [key, value] : j.items()) {
    const FieldSpec* f = schema.find(key);
    ASSERT_NE(f, nullptr) << key;
  }
  EXPECT_EQ(j.at("sae.l1_coefficient"), 1.5);
  EXPECT_EQ(j.at("training.seeds"), nlohmann::json::array({1, 2}));
  // Only what is set, and an empty set changes nothing.
  EXPECT_TRUE(SaeSettings{}.to_json().empty());
  SaeSettings only_k;
  only_k.k = 8;
  EXPECT_EQ(only_k.to_json(), (nlohmann::json{{"sae.k", 8}}));
}

}  // namespace
}  // namespace husai
