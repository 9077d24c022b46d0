#include "husai/metrics/stability_study.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"

namespace husai {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

uint64_t derived_seed(uint64_t seed, const std::string& name) {
  const auto b = Philox(seed, stream_id(name)).block(0);
  return (static_cast<uint64_t>(b[0]) << 32) | b[1];
}

bool is_encoder_metric(std::string_view metric) {
  return metric.size() > 4 && metric.substr(metric.size() - 4) == "_enc";
}

std::string_view base_metric(std::string_view metric) {
  return is_encoder_metric(metric) ? metric.substr(0, metric.size() - 4) : metric;
}

double pair_value(const StudyPair& r, std::string_view metric) {
  return pair_metric(is_encoder_metric(metric) ? r.enc : r.dec, base_metric(metric));
}

stats::SimilarityMatrix similarity(int64_t n, const std::vector<StudyPair>& pairs, std::string_view metric) {
  stats::SimilarityMatrix s;
  s.n = n;
  s.values.assign(static_cast<size_t>(n * n), 0.0);
  for (const StudyPair& r : pairs) {
    const double v = pair_value(r, metric);
    s.values[static_cast<size_t>(r.a * n + r.b)] = v;
    s.values[static_cast<size_t>(r.b * n + r.a)] = v;
  }
  return s;
}

std::vector<double> upper_values(const stats::SimilarityMatrix& s) {
  std::vector<double> v;
  v.reserve(static_cast<size_t>(s.n * (s.n - 1) / 2));
  for (int64_t i = 0; i < s.n; ++i) {
    for (int64_t j = i + 1; j < s.n; ++j) v.push_back(s.at(i, j));
  }
  return v;
}

double binomial(int64_t n, int64_t k) {
  double r = 1;
  for (int64_t i = 1; i <= k; ++i) r = r * static_cast<double>(n - k + i) / static_cast<double>(i);
  return r;
}

// Pooled (n + m) x (n + m) matrix for the permutation test: trained first, then the group's dictionaries.
stats::SimilarityMatrix pooled_matrix(const stats::SimilarityMatrix& ts, const stats::SimilarityMatrix& gs,
                                      const std::vector<StudyPair>& cross, std::string_view metric) {
  const int64_t n = ts.n, m = gs.n;
  stats::SimilarityMatrix pooled;
  pooled.n = n + m;
  pooled.values.assign(static_cast<size_t>(pooled.n * pooled.n), 0.0);
  auto put = [&](int64_t i, int64_t j, double v) {
    pooled.values[static_cast<size_t>(i * pooled.n + j)] = v;
    pooled.values[static_cast<size_t>(j * pooled.n + i)] = v;
  };
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) put(i, j, ts.at(i, j));
  }
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = i + 1; j < m; ++j) put(n + i, n + j, gs.at(i, j));
  }
  for (const StudyPair& r : cross) put(r.a, n + r.b, pair_value(r, metric));
  return pooled;
}

std::string family_of(GroupRole role) {
  return role == GroupRole::Surrogate ? "surrogate" : "nulls";
}

bool is_tested(std::string_view metric) {
  const auto& t = tested_metrics();
  return std::find(t.begin(), t.end(), metric) != t.end();
}

// Holm over every tested comparison of `family` in the given studies, in study, metric, group order.
int64_t apply_holm(const std::vector<StabilityStudy*>& studies, const std::string& family) {
  std::vector<GroupComparison*> members;
  for (StabilityStudy* s : studies) {
    for (MetricStudy& m : s->metrics) {
      for (GroupComparison& c : m.comparisons) {
        if (c.family == family && is_tested(m.metric)) members.push_back(&c);
      }
    }
  }
  std::vector<double> p;
  p.reserve(members.size());
  for (const GroupComparison* c : members) p.push_back(c->permutation.p_value_two_sided);
  const std::vector<double> adjusted = stats::holm_adjust(p);
  const auto size = static_cast<int64_t>(members.size());
  double min_p = std::numeric_limits<double>::infinity();
  for (const GroupComparison* c : members) {
    if (std::isfinite(c->min_attainable_p)) min_p = std::min(min_p, c->min_attainable_p);
  }
  const double floor = std::isfinite(min_p) ? std::min(1.0, static_cast<double>(size) * min_p) : 0.0;
  for (size_t k = 0; k < members.size(); ++k) {
    members[k]->p_adjusted = adjusted[k];
    members[k]->family_size = size;
    members[k]->holm_floor = floor;
  }
  return size;
}

void apply_verdicts(StabilityStudy& s) {
  const double alpha = 1.0 - s.confidence;
  for (MetricStudy& m : s.metrics) {
    for (GroupComparison& c : m.comparisons) {
      c.verdict = is_tested(m.metric) ? decide_verdict(c.difference.estimate, c.p_adjusted, alpha,
                                                       std::isfinite(c.holm_floor) ? c.holm_floor : 0.0)
                                      : Verdict::NotTested;
    }
  }
}

// Throws husai::Error when the trained dictionaries, the groups or the options cannot make a study.
void check_study_inputs(const std::vector<StudyDictionary>& trained,
                        const std::vector<ComparisonGroup>& groups, const StudyOptions& options) {
  const auto n = static_cast<int64_t>(trained.size());
  if (n < 2) throw Error("a stability study needs at least two trained dictionaries");
  if (options.bootstrap < 1) throw Error("bootstrap resamples must be at least 1");
  if (!(options.confidence > 0 && options.confidence < 1)) throw Error("confidence must lie in (0, 1)");
  for (const ComparisonGroup& g : groups) {
    if (g.dicts.size() < 2) throw Error("comparison group '" + g.name + "' needs at least two dictionaries");
    for (const StudyDictionary& d : g.dicts) {
      if (d.dec.dim != trained[0].dec.dim)
        throw Error("comparison group '" + g.name + "' has dictionaries of another dimension");
    }
  }
}

// A study with its settings, labels and group descriptions, before any pair is computed.
StabilityStudy study_header(const std::vector<StudyDictionary>& trained,
                            const std::vector<ComparisonGroup>& groups, const StudyOptions& options) {
  StabilityStudy s;
  s.confidence = options.confidence;
  s.bootstrap = options.bootstrap;
  s.seed = options.seed;
  for (const StudyDictionary& d : trained) s.trained_labels.push_back(d.label);
  for (const ComparisonGroup& g : groups) {
    GroupInfo info{g.name, g.role, g.geometry_matched, g.controls_for, {}};
    for (const StudyDictionary& d : g.dicts) info.labels.push_back(d.label);
    s.groups.push_back(std::move(info));
  }
  return s;
}

// Where the blocks of one group's pair jobs start.
struct GroupJobs {
  size_t within = 0, within_enc = 0, cross = 0, cross_enc = 0;  // first job index of each block
  bool enc_is_dec = true;
};

// Every feature set and every pair job of a study, in the order pair_stabilities gets them.
struct PairPlan {
  std::vector<const FeatureSet*> sets;
  std::vector<int64_t> group_base;              // per group, the index of its first set
  std::vector<std::pair<int64_t, int64_t>> tp;  // the trained pairs
  std::vector<std::pair<int64_t, int64_t>> jobs;
  std::vector<GroupJobs> gj;
};

// The feature sets: trained decoders, trained encoders, then per group its decoders and encoders.
void plan_sets(PairPlan& plan, const std::vector<StudyDictionary>& trained,
               const std::vector<ComparisonGroup>& groups) {
  std::vector<const FeatureSet*>& sets = plan.sets;
  size_t n_sets = 2 * trained.size();
  for (const ComparisonGroup& g : groups) n_sets += 2 * g.dicts.size();
  sets.reserve(n_sets);
  for (const StudyDictionary& d : trained) sets.push_back(&d.dec);
  for (const StudyDictionary& d : trained) sets.push_back(&d.enc);
  plan.group_base.resize(groups.size());
  for (size_t k = 0; k < groups.size(); ++k) {
    plan.group_base[k] = static_cast<int64_t>(sets.size());
    for (const StudyDictionary& d : groups[k].dicts) sets.push_back(&d.dec);
    for (const StudyDictionary& d : groups[k].dicts) sets.push_back(d.enc_is_dec ? &d.dec : &d.enc);
  }
}

// The pair jobs: trained pairs (decoder, encoder), then per group its within-group and cross pairs.
void plan_jobs(PairPlan& plan, int64_t n, const std::vector<ComparisonGroup>& groups) {
  std::vector<std::pair<int64_t, int64_t>>& jobs = plan.jobs;
  plan.tp = upper_pairs(n);
  const std::vector<std::pair<int64_t, int64_t>>& tp = plan.tp;
  size_t n_jobs = 2 * tp.size();
  for (const ComparisonGroup& g : groups) {
    const size_t m = g.dicts.size();
    n_jobs += m * (m - 1) + 2 * static_cast<size_t>(n) * m;
  }
  jobs.reserve(n_jobs);
  for (const auto& [a, b] : tp) jobs.emplace_back(a, b);
  for (const auto& [a, b] : tp) jobs.emplace_back(n + a, n + b);
  std::vector<GroupJobs>& gj = plan.gj;
  gj.resize(groups.size());
  for (size_t k = 0; k < groups.size(); ++k) {
    const auto m = static_cast<int64_t>(groups[k].dicts.size());
    const int64_t base = plan.group_base[k];
    bool enc_is_dec = true;
    for (const StudyDictionary& d : groups[k].dicts) enc_is_dec = enc_is_dec && d.enc_is_dec;
    gj[k].enc_is_dec = enc_is_dec;
    const std::vector<std::pair<int64_t, int64_t>> gp = upper_pairs(m);
    gj[k].within = jobs.size();
    for (const auto& [a, b] : gp) jobs.emplace_back(base + a, base + b);
    gj[k].within_enc = jobs.size();
    if (!enc_is_dec) {
      for (const auto& [a, b] : gp) jobs.emplace_back(base + m + a, base + m + b);
    }
    gj[k].cross = jobs.size();
    for (int64_t a = 0; a < n; ++a) {
      for (int64_t b = 0; b < m; ++b) jobs.emplace_back(a, base + b);
    }
    gj[k].cross_enc = jobs.size();
    for (int64_t a = 0; a < n; ++a) {
      for (int64_t b = 0; b < m; ++b) jobs.emplace_back(n + a, base + m + b);
    }
  }
}

// Files the results of the pair jobs as the study's trained, within-group and cross pairs.
void store_pairs(StabilityStudy& s, int64_t n, const std::vector<ComparisonGroup>& groups,
                 const PairPlan& plan, const std::vector<PairStability>& results) {
  const std::vector<std::pair<int64_t, int64_t>>& tp = plan.tp;
  const std::vector<GroupJobs>& gj = plan.gj;
  s.trained_pairs.resize(tp.size());
  for (size_t p = 0; p < tp.size(); ++p) {
    s.trained_pairs[p] = {tp[p].first, tp[p].second, results[p], results[tp.size() + p]};
  }
  s.group_pairs.resize(groups.size());
  s.cross_pairs.resize(groups.size());
  for (size_t k = 0; k < groups.size(); ++k) {
    const auto m = static_cast<int64_t>(groups[k].dicts.size());
    const std::vector<std::pair<int64_t, int64_t>> gp = upper_pairs(m);
    for (size_t p = 0; p < gp.size(); ++p) {
      const PairStability& dec = results[gj[k].within + p];
      const PairStability& enc = gj[k].enc_is_dec ? dec : results[gj[k].within_enc + p];
      s.group_pairs[k].push_back({gp[p].first, gp[p].second, dec, enc});
    }
    for (size_t p = 0; p < static_cast<size_t>(n * m); ++p) {
      s.cross_pairs[k].push_back({static_cast<int64_t>(p) / m, static_cast<int64_t>(p) % m,
                                  results[gj[k].cross + p], results[gj[k].cross_enc + p]});
    }
  }
}

// Fraction of the decoder matching's pairs whose decoder |cos| and encoder |cos| (columns of W_enc, summed in
// dimension order) both reach `threshold`.
double shared_both(const PairStability& dec, const FeatureSet& enc_a, const FeatureSet& enc_b,
                   double threshold) {
  if (dec.matching.empty()) return std::numeric_limits<double>::quiet_NaN();
  int64_t both = 0;
  for (size_t k = 0; k < dec.matching.size(); ++k) {
    const auto [i, j] = dec.matching[k];
    const float* x = enc_a.rows.data() + static_cast<int64_t>(i) * enc_a.dim;
    const float* y = enc_b.rows.data() + static_cast<int64_t>(j) * enc_b.dim;
    double dot = 0;
    for (int64_t d = 0; d < enc_a.dim; ++d) dot += static_cast<double>(x[d]) * static_cast<double>(y[d]);
    both += static_cast<double>(dec.matched_cos[k]) >= threshold && std::abs(dot) >= threshold ? 1 : 0;
  }
  return static_cast<double>(both) / static_cast<double>(dec.matching.size());
}

// Per-feature stability of `count` dictionaries from their pairs' decoder (or encoder) results.
std::vector<std::vector<double>> per_feature(int64_t count, const std::vector<StudyPair>& pairs, bool enc) {
  std::vector<PairStability> v;
  v.reserve(pairs.size());
  for (const StudyPair& r : pairs) v.push_back(enc ? r.enc : r.dec);
  return per_feature_stability(count, v);
}

// One metric of the trained dictionaries: the similarity matrix, its upper triangle and per-seed means.
struct TrainedMetric {
  stats::SimilarityMatrix ts;
  std::vector<double> tv;
  std::vector<double> t_seed;
};

// Trained seeds against group k for one metric: intervals, permutation test and effect sizes.
GroupComparison compare_group(const StabilityStudy& s, const std::vector<ComparisonGroup>& groups, size_t k,
                              const std::string& metric, const TrainedMetric& t, double trained_estimate,
                              const StudyOptions& options) {
  const int64_t n = t.ts.n;  // the trained seeds
  const ComparisonGroup& g = groups[k];
  const auto m = static_cast<int64_t>(g.dicts.size());
  const std::string tag = metric + "/" + g.name;
  const stats::SimilarityMatrix gs = similarity(m, s.group_pairs[k], metric);
  const std::vector<double> gv = upper_values(gs);
  GroupComparison c;
  c.group = g.name;
  c.role = g.role;
  c.geometry_matched = g.geometry_matched;
  c.family = family_of(g.role);
  c.n_seeds = m;
  c.n_pairs = static_cast<int64_t>(gv.size());
  c.group_similarity = stats::seed_bootstrap(gs, options.bootstrap, options.confidence,
                                             derived_seed(options.seed, "null/" + tag));
  c.difference = stats::seed_bootstrap_difference(t.ts, gs, options.bootstrap, options.confidence,
                                                  derived_seed(options.seed, "difference/" + tag));
  c.ratio = c.group_similarity.estimate != 0 ? trained_estimate / c.group_similarity.estimate : kNaN;
  c.permutation =
      stats::permutation_test(pooled_matrix(t.ts, gs, s.cross_pairs[k], metric), n, options.bootstrap,
                              derived_seed(options.seed, "permutation/" + tag));
  // Why 1 / C(n + m, n): the exact test counts, among all C(n + m, n) ways to label n + m dictionaries as
  // trained or null, those at least as extreme as the observed labelling, which is one of them; so no data
  // can give p below one labelling's share. (Sampled: (1 + hits) / (1 + draws), at least 1 / (1 + draws).)
  // Holm multiplies the smallest p by the family size, so when family size x this floor exceeds alpha no
  // outcome could be "above" or "below": the verdict is then `undecidable`, not `indistinguishable`, because
  // the seeds could not have shown a difference whatever it was.
  c.min_attainable_p =
      c.permutation.exact ? 1.0 / binomial(n + m, n) : 1.0 / (1.0 + static_cast<double>(options.bootstrap));
  c.effect_size_seed_level = stats::cohens_d(t.t_seed, per_seed_means(gs));
  c.reference_mann_whitney = stats::mann_whitney_greater(t.tv, gv);
  return c;
}

// Statistics of one metric: the trained interval, every group's comparison and the decision null.
MetricStudy study_metric(const StabilityStudy& s, int64_t n, const std::vector<ComparisonGroup>& groups,
                         const std::string& metric, const StudyOptions& options) {
  MetricStudy ms;
  ms.metric = metric;
  TrainedMetric t;
  t.ts = similarity(n, s.trained_pairs, metric);
  t.tv = upper_values(t.ts);
  ms.trained = stats::seed_bootstrap(t.ts, options.bootstrap, options.confidence,
                                     derived_seed(options.seed, "trained/" + metric));
  ms.n_seeds = n;
  ms.n_pairs = static_cast<int64_t>(t.tv.size());
  t.t_seed = per_seed_means(t.ts);
  double best_geometry_mean = -std::numeric_limits<double>::infinity();
  for (size_t k = 0; k < groups.size(); ++k) {
    const ComparisonGroup& g = groups[k];
    GroupComparison c = compare_group(s, groups, k, metric, t, ms.trained.estimate, options);
    if (g.geometry_matched && g.role == GroupRole::Null && c.group_similarity.estimate > best_geometry_mean) {
      best_geometry_mean = c.group_similarity.estimate;
      ms.decision_null = g.name;
    }
    ms.comparisons.push_back(std::move(c));
  }
  return ms;
}

}  // namespace

std::string_view group_role_name(GroupRole role) {
  return role == GroupRole::Surrogate ? "surrogate" : "null";
}

std::string_view verdict_name(Verdict v) {
  switch (v) {
    case Verdict::Above:
      return "above";
    case Verdict::Below:
      return "below";
    case Verdict::Indistinguishable:
      return "indistinguishable";
    case Verdict::Undecidable:
      return "undecidable";
    case Verdict::NotTested:
      return "not_tested";
  }
  return "not_tested";
}

Verdict parse_verdict(std::string_view name) {
  for (const Verdict v : {Verdict::Above, Verdict::Below, Verdict::Indistinguishable, Verdict::Undecidable,
                          Verdict::NotTested}) {
    if (verdict_name(v) == name) return v;
  }
  throw Error("unknown verdict '" + std::string(name) + "'");
}

Verdict decide_verdict(double difference, double p_adjusted, double alpha, double holm_floor) {
  if (!std::isfinite(difference) || std::isnan(p_adjusted) || p_adjusted > alpha || difference == 0) {
    // Not "no difference" when the design could never have shown one: say so.
    return holm_floor > alpha ? Verdict::Undecidable : Verdict::Indistinguishable;
  }
  return difference > 0 ? Verdict::Above : Verdict::Below;
}

const std::vector<std::string>& study_metrics() {
  static const std::vector<std::string> names = {
      "pwmcc",     "matched_mean_cos",     "shared_frac_05",     "shared_frac_07",     "shared_frac_09",
      "pwmcc_enc", "matched_mean_cos_enc", "shared_frac_05_enc", "shared_frac_07_enc", "shared_frac_09_enc"};
  return names;
}

const std::vector<std::string>& tested_metrics() {
  static const std::vector<std::string> names = {"pwmcc", "matched_mean_cos"};
  return names;
}

double pair_metric(const PairStability& p, std::string_view base) {
  if (base == "pwmcc") return p.pwmcc;
  if (base == "pwmcc_ab") return p.pwmcc_ab;
  if (base == "pwmcc_ba") return p.pwmcc_ba;
  if (base == "matched_mean_cos") return p.matched_mean_cos;
  if (base == "shared_frac_05") return p.shared_frac[0];
  if (base == "shared_frac_07") return p.shared_frac[1];
  if (base == "shared_frac_09") return p.shared_frac[2];
  throw Error("unknown stability metric " + std::string(base));
}

const GroupComparison* MetricStudy::find(std::string_view group) const {
  for (const GroupComparison& c : comparisons) {
    if (c.group == group) return &c;
  }
  return nullptr;
}

const MetricStudy& StabilityStudy::metric(std::string_view name) const {
  for (const MetricStudy& m : metrics) {
    if (m.metric == name) return m;
  }
  throw Error("stability study has no metric '" + std::string(name) + "'");
}

MetricStudy& StabilityStudy::metric(std::string_view name) {
  return const_cast<MetricStudy&>(std::as_const(*this).metric(name));
}

std::vector<double> per_seed_means(const stats::SimilarityMatrix& sim) {
  std::vector<double> out(static_cast<size_t>(sim.n), kNaN);
  for (int64_t i = 0; i < sim.n; ++i) {
    double sum = 0;
    for (int64_t j = 0; j < sim.n; ++j) {
      if (j != i) sum += sim.at(i, j);
    }
    if (sim.n > 1) out[static_cast<size_t>(i)] = sum / static_cast<double>(sim.n - 1);
  }
  return out;
}

StabilityStudy run_stability_study(const std::vector<StudyDictionary>& trained,
                                   const std::vector<ComparisonGroup>& groups, const StudyOptions& options) {
  const auto n = static_cast<int64_t>(trained.size());
  check_study_inputs(trained, groups, options);
  StabilityStudy s = study_header(trained, groups, options);

  // ---- Every pair in one parallel loop (one single-threaded GEMM + assignment per pair). Encoder features
  // of a dictionary whose encoder is its decoder are not listed twice.
  PairPlan plan;
  plan_sets(plan, trained, groups);
  plan_jobs(plan, n, groups);
  const std::vector<PairStability> results = pair_stabilities(plan.sets, plan.jobs, true);
  store_pairs(s, n, groups, plan, results);
  for (StudyPair& p : s.trained_pairs) {
    p.shared_frac_both_07 =
        shared_both(p.dec, trained[static_cast<size_t>(p.a)].enc, trained[static_cast<size_t>(p.b)].enc, 0.7);
  }

  // ---- Per-feature stability.
  s.per_feature_dec = per_feature(n, s.trained_pairs, false);
  s.per_feature_enc = per_feature(n, s.trained_pairs, true);
  for (size_t k = 0; k < groups.size(); ++k) {
    s.group_per_feature_dec.push_back(
        per_feature(static_cast<int64_t>(groups[k].dicts.size()), s.group_pairs[k], false));
  }

  // ---- Statistics per metric and group.
  for (const std::string& metric : study_metrics())
    s.metrics.push_back(study_metric(s, n, groups, metric, options));
  std::vector<StabilityStudy*> one = {&s};
  holm_across_studies(one);
  return s;
}

std::vector<std::pair<std::string, int64_t>> holm_across_studies(
    const std::vector<StabilityStudy*>& studies) {
  std::vector<std::pair<std::string, int64_t>> sizes;
  for (const std::string family : {"nulls", "surrogate"}) {
    const int64_t size = apply_holm(studies, family);
    if (size > 0) sizes.emplace_back(family, size);
  }
  for (StabilityStudy* s : studies) apply_verdicts(*s);
  return sizes;
}

}  // namespace husai
