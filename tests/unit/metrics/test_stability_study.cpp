// The stability study: the one verdict rule on fixed inputs, Holm across metrics (and across studies), the
// decision null, and the JSON round trip the experiments read.

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"
#include "husai/experiments/stability_report.hpp"
#include "husai/metrics/stability_study.hpp"

namespace husai {
namespace {

// A dictionary of n unit rows in R^d: `base` plus noise of scale `noise`, from its own seed.
StudyDictionary noisy_copy(const std::vector<double>& base, int64_t n, int64_t d, double noise, uint64_t seed,
                           const std::string& label) {
  const Philox rng(seed, stream_id("test.study"));
  std::vector<float> w(static_cast<size_t>(n * d));
  for (size_t k = 0; k < w.size(); ++k) w[k] = static_cast<float>(base[k] + noise * rng.normal(k));
  StudyDictionary out;
  out.label = label;
  out.dec = features_from_rows(w.data(), n, d);
  out.enc = out.dec;
  return out;
}

std::vector<double> gaussian(int64_t count, uint64_t seed) {
  const Philox rng(seed, stream_id("test.study.base"));
  std::vector<double> v(static_cast<size_t>(count));
  for (size_t k = 0; k < v.size(); ++k) v[k] = rng.normal(k);
  return v;
}

ComparisonGroup random_group(const std::string& name, bool geometry, int64_t m, int64_t n, int64_t d,
                             uint64_t seed0) {
  ComparisonGroup g;
  g.name = name;
  g.geometry_matched = geometry;
  g.controls_for = "test";
  for (int64_t j = 0; j < m; ++j) {
    g.dicts.push_back(noisy_copy(std::vector<double>(static_cast<size_t>(n * d), 0.0), n, d, 1.0,
                                 seed0 + static_cast<uint64_t>(j), name + std::to_string(j)));
    g.dicts.back().enc_is_dec = true;
  }
  return g;
}

StudyOptions quick_options() {
  StudyOptions o;
  o.bootstrap = 500;
  o.confidence = 0.95;
  o.seed = 3;
  return o;
}

TEST(StabilityStudy, VerdictRuleOnFixedInputs) {
  EXPECT_EQ(decide_verdict(0.1, 0.01, 0.05), Verdict::Above);
  EXPECT_EQ(decide_verdict(-0.1, 0.01, 0.05), Verdict::Below);
  // The same evidence either way: the rule is symmetric.
  EXPECT_EQ(decide_verdict(0.1, 0.05, 0.05), Verdict::Above);
  EXPECT_EQ(decide_verdict(-0.1, 0.05, 0.05), Verdict::Below);
  EXPECT_EQ(decide_verdict(0.1, 0.0501, 0.05), Verdict::Indistinguishable);
  EXPECT_EQ(decide_verdict(-0.1, 0.0501, 0.05), Verdict::Indistinguishable);
  EXPECT_EQ(decide_verdict(0.0, 0.001, 0.05), Verdict::Indistinguishable);
  EXPECT_EQ(decide_verdict(std::nan(""), 0.001, 0.05), Verdict::Indistinguishable);
  EXPECT_EQ(decide_verdict(0.2, std::nan(""), 0.05), Verdict::Indistinguishable);
  // A design that could never pass (smallest attainable Holm-adjusted p above alpha) is undecidable, not
  // indistinguishable; one that could have passed but did not stays indistinguishable.
  EXPECT_EQ(decide_verdict(0.1, 0.4, 0.05, 0.378), Verdict::Undecidable);
  EXPECT_EQ(decide_verdict(0.1, 0.4, 0.05, 0.04), Verdict::Indistinguishable);
  EXPECT_EQ(decide_verdict(0.1, 0.01, 0.05, 0.0), Verdict::Above);
  for (const Verdict v : {Verdict::Above, Verdict::Below, Verdict::Indistinguishable, Verdict::Undecidable,
                          Verdict::NotTested}) {
    EXPECT_EQ(parse_verdict(verdict_name(v)), v);
  }
}

// Paulo & Belrose's shared fraction: a decoder-matched pair counts only when its encoder columns agree too.
// Two SAEs with the same decoder (noise 0.01) whose encoders agree on the first half of the latents and are
// independent on the second half: the decoder shares ~all latents at 0.7, "both" only the first half.
TEST(StabilityStudy, SharedBothNeedsEncoderAndDecoderAbove07) {
  const int64_t d = 32, f = 40;
  const std::vector<double> base = gaussian(f * d, 7);
  std::vector<StudyDictionary> trained;
  for (int i = 0; i < 2; ++i) {
    StudyDictionary t = noisy_copy(base, f, d, 0.01, 200 + static_cast<uint64_t>(i), "t" + std::to_string(i));
    const StudyDictionary other = noisy_copy(gaussian(f * d, 50 + static_cast<uint64_t>(i)), f, d, 0.0,
                                             300 + static_cast<uint64_t>(i), "e");
    for (int64_t r = f / 2; r < f; ++r) {  // second half: this SAE's own random encoder columns
      std::copy_n(other.dec.rows.begin() + r * d, d, t.enc.rows.begin() + r * d);
    }
    trained.push_back(t);
  }
  trained.push_back(noisy_copy(base, f, d, 0.01, 202, "t2"));
  const StabilityStudy s =
      run_stability_study(trained, {random_group("geo", true, 4, f, d, 900)}, quick_options());
  const StudyPair& p01 = s.trained_pairs[0];  // (0, 1): encoders agree on half the latents
  EXPECT_GE(p01.dec.shared_frac[1], 0.95);
  EXPECT_NEAR(p01.shared_frac_both_07, 0.5, 0.05);
  const StudyPair& p02 = s.trained_pairs[1];  // (0, 2): t2 keeps the base encoder, so t0's first half agrees
  EXPECT_NEAR(p02.shared_frac_both_07, 0.5, 0.05);
  for (const auto& g : s.group_pairs) {
    for (const StudyPair& q : g) EXPECT_TRUE(std::isnan(q.shared_frac_both_07));  // trained pairs only
  }
}

TEST(StabilityStudy, PlantedStructureIsAboveAndHolmSpansMetricsAndNulls) {
  const int64_t n = 5, d = 16, f = 24;
  const std::vector<double> base = gaussian(f * d, 1);
  std::vector<StudyDictionary> trained;
  for (int64_t i = 0; i < n; ++i)
    trained.push_back(noisy_copy(base, f, d, 0.05, 100 + static_cast<uint64_t>(i), "t" + std::to_string(i)));
  std::vector<ComparisonGroup> groups = {random_group("iso", false, 10, f, d, 500),
                                         random_group("geo", true, 10, f, d, 900)};
  const StabilityStudy s = run_stability_study(trained, groups, quick_options());
  const auto tested = static_cast<int64_t>(tested_metrics().size());
  std::vector<double> raw;
  for (const std::string& metric : tested_metrics()) {
    const MetricStudy& m = s.metric(metric);
    EXPECT_EQ(m.decision_null, "geo");  // the only geometry-matched group
    for (const GroupComparison& c : m.comparisons) {
      EXPECT_TRUE(c.permutation.exact);
      EXPECT_NEAR(c.min_attainable_p, 1.0 / 3003.0, 1e-15);  // C(15, 5)
      EXPECT_EQ(c.family, "nulls");
      EXPECT_EQ(c.family_size, 2 * tested);
      EXPECT_NEAR(c.holm_floor, static_cast<double>(2 * tested) / 3003.0, 1e-15);
      EXPECT_EQ(c.verdict, Verdict::Above) << metric << " " << c.group;
      raw.push_back(c.permutation.p_value_two_sided);
    }
  }
  // Holm over every (metric, null) test of the study, in metric then group order: recomputed here.
  const std::vector<double> holm = stats::holm_adjust(raw);
  size_t k = 0;
  for (const std::string& metric : tested_metrics()) {
    for (const GroupComparison& c : s.metric(metric).comparisons) EXPECT_DOUBLE_EQ(c.p_adjusted, holm[k++]);
  }
  // Untested metrics are described, never decided.
  EXPECT_EQ(s.metric("shared_frac_05").comparisons[0].verdict, Verdict::NotTested);
  EXPECT_TRUE(std::isnan(s.metric("shared_frac_05").comparisons[0].p_adjusted));
}

TEST(StabilityStudy, TooFewSeedsForTheFamilyIsUndecidable) {
  // 2 trained seeds against 3 null dictionaries: the smallest exact permutation p is 1 / C(5, 2) = 0.1 >
  // alpha before any correction, so even perfectly separated groups cannot be decided.
  const int64_t d = 16, f = 24;
  const std::vector<double> base = gaussian(f * d, 1);
  std::vector<StudyDictionary> trained;
  for (int64_t i = 0; i < 2; ++i)
    trained.push_back(noisy_copy(base, f, d, 0.05, 100 + static_cast<uint64_t>(i), "t" + std::to_string(i)));
  std::vector<ComparisonGroup> groups = {random_group("geo", true, 3, f, d, 900)};
  const StabilityStudy s = run_stability_study(trained, groups, quick_options());
  const GroupComparison& c = s.metric("pwmcc").comparisons[0];
  EXPECT_GT(c.difference.estimate, 0.3);
  EXPECT_NEAR(c.min_attainable_p, 0.1, 1e-15);
  EXPECT_GT(c.holm_floor, 0.05);
  EXPECT_EQ(c.verdict, Verdict::Undecidable);
}

TEST(StabilityStudy, BelowUsesTheSameRule) {
  // Trained dictionaries unrelated to each other; the "null" group holds near-copies of one dictionary.
  const int64_t n = 5, d = 16, f = 24;
  std::vector<StudyDictionary> trained;
  for (int64_t i = 0; i < n; ++i) {
    trained.push_back(noisy_copy(std::vector<double>(static_cast<size_t>(f * d), 0.0), f, d, 1.0,
                                 200 + static_cast<uint64_t>(i), "t" + std::to_string(i)));
  }
  const std::vector<double> base = gaussian(f * d, 7);
  ComparisonGroup g;
  g.name = "copies";
  g.geometry_matched = true;
  for (int64_t j = 0; j < 10; ++j) {
    g.dicts.push_back(noisy_copy(base, f, d, 0.05, 300 + static_cast<uint64_t>(j), "c" + std::to_string(j)));
    g.dicts.back().enc_is_dec = true;
  }
  const StabilityStudy s = run_stability_study(trained, {g}, quick_options());
  for (const std::string& metric : tested_metrics()) {
    EXPECT_EQ(s.metric(metric).comparisons[0].verdict, Verdict::Below) << metric;
  }
}

TEST(StabilityStudy, SameDistributionIsRarelyDecided) {
  // Trained and group dictionaries from one distribution: the rule's familywise error rate (Holm over the
  // tested metrics) is at most alpha, so over 20 independent studies few may decide either way.
  const int64_t n = 5, d = 16, f = 24;
  int decided = 0;
  for (uint64_t rep = 0; rep < 20; ++rep) {
    std::vector<StudyDictionary> trained;
    for (int64_t i = 0; i < n; ++i) {
      trained.push_back(noisy_copy(std::vector<double>(static_cast<size_t>(f * d), 0.0), f, d, 1.0,
                                   10000 + 100 * rep + static_cast<uint64_t>(i), "t" + std::to_string(i)));
    }
    const StabilityStudy s = run_stability_study(
        trained, {random_group("same", true, 10, f, d, 20000 + 100 * rep)}, quick_options());
    bool any = false;
    for (const std::string& metric : tested_metrics())
      any = any || s.metric(metric).comparisons[0].verdict != Verdict::Indistinguishable;
    decided += any ? 1 : 0;
  }
  // Binomial(20, 0.05): P(at least 4) = 0.016.
  EXPECT_LE(decided, 3);
}

TEST(StabilityStudy, DecisionNullIsTheMostConservativeGeometryMatchedOne) {
  const int64_t n = 4, d = 12, f = 16;
  const std::vector<double> base = gaussian(f * d, 11);
  std::vector<StudyDictionary> trained;
  for (int64_t i = 0; i < n; ++i)
    trained.push_back(noisy_copy(base, f, d, 0.1, 700 + static_cast<uint64_t>(i), "t" + std::to_string(i)));
  // "close" is a geometry-matched group more alike than "far"; "iso" is not geometry-matched and is ignored.
  ComparisonGroup close;
  close.name = "close";
  close.geometry_matched = true;
  for (int64_t j = 0; j < 4; ++j) {
    close.dicts.push_back(
        noisy_copy(base, f, d, 0.6, 800 + static_cast<uint64_t>(j), "c" + std::to_string(j)));
    close.dicts.back().enc_is_dec = true;
  }
  const StabilityStudy s = run_stability_study(
      trained, {random_group("far", true, 4, f, d, 850), close, random_group("iso", false, 4, f, d, 870)},
      quick_options());
  for (const std::string& metric : tested_metrics())
    EXPECT_EQ(s.metric(metric).decision_null, "close") << metric;
}

TEST(StabilityStudy, SurrogateIsItsOwnFamilyAndHolmAcrossStudiesPoolsFamilies) {
  const int64_t n = 5, d = 16, f = 24;
  const std::vector<double> base = gaussian(f * d, 21);
  std::vector<StudyDictionary> trained;
  for (int64_t i = 0; i < n; ++i)
    trained.push_back(noisy_copy(base, f, d, 0.05, 1000 + static_cast<uint64_t>(i), "t" + std::to_string(i)));
  ComparisonGroup sur = random_group("surrogate_gaussian", false, 5, f, d, 1100);
  sur.role = GroupRole::Surrogate;
  for (StudyDictionary& dd : sur.dicts) dd.enc_is_dec = false;
  StabilityStudy a =
      run_stability_study(trained, {random_group("geo", true, 10, f, d, 1200), sur}, quick_options());
  const auto tested = static_cast<int64_t>(tested_metrics().size());
  const GroupComparison& s0 = *a.metric("pwmcc").find("surrogate_gaussian");
  EXPECT_EQ(s0.family, "surrogate");
  const auto sur_tested = static_cast<int64_t>(tested_metrics().size());
  EXPECT_EQ(s0.family_size, sur_tested);
  EXPECT_EQ(a.metric("pwmcc").decision_null, "geo");  // a surrogate is never the decision null
  // 5 vs 5 seeds: the smallest exact two-sided p is 2 / C(10, 5); Holm over 2 metrics clears 0.05.
  EXPECT_NEAR(s0.permutation.p_value_two_sided, 2.0 / 252.0, 1e-15);
  EXPECT_EQ(s0.verdict, Verdict::Above);
  EXPECT_EQ(a.metric("pwmcc_enc").find("surrogate_gaussian")->verdict, Verdict::NotTested);

  StabilityStudy b = a;
  std::vector<StabilityStudy*> both = {&a, &b};
  const auto sizes = holm_across_studies(both);
  ASSERT_EQ(sizes.size(), 2u);
  EXPECT_EQ(sizes[0].first, "nulls");
  EXPECT_EQ(sizes[0].second, 2 * tested);
  EXPECT_EQ(sizes[1].first, "surrogate");
  EXPECT_EQ(sizes[1].second, 2 * sur_tested);
  EXPECT_EQ(a.metric("pwmcc").find("geo")->family_size, 2 * tested);
  // Four surrogate tests at p = 2/252 each: Holm gives 4 * 2/252 = 0.032, still above.
  EXPECT_NEAR(a.metric("pwmcc").find("surrogate_gaussian")->p_adjusted, 4 * s0.permutation.p_value_two_sided,
              1e-12);
  EXPECT_EQ(a.metric("pwmcc").find("surrogate_gaussian")->verdict, Verdict::Above);
  // Three such studies pooled: 6 * 2/252 = 0.048 <= 0.05; four: 8 * 2/252 = 0.063, indistinguishable.
  StabilityStudy c = a, e = a;
  std::vector<StabilityStudy*> four = {&a, &b, &c, &e};
  holm_across_studies(four);
  EXPECT_EQ(a.metric("pwmcc").find("surrogate_gaussian")->verdict, Verdict::Indistinguishable);
}

TEST(StabilityStudy, JsonRoundTripKeepsTheStatistics) {
  const int64_t n = 4, d = 10, f = 12;
  const std::vector<double> base = gaussian(f * d, 31);
  std::vector<StudyDictionary> trained;
  for (int64_t i = 0; i < n; ++i)
    trained.push_back(noisy_copy(base, f, d, 0.2, 1300 + static_cast<uint64_t>(i), "t" + std::to_string(i)));
  const StabilityStudy s =
      run_stability_study(trained, {random_group("geo", true, 6, f, d, 1400)}, quick_options());
  nlohmann::json doc = study_to_json(s);
  doc["schema_version"] = kStabilitySchemaVersion;
  doc["settings"] = {{"bootstrap", 500}, {"seed", 3}};
  const StabilityStudy r = study_from_json(nlohmann::json::parse(doc.dump()));
  ASSERT_EQ(r.metrics.size(), s.metrics.size());
  for (size_t k = 0; k < s.metrics.size(); ++k) {
    const MetricStudy& x = s.metrics[k];
    const MetricStudy& y = r.metrics[k];
    EXPECT_EQ(x.metric, y.metric);
    EXPECT_EQ(x.decision_null, y.decision_null);
    EXPECT_DOUBLE_EQ(x.trained.estimate, y.trained.estimate);
    ASSERT_EQ(x.comparisons.size(), y.comparisons.size());
    for (size_t c = 0; c < x.comparisons.size(); ++c) {
      EXPECT_DOUBLE_EQ(x.comparisons[c].difference.estimate, y.comparisons[c].difference.estimate);
      EXPECT_DOUBLE_EQ(x.comparisons[c].permutation.p_value_two_sided,
                       y.comparisons[c].permutation.p_value_two_sided);
      EXPECT_EQ(x.comparisons[c].verdict, y.comparisons[c].verdict);
      EXPECT_EQ(x.comparisons[c].family_size, y.comparisons[c].family_size);
    }
  }
  EXPECT_THROW(study_from_json(nlohmann::json{{"schema_version", 1}}), Error);
}

}  // namespace
}  // namespace husai
