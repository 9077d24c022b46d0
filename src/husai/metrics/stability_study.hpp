#pragma once

// The stability study as a library: trained SAEs against comparison groups (null dictionaries and SAEs
// trained on surrogate data), every pairwise metric, per-feature stability, seed-level statistics and one
// verdict rule. `husai compare` builds the groups, calls run_stability_study and hands the typed result to
// its writer (experiments/stability_report.hpp); the experiments read the same type back from
// stability.json, so no caller maps the JSON field by field.
//
// The unit of replication is the seed (statistics.hpp): intervals resample seeds within each group, tests
// permute group labels over whole dictionaries.
//
// Verdict rule (decide_verdict), the same for every comparison: "above" when trained - group > 0 and the
// two-sided permutation p, Holm-adjusted over the family, is <= alpha; "below" when the difference is < 0
// under the same test; else "undecidable" when no data could have passed (the family's smallest attainable
// Holm-adjusted p, family size x the smallest attainable permutation p, exceeds alpha: too few seeds for the
// family, and "indistinguishable" would read as evidence of no difference), else "indistinguishable".
// Symmetric on purpose: the earlier rule needed a one-sided
// Holm-adjusted p for "above" but only an unadjusted two-sided p for "below", so a family could report
// "below" on weaker evidence than "above".
//
// Holm families: every (tested metric, null) comparison of one study is one family ("nulls"); the surrogate
// control is a second family ("surrogate"), because it asks a different question (is the structure in the
// data rather than in the method?) and has fewer seeds. Experiments that run several studies re-adjust each
// family across all of them with holm_across_studies, and every summary states the family's size.

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "husai/metrics/stability.hpp"
#include "husai/metrics/statistics.hpp"

namespace husai {

// One dictionary of a study: decoder rows and encoder columns (unit-normalised FeatureSets).
struct StudyDictionary {
  std::string label;  // folder as given, or "<null>:<seed>"
  FeatureSet dec;
  FeatureSet enc;
  bool enc_is_dec = false;  // nulls: the encoder is the decoder's transpose, the same features
};

enum class GroupRole { Null, Surrogate };
std::string_view group_role_name(GroupRole role);  // "null", "surrogate"

// A group compared against the trained SAEs.
struct ComparisonGroup {
  std::string name;  // "gaussian", "second_moment", ..., "surrogate_gaussian"
  GroupRole role = GroupRole::Null;
  // Matched to the trained dictionaries' own geometry (second_moment, axis_reflection, rotation): the
  // candidates for the decision null.
  bool geometry_matched = false;
  std::string controls_for;  // one sentence: what beating this group rules out
  std::vector<StudyDictionary> dicts;
};

enum class Verdict { Above, Below, Indistinguishable, Undecidable, NotTested };
// "above", "below", "indistinguishable", "undecidable", "not_tested"
std::string_view verdict_name(Verdict v);
Verdict parse_verdict(std::string_view name);

// The one verdict rule (see the header comment). NaN inputs give Indistinguishable. holm_floor: the smallest
// Holm-adjusted p the family could produce (0 = not known).
Verdict decide_verdict(double difference, double p_adjusted, double alpha, double holm_floor = 0);

// Metric names: decoder metrics, then the same for the encoder with suffix "_enc".
const std::vector<std::string>& study_metrics();
// The metrics that get a test and a verdict: the decoder's pwmcc and matched_mean_cos (the rest, the encoder
// metrics and the shared fractions, are described by intervals only). Few on purpose: a group of 5
// dictionaries against 5 trained ones (the surrogate control, axis_reflection) gives an exact two-sided
// permutation p of at least 2 / C(10, 5) = 0.0079, and Holm multiplies the largest p-values of a family by
// up to the number of them; with decoder metrics only, phase4a's 4 such tests per group kind can still
// reach 4 x 0.0079 = 0.032 when the separation is complete.
const std::vector<std::string>& tested_metrics();
double pair_metric(const PairStability& p, std::string_view metric_without_enc_suffix);

struct StudyOptions {
  int64_t bootstrap = 10000;  // seed-bootstrap resamples, and Monte Carlo permutations when not exact
  double confidence = 0.95;   // alpha = 1 - confidence
  uint64_t seed = 0;          // seeds the statistics' draws
};

struct StudyPair {
  int64_t a = 0, b = 0;
  PairStability dec, enc;
  // Trained pairs only (NaN otherwise): the fraction of the decoder's optimal matching whose pairs clear
  // |cos| >= 0.7 with their decoder rows AND their encoder columns (Paulo & Belrose 2025's "shared" latent,
  // matched on the decoder).
  double shared_frac_both_07 = std::numeric_limits<double>::quiet_NaN();
};

// Trained seeds against one group, for one metric.
struct GroupComparison {
  std::string group;
  GroupRole role = GroupRole::Null;
  bool geometry_matched = false;
  stats::BootstrapResult group_similarity;  // the group's own mean pairwise similarity
  int64_t n_seeds = 0, n_pairs = 0;
  stats::BootstrapResult difference;                        // trained - group
  double ratio = std::numeric_limits<double>::quiet_NaN();  // trained / group
  stats::PermutationResult permutation;
  double min_attainable_p =
      std::numeric_limits<double>::quiet_NaN();  // smallest one-sided p the permutation test can give
  std::string family;                            // "nulls" or "surrogate"
  int64_t family_size = 0;                       // tests Holm adjusted over
  // The smallest Holm-adjusted p any data could give in this family: family_size x the smallest attainable
  // permutation p of its members (every adjusted p is at least family_size x the smallest raw p).
  double holm_floor = std::numeric_limits<double>::quiet_NaN();
  double p_adjusted =
      std::numeric_limits<double>::quiet_NaN();  // two-sided permutation p, Holm-adjusted over the family
  Verdict verdict = Verdict::NotTested;
  // Cohen's d of the per-seed mean similarities (each seed's mean over its pairs within its group): a
  // seed-level effect size. The per-seed means still share pairs, so d is descriptive, never a test.
  double effect_size_seed_level = std::numeric_limits<double>::quiet_NaN();
  // Mann-Whitney U on the pairwise values: not independent (pairs share seeds), kept only as a reference
  // comparison with the Python project, never in a main table.
  stats::MannWhitneyResult reference_mann_whitney;
};

struct MetricStudy {
  std::string metric;
  stats::BootstrapResult trained;
  int64_t n_seeds = 0, n_pairs = 0;
  std::vector<GroupComparison> comparisons;  // in group order
  // The most conservative geometry-matched null for this metric (the one with the highest mean similarity),
  // whose verdict is the decision; empty when no geometry-matched null was computed.
  std::string decision_null;

  const GroupComparison* find(std::string_view group) const;
  const GroupComparison* decision() const { return find(decision_null); }
};

struct GroupInfo {
  std::string name;
  GroupRole role = GroupRole::Null;
  bool geometry_matched = false;
  std::string controls_for;
  std::vector<std::string> labels;
};

struct StabilityStudy {
  std::vector<std::string> trained_labels;
  std::vector<GroupInfo> groups;
  double confidence = 0.95;
  int64_t bootstrap = 0;
  uint64_t seed = 0;
  std::vector<MetricStudy> metrics;  // in study_metrics() order
  // Pair-level data (empty when read back from stability.json).
  std::vector<StudyPair> trained_pairs;
  std::vector<std::vector<StudyPair>> group_pairs;  // per group, within-group pairs (i < j)
  std::vector<std::vector<StudyPair>> cross_pairs;  // per group, (trained i, group j) for all i, j
  std::vector<std::vector<double>> per_feature_dec, per_feature_enc;    // [trained][latent]
  std::vector<std::vector<std::vector<double>>> group_per_feature_dec;  // [group][dict][latent]
  // Within-dictionary nearest-neighbour |cos| of each trained decoder (mean over atoms): how alike a
  // dictionary's own atoms are, a reference line for the cross-seed numbers.
  std::vector<double> within_nn_cos;

  const MetricStudy& metric(std::string_view name) const;
  MetricStudy& metric(std::string_view name);
};

// Runs every pair (trained-trained decoder and encoder; per group within-group and trained-group), the
// per-feature stability and the statistics, and applies the verdict rule with Holm within the study.
// Needs at least two trained dictionaries and, per group, at least two dictionaries of the trained
// dictionaries' dimension. Results do not depend on the thread count.
StabilityStudy run_stability_study(const std::vector<StudyDictionary>& trained,
                                   const std::vector<ComparisonGroup>& groups, const StudyOptions& options);

// Re-applies Holm over each family pooled across several studies (e.g. TopK and ReLU in phase4a) and
// re-derives every tested verdict with the same rule; returns the family sizes used ({"nulls", n}, ...).
std::vector<std::pair<std::string, int64_t>> holm_across_studies(const std::vector<StabilityStudy*>& studies);

// Per-seed mean similarity: for seed i the mean of sim(i, j) over j != i.
std::vector<double> per_seed_means(const stats::SimilarityMatrix& sim);

}  // namespace husai
