#include "husai/experiments/stability_report.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <sstream>

#include <fmt/format.h>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/experiments/study.hpp"
#include "husai/io/gnuplot.hpp"

namespace husai {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int64_t kListedLatents = 10;  // most / least stable latents listed per SAE

json num(double x) {
  return std::isfinite(x) ? json(x) : json(nullptr);
}

double get_num(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : std::nan("");
}

std::string fmt_p(double p) {
  if (std::isnan(p)) return "n/a";
  return p < 1e-3 ? fmt::format("{:.2e}", p) : fmt::format("{:.4f}", p);
}

json interval_json(const stats::Interval& iv) {
  return json::array({num(iv.lo), num(iv.hi)});
}

stats::Interval interval_from(const json& j) {
  auto d = [](const json& v) { return v.is_number() ? v.get<double>() : std::nan(""); };
  return {d(j.at(0)), d(j.at(1))};
}

json bootstrap_json(const stats::BootstrapResult& b) {
  return {{"mean", num(b.estimate)},
          {"standard_error", num(b.standard_error)},
          {"ci_percentile", interval_json(b.percentile)},
          {"ci_bca", interval_json(b.bca)},
          {"confidence", b.confidence},
          {"n_resamples", b.n_resamples},
          {"n_redrawn", b.n_redrawn}};
}

stats::BootstrapResult bootstrap_from(const json& j, const char* estimate_key) {
  stats::BootstrapResult b;
  b.estimate = get_num(j, estimate_key);
  b.standard_error = get_num(j, "standard_error");
  b.percentile = interval_from(j.at("ci_percentile"));
  b.bca = interval_from(j.at("ci_bca"));
  b.confidence = j.at("confidence").get<double>();
  b.n_resamples = j.at("n_resamples").get<int64_t>();
  b.n_redrawn = j.at("n_redrawn").get<int64_t>();
  return b;
}

json comparison_json(const GroupComparison& c, double confidence) {
  json j = bootstrap_json(c.group_similarity);
  j["role"] = std::string(group_role_name(c.role));
  j["geometry_matched"] = c.geometry_matched;
  j["n_seeds"] = c.n_seeds;
  j["n_pairs"] = c.n_pairs;
  j["difference"] = bootstrap_json(c.difference);
  j["difference"]["estimate"] = num(c.difference.estimate);
  j["difference"].erase("mean");
  j["ratio"] = num(c.ratio);
  j["permutation"] = {{"observed", num(c.permutation.observed)},
                      {"p_value", num(c.permutation.p_value)},
                      {"p_value_two_sided", num(c.permutation.p_value_two_sided)},
                      {"exact", c.permutation.exact},
                      {"n_permutations", c.permutation.n_permutations},
                      {"min_attainable_p", num(c.min_attainable_p)},
                      {"family", c.family},
                      {"family_size", c.family_size},
                      {"p_holm", num(c.p_adjusted)},
                      {"holm_floor", num(c.holm_floor)}};
  j["effect_size_seed_level"] = num(c.effect_size_seed_level);
  j["reference_comparison"] = {
      {"mann_whitney_u", num(c.reference_mann_whitney.u)},
      {"mann_whitney_p", num(c.reference_mann_whitney.p_value)},
      {"method", c.reference_mann_whitney.method},
      {"note",
       "on pairwise values, which share seeds and are not independent: for comparison with the "
       "reference project only, never a decision"}};
  j["verdict"] = std::string(verdict_name(c.verdict));
  j["verdict_text"] = verdict_text(c, confidence);
  return j;
}

GroupComparison comparison_from(const std::string& name, const json& j) {
  GroupComparison c;
  c.group = name;
  c.role = j.at("role").get<std::string>() == "surrogate" ? GroupRole::Surrogate : GroupRole::Null;
  c.geometry_matched = j.at("geometry_matched").get<bool>();
  c.group_similarity = bootstrap_from(j, "mean");
  c.n_seeds = j.at("n_seeds").get<int64_t>();
  c.n_pairs = j.at("n_pairs").get<int64_t>();
  c.difference = bootstrap_from(j.at("difference"), "estimate");
  c.ratio = get_num(j, "ratio");
  const json& p = j.at("permutation");
  c.permutation.observed = get_num(p, "observed");
  c.permutation.p_value = get_num(p, "p_value");
  c.permutation.p_value_two_sided = get_num(p, "p_value_two_sided");
  c.permutation.exact = p.at("exact").get<bool>();
  c.permutation.n_permutations = p.at("n_permutations").get<int64_t>();
  c.min_attainable_p = get_num(p, "min_attainable_p");
  c.family = p.at("family").get<std::string>();
  c.family_size = p.at("family_size").get<int64_t>();
  c.p_adjusted = get_num(p, "p_holm");
  c.effect_size_seed_level = get_num(j, "effect_size_seed_level");
  const json& ref = j.at("reference_comparison");
  c.reference_mann_whitney.u = get_num(ref, "mann_whitney_u");
  c.reference_mann_whitney.p_value = get_num(ref, "mann_whitney_p");
  c.reference_mann_whitney.method = ref.at("method").get<std::string>();
  c.verdict = parse_verdict(j.at("verdict").get<std::string>());
  return c;
}

struct Quantiles {
  double mean = 0, median = 0, q10 = 0, q90 = 0, min = 0, max = 0;
};

Quantiles describe(const std::vector<double>& v) {
  Quantiles q;
  if (v.empty()) return q;
  q.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  q.median = stats::quantile(v, 0.5);
  q.q10 = stats::quantile(v, 0.1);
  q.q90 = stats::quantile(v, 0.9);
  q.min = *std::min_element(v.begin(), v.end());
  q.max = *std::max_element(v.begin(), v.end());
  return q;
}

json per_feature_json(const std::vector<double>& v, bool list_latents) {
  const Quantiles q = describe(v);
  const auto n = static_cast<int64_t>(v.size());
  json frac = json::object();
  for (const double t : kSharedThresholds) {
    const auto above = std::count_if(v.begin(), v.end(), [&](double x) { return x >= t; });
    frac[fmt::format("{:.1f}", t)] =
        static_cast<double>(above) / static_cast<double>(std::max<int64_t>(n, 1));
  }
  json j = {{"n_latents", n}, {"mean", q.mean}, {"median", q.median}, {"q10", q.q10},
            {"q90", q.q90},   {"min", q.min},   {"max", q.max},       {"frac_at_least", frac}};
  if (!list_latents) return j;
  // Latents by stability, descending (ties: lower index first).
  std::vector<int64_t> order(v.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
    return v[static_cast<size_t>(x)] > v[static_cast<size_t>(y)];
  });
  json most = json::array(), least = json::array();
  for (int64_t k = 0; k < std::min(kListedLatents, n); ++k) {
    const int64_t top = order[static_cast<size_t>(k)], bottom = order[static_cast<size_t>(n - 1 - k)];
    most.push_back({{"latent", top}, {"stability", v[static_cast<size_t>(top)]}});
    least.push_back({{"latent", bottom}, {"stability", v[static_cast<size_t>(bottom)]}});
  }
  j["most_stable"] = most;
  j["least_stable"] = least;
  return j;
}

const std::vector<std::string>& pair_metric_names() {
  static const std::vector<std::string> names = {
      "pwmcc",          "pwmcc_ab",       "pwmcc_ba",      "matched_mean_cos",
      "shared_frac_05", "shared_frac_07", "shared_frac_09"};
  return names;
}

json pair_json(const StudyPair& r, const std::string& a_label, const std::string& b_label) {
  json j = {{"a", r.a}, {"b", r.b}, {"a_path", a_label}, {"b_path", b_label}};
  for (const std::string& m : pair_metric_names()) j[m] = pair_metric(r.dec, m);
  for (const std::string& m : pair_metric_names()) j[m + "_enc"] = pair_metric(r.enc, m);
  if (std::isfinite(r.shared_frac_both_07)) j["shared_frac_both_07"] = r.shared_frac_both_07;
  if (r.dec.matching_rounds > 0 || r.enc.matching_rounds > 0) {
    // Large dictionaries: the matching came from the sparse candidate graph and was certified optimal.
    j["matching"] = {{"method", "sparse candidate graph, certified by dual potentials on every pair"},
                     {"certified", true},
                     {"rounds", r.dec.matching_rounds},
                     {"rounds_enc", r.enc.matching_rounds},
                     {"edges", r.dec.matching_edges},
                     {"edges_enc", r.enc.matching_edges}};
  }
  return j;
}

std::string ci_text(const stats::Interval& iv) {
  return fmt_ci(iv.lo, iv.hi);
}

const GroupComparison* surrogate_of(const MetricStudy& m) {
  for (const GroupComparison& c : m.comparisons) {
    if (c.role == GroupRole::Surrogate) return &c;
  }
  return nullptr;
}

// The title, the settings line and the table of trained SAEs.
std::string md_inputs(const StabilityStudy& study, const StabilityReportContext& context) {
  const auto n = static_cast<int64_t>(study.trained_labels.size());
  std::string md = "# husai compare: stability of SAEs across seeds\n\n";
  md += fmt::format("{} trained SAEs; {} bootstrap resamples; statistics seed {}.\n\n", n, study.bootstrap,
                    study.seed);
  md += "| # | SAE folder | architecture | d_sae | seed |\n|---|---|---|---|---|\n";
  for (const json& in : context.inputs) {
    md +=
        fmt::format("| {} | `{}` | {} | {} | {} |\n", in["index"].get<int64_t>(),
                    in["path"].get<std::string>(), in["architecture"].get<std::string>(),
                    in["d_sae"].get<int64_t>(), in["seed"].is_null() ? std::string("?") : in["seed"].dump());
  }
  return md;
}

// The comparison groups table and the verdict rule.
std::string md_groups(const StabilityStudy& study) {
  const double alpha = 1.0 - study.confidence;
  std::string md =
      "\n## Comparison groups\n\n| group | role | dictionaries | geometry-matched | controls for |\n"
      "|---|---|---|---|---|\n";
  for (const GroupInfo& g : study.groups) {
    md += fmt::format("| {} | {} | {} | {} | {} |\n", g.name, group_role_name(g.role), g.labels.size(),
                      g.geometry_matched ? "yes" : "no", g.controls_for);
  }
  md += fmt::format(
      "\n**Verdict rule** (one rule for every comparison): *above* / *below* when the two-sided exact "
      "permutation test over seed labels, Holm-adjusted over its family, gives p <= {} and the difference "
      "(trained - group) is positive / negative; otherwise *indistinguishable*. Families: every tested "
      "(metric, null) pair of this study is one family; the surrogate control is its own family. Tested "
      "metrics: {}; the shared fractions are described by intervals only. The decision null of a metric is "
      "the geometry-matched null with the highest mean similarity (the most conservative).\n",
      fmt_num(alpha, 2), fmt::format("`{}`", fmt::join(tested_metrics(), "`, `")));
  return md;
}

// The decision of each tested metric, and what these numbers do not show.
std::string md_decisions(const StabilityStudy& study) {
  std::string md = "\n## Decisions\n\n";
  for (const std::string& metric : tested_metrics()) {
    const MetricStudy& m = study.metric(metric);
    md += fmt::format("- `{}`: trained {} {}", metric, fmt_num(m.trained.estimate), ci_text(m.trained.bca));
    if (const GroupComparison* d = m.decision()) {
      md += fmt::format("; decision null **{}**: {}", m.decision_null, verdict_text(*d, study.confidence));
    } else {
      md += "; no geometry-matched null computed, so no decision";
    }
    if (const GroupComparison* s = surrogate_of(m)) {
      md += fmt::format("; surrogate control: {}", verdict_text(*s, study.confidence));
    }
    md += "\n";
  }
  md +=
      "\nWhat these numbers do not show: similarity across seeds says a feature is *reproducible* under a "
      "change of SAE initialisation (and data order), not that it is *real* or interpretable. A trained "
      "dictionary above every geometry-matched null has structure beyond its own geometry; it reflects the "
      "*data* only where it also beats SAEs trained on structureless surrogate data with the same mean and "
      "covariance (the surrogate control, when run).\n";
  return md;
}

// The table of the trained SAEs against every group, for every metric.
std::string md_comparisons(const StabilityStudy& study) {
  const int conf_pct = static_cast<int>(std::lround(study.confidence * 100));
  std::string md = fmt::format(
      "\n## Trained vs every group ({}% intervals: BCa; percentile in stability.json)\n\n", conf_pct);
  md +=
      "| metric | trained | group | group mean | difference | ratio | two-sided p | Holm p (family, size) | "
      "verdict |\n|---|---|---|---|---|---|---|---|---|\n";
  for (const MetricStudy& m : study.metrics) {
    const std::string trained_txt = fmt::format("{} {}", fmt_num(m.trained.estimate), ci_text(m.trained.bca));
    for (const GroupComparison& c : m.comparisons) {
      md += fmt::format("| `{}` | {} | {}{} | {} {} | {:+.4f} {} | {} | {} | {} ({}, {}) | {} |\n", m.metric,
                        trained_txt, c.group, c.group == m.decision_null ? " (decision)" : "",
                        fmt_num(c.group_similarity.estimate), ci_text(c.group_similarity.bca),
                        c.difference.estimate, ci_text(c.difference.bca), fmt_num(c.ratio, 3),
                        fmt_p(c.permutation.p_value_two_sided), fmt_p(c.p_adjusted), c.family, c.family_size,
                        verdict_name(c.verdict));
    }
  }
  return md;
}

// The table of every trained pair (empty when the study holds no pair-level data).
std::string md_trained_pairs(const StabilityStudy& study) {
  std::string md;
  if (study.trained_pairs.empty()) return md;
  md +=
      "\n## Trained pairs\n\n| a | b | pwmcc | pwmcc_ab | pwmcc_ba | matched_mean_cos | shared >= 0.5 | "
      ">= 0.7 | >= 0.9 | pwmcc_enc | matched_mean_cos_enc "
      "|\n|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const StudyPair& r : study.trained_pairs) {
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", r.a, r.b,
                      fmt_num(r.dec.pwmcc), fmt_num(r.dec.pwmcc_ab), fmt_num(r.dec.pwmcc_ba),
                      fmt_num(r.dec.matched_mean_cos), fmt_num(r.dec.shared_frac[0], 3),
                      fmt_num(r.dec.shared_frac[1], 3), fmt_num(r.dec.shared_frac[2], 3),
                      fmt_num(r.enc.pwmcc), fmt_num(r.enc.matched_mean_cos));
  }
  return md;
}

// The per-feature stability table per trained SAE and per group (empty without per-feature data).
std::string md_per_feature(const StabilityStudy& study) {
  const auto n = static_cast<int64_t>(study.trained_labels.size());
  std::string md;
  if (study.per_feature_dec.empty()) return md;
  md +=
      "\n## Per-feature stability (decoder)\n\nFor each latent: the mean over the other SAEs of its best "
      "|cos|. `within NN` is the mean over the SAE's atoms of the best |cos| with another atom of the same "
      "SAE: a reference line for how alike a dictionary's own atoms are.\n\n"
      "| SAE | mean | median | q10 | q90 | within NN |cos| |\n|---|---|---|---|---|---|\n";
  for (int64_t i = 0; i < n; ++i) {
    const Quantiles q = describe(study.per_feature_dec[static_cast<size_t>(i)]);
    const double nn = static_cast<size_t>(i) < study.within_nn_cos.size()
                          ? study.within_nn_cos[static_cast<size_t>(i)]
                          : std::nan("");
    md += fmt::format("| {} | {} | {} | {} | {} | {} |\n", i, fmt_num(q.mean), fmt_num(q.median),
                      fmt_num(q.q10), fmt_num(q.q90), fmt_num(nn));
  }
  for (size_t k = 0; k < study.groups.size(); ++k) {
    std::vector<double> all;
    for (const auto& v : study.group_per_feature_dec[k]) all.insert(all.end(), v.begin(), v.end());
    const Quantiles q = describe(all);
    md += fmt::format("| {} (all) | {} | {} | {} | {} | |\n", study.groups[k].name, fmt_num(q.mean),
                      fmt_num(q.median), fmt_num(q.q10), fmt_num(q.q90));
  }
  md += fmt::format(
      "\nThe {} most and least stable latents of each SAE are in `stability.json` under "
      "`per_feature`; every latent is in `per_feature.csv`.\n",
      kListedLatents);
  return md;
}

// The reference comparison (Mann-Whitney U and Cohen's d), kept for comparison only.
std::string md_reference(const StabilityStudy& study) {
  std::string md =
      "\n## Reference comparison (not used for any decision)\n\nMann-Whitney U on pairwise values (pairs "
      "share seeds, so they are not independent) and Cohen's d of per-seed mean similarities (descriptive), "
      "kept for comparison with the reference project.\n\n| metric | group | d (seed level) | U (p) |\n"
      "|---|---|---|---|\n";
  for (const std::string& metric : tested_metrics()) {
    for (const GroupComparison& c : study.metric(metric).comparisons) {
      md +=
          fmt::format("| `{}` | {} | {} | {} ({}) |\n", metric, c.group, fmt_num(c.effect_size_seed_level, 2),
                      fmt_num(c.reference_mann_whitney.u, 1), fmt_p(c.reference_mann_whitney.p_value));
    }
  }
  return md;
}

std::string markdown(const StabilityStudy& study, const StabilityReportContext& context) {
  std::string md = md_inputs(study, context);
  md += md_groups(study);
  md += md_decisions(study);
  md += md_comparisons(study);
  md += md_trained_pairs(study);
  md += md_per_feature(study);
  md += context.extra_markdown;
  md += md_reference(study);
  if (context.figures) {
    md +=
        "\n## Figures\n\n![pairwise matrix](pairwise_heatmap.png)\n\n![trained vs "
        "groups](trained_vs_nulls.png)\n\n![per-feature stability](per_feature_hist.png)\n";
  }
  return md;
}

std::string csv_escape(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

stats::SimilarityMatrix trained_similarity(const StabilityStudy& study, const std::string& metric) {
  const auto n = static_cast<int64_t>(study.trained_labels.size());
  stats::SimilarityMatrix s;
  s.n = n;
  s.values.assign(static_cast<size_t>(n * n), 0.0);
  for (const StudyPair& r : study.trained_pairs) {
    const double v = pair_metric(r.dec, metric);
    s.values[static_cast<size_t>(r.a * n + r.b)] = v;
    s.values[static_cast<size_t>(r.b * n + r.a)] = v;
  }
  return s;
}

// The path of `name` inside the output folder.
std::string figure_path(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

// Line colours: the trained SAEs first, then one per group (cycling).
const std::vector<std::string>& figure_colours() {
  static const std::vector<std::string> colours = {"#1f77b4", "#7f7f7f", "#ff7f0e", "#2ca02c", "#d62728",
                                                   "#9467bd", "#8c564b", "#e377c2", "#bcbd22"};
  return colours;
}

// Pairwise heatmaps: pwmcc and matched_mean_cos of the trained SAEs.
void write_heatmap_figure(const StabilityStudy& study, const std::string& dir,
                          std::vector<std::string>& written) {
  const auto n = static_cast<int64_t>(study.trained_labels.size());
  std::ostringstream heat;
  for (const auto& [block, metric] :
       std::vector<std::pair<std::string, std::string>>{{"$P", "pwmcc"}, {"$M", "matched_mean_cos"}}) {
    const stats::SimilarityMatrix s = trained_similarity(study, metric);
    heat << block << " << EOD\n";
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        heat << i << " " << j << " " << (i == j ? std::string("NaN") : fmt::format("{:.6f}", s.at(i, j)))
             << "\n";
      }
      heat << "\n";
    }
    heat << "EOD\n";
  }
  heat << "set multiplot layout 1,2 title 'trained SAEs: pairwise similarity (decoder rows)'\n";
  heat << "set xrange [-0.5:" << n - 0.5 << "]\nset yrange [" << n - 0.5 << ":-0.5]\nset size ratio -1\n";
  heat << "set xtics 1\nset ytics 1\nset xlabel 'SAE'\nset ylabel 'SAE'\nset palette rgb 33,13,10\n";
  heat << "set cbrange [0:1]\n";
  const bool labels = n <= 12;
  heat << "set title 'pwmcc'\nplot $P using 1:2:3 with image notitle"
       << (labels ? ", $P using 1:2:(sprintf('%.3f',$3)) with labels font ',8' notitle" : "") << "\n";
  heat << "set title 'matched\\_mean\\_cos (PW-MCC)'\nplot $M using 1:2:3 with image notitle"
       << (labels ? ", $M using 1:2:(sprintf('%.3f',$3)) with labels font ',8' notitle" : "") << "\n";
  heat << "unset multiplot\n";
  render_figure(heat.str(), figure_path(dir, "pairwise_heatmap.png"),
                figure_path(dir, "pairwise_heatmap.svg"), 1100, 550);
  written.insert(written.end(), {"pairwise_heatmap.png", "pairwise_heatmap.svg"});
}

// " estimate lo hi" of one bar with its BCa interval (the estimate stands in for a non-finite bound).
std::string bar_triple(const stats::BootstrapResult& b) {
  const double lo = std::isfinite(b.bca.lo) ? b.bca.lo : b.estimate;
  const double hi = std::isfinite(b.bca.hi) ? b.bca.hi : b.estimate;
  return fmt::format(" {:.6f} {:.6f} {:.6f}", b.estimate, lo, hi);
}

// Trained vs every group: bars with BCa intervals for the decoder metrics.
void write_bars_figure(const StabilityStudy& study, const std::string& dir,
                       std::vector<std::string>& written) {
  const int conf_pct = static_cast<int>(std::lround(study.confidence * 100));
  const std::vector<std::string>& colours = figure_colours();
  std::ostringstream bars;
  const std::vector<std::string> shown = {"pwmcc", "matched_mean_cos", "shared_frac_05", "shared_frac_07",
                                          "shared_frac_09"};
  bars << "$D << EOD\n";
  for (const std::string& metric : shown) {
    const MetricStudy& m = study.metric(metric);
    bars << metric << bar_triple(m.trained);
    for (const GroupComparison& c : m.comparisons) bars << bar_triple(c.group_similarity);
    bars << "\n";
  }
  bars << "EOD\n";
  bars << "set title 'trained SAEs vs comparison groups (mean over seed pairs, " << conf_pct
       << "% seed-bootstrap BCa CI)'\n";
  bars << "set style data histograms\nset style histogram errorbars gap 2 lw 1\nset style fill solid 0.7 "
          "border -1\n";
  bars << "set yrange [0:1.05]\nset grid ytics\nset key top right\nset ylabel 'similarity'\nset xtics "
          "noenhanced\nset key noenhanced\n";
  bars << "plot $D using 2:3:4:xtic(1) title 'trained' lc rgb '" << colours[0] << "'";
  for (size_t k = 0; k < study.groups.size(); ++k) {
    bars << ", '' using " << 5 + 3 * k << ":" << 6 + 3 * k << ":" << 7 + 3 * k << " title '"
         << study.groups[k].name << "' lc rgb '" << colours[(k + 1) % colours.size()] << "'";
  }
  bars << "\n";
  render_figure(bars.str(), figure_path(dir, "trained_vs_nulls.png"),
                figure_path(dir, "trained_vs_nulls.svg"), 1100, 600);
  written.insert(written.end(), {"trained_vs_nulls.png", "trained_vs_nulls.svg"});
}

constexpr int kBins = 50;  // bins of the per-feature stability histogram

// Fraction of the pooled values of `groups` in each of kBins equal bins of [0, 1].
std::vector<double> stability_histogram(const std::vector<std::vector<double>>& groups) {
  std::vector<double> counts(kBins, 0.0);
  double total = 0;
  for (const auto& g : groups) {
    for (const double v : g) {
      const int b = std::clamp(static_cast<int>(v * kBins), 0, kBins - 1);
      counts[static_cast<size_t>(b)] += 1;
      total += 1;
    }
  }
  for (double& c : counts) c = total > 0 ? c / total : 0.0;
  return counts;
}

// Per-feature stability histogram: all trained latents pooled, each group as a reference line.
void write_histogram_figure(const StabilityStudy& study, const std::string& dir,
                            std::vector<std::string>& written) {
  const auto n = static_cast<int64_t>(study.trained_labels.size());
  const std::vector<std::string>& colours = figure_colours();
  std::vector<std::vector<double>> columns = {stability_histogram(study.per_feature_dec)};
  for (const auto& g : study.group_per_feature_dec) columns.push_back(stability_histogram(g));
  std::ostringstream hist;
  hist << "$H << EOD\n";
  for (int b = 0; b < kBins; ++b) {
    hist << fmt::format("{:.4f}", (b + 0.5) / kBins);
    for (const auto& c : columns) hist << fmt::format(" {:.6f}", c[static_cast<size_t>(b)]);
    hist << "\n";
  }
  hist << "EOD\n";
  hist << "set title 'per-feature stability: mean over the other seeds of each latent''s best |cos| "
          "(decoder)'\n";
  hist
      << "set xlabel 'per-feature stability'\nset ylabel 'fraction of latents'\nset xrange [0:1]\nset grid\n";
  hist << "set key noenhanced\nset style fill solid 0.6 border -1\nset boxwidth " << 1.0 / kBins
       << " absolute\n";
  hist << "plot $H using 1:2 with boxes lc rgb '" << colours[0] << "' title 'trained (" << n << " SAEs)'";
  for (size_t k = 0; k < study.groups.size(); ++k) {
    hist << ", '' using 1:" << 3 + k << " with steps lw 2 lc rgb '" << colours[(k + 1) % colours.size()]
         << "' title '" << study.groups[k].name << "'";
  }
  hist << "\n";
  render_figure(hist.str(), figure_path(dir, "per_feature_hist.png"),
                figure_path(dir, "per_feature_hist.svg"), 900, 600);
  written.insert(written.end(), {"per_feature_hist.png", "per_feature_hist.svg"});
}

void write_figures(const StabilityStudy& study, const std::string& dir, std::vector<std::string>& written) {
  write_heatmap_figure(study, dir, written);
  write_bars_figure(study, dir, written);
  write_histogram_figure(study, dir, written);
}

}  // namespace

std::string verdict_text(const GroupComparison& c, double confidence) {
  const int conf_pct = static_cast<int>(std::lround(confidence * 100));
  const std::string detail = fmt::format(
      "difference {:+.4f}, {}% BCa CI {}; two-sided {} permutation p = {}, Holm over {} tests of the {} "
      "family "
      "p = {}",
      c.difference.estimate, conf_pct, ci_text(c.difference.bca),
      c.permutation.exact ? "exact" : "Monte Carlo", fmt_p(c.permutation.p_value_two_sided), c.family_size,
      c.family, fmt_p(c.p_adjusted));
  const std::string what = c.role == GroupRole::Surrogate ? c.group + " control" : c.group + " null";
  switch (c.verdict) {
    case Verdict::Above:
      return fmt::format("above the {} ({})", what, detail);
    case Verdict::Below:
      return fmt::format("below the {} ({})", what, detail);
    case Verdict::Indistinguishable:
      return fmt::format("indistinguishable from the {} ({})", what, detail);
    case Verdict::Undecidable:
      return fmt::format(
          "undecidable against the {} ({}): with these seed counts no data could pass, since the smallest "
          "attainable Holm-adjusted p over the {} tests is {} > alpha {}; more seeds or a smaller family are "
          "needed, and the interval is the result",
          what, detail, c.family_size, fmt_p(c.holm_floor), fmt_p(1.0 - confidence));
    case Verdict::NotTested:
      break;
  }
  return fmt::format("not tested ({})", what);
}

json study_to_json(const StabilityStudy& study) {
  json doc = json::object();
  doc["verdict_rule"] =
      "above/below: two-sided permutation p over seed labels, Holm-adjusted within its family, <= alpha, "
      "with the sign of trained - group; else undecidable when the family's smallest attainable "
      "Holm-adjusted "
      "p (holm_floor) exceeds alpha, else indistinguishable";
  doc["alpha"] = 1.0 - study.confidence;
  doc["tested_metrics"] = tested_metrics();
  doc["summary_metrics"] = study_metrics();
  doc["groups"] = json::array();
  for (const GroupInfo& g : study.groups) {
    doc["groups"].push_back({{"name", g.name},
                             {"role", std::string(group_role_name(g.role))},
                             {"geometry_matched", g.geometry_matched},
                             {"controls_for", g.controls_for},
                             {"dictionaries", g.labels}});
  }
  json families = json::object();
  json summary = json::object();
  json decision = json::object();
  json surrogate = json::object();
  for (const MetricStudy& m : study.metrics) {
    json entry = {{"trained", bootstrap_json(m.trained)},
                  {"nulls", json::object()},
                  {"decision_null", m.decision_null.empty() ? json(nullptr) : json(m.decision_null)}};
    entry["trained"]["n_seeds"] = m.n_seeds;
    entry["trained"]["n_pairs"] = m.n_pairs;
    for (const GroupComparison& c : m.comparisons) {
      if (c.family_size > 0) families[c.family] = c.family_size;
      json cj = comparison_json(c, study.confidence);
      if (c.role == GroupRole::Surrogate) {
        surrogate[m.metric] = cj;
        surrogate[m.metric]["group"] = c.group;
      } else {
        entry["nulls"][c.group] = std::move(cj);
      }
    }
    if (const GroupComparison* d = m.decision(); d != nullptr && d->verdict != Verdict::NotTested) {
      decision[m.metric] = {{"null", m.decision_null},
                            {"verdict", std::string(verdict_name(d->verdict))},
                            {"verdict_text", verdict_text(*d, study.confidence)}};
    }
    summary[m.metric] = std::move(entry);
  }
  doc["holm_families"] = families;
  doc["decision"] = decision;
  doc["surrogate"] = surrogate.empty() ? json(nullptr) : surrogate;
  // Kept for readers of schema 1: the decision null of pwmcc.
  const MetricStudy& pw = study.metric("pwmcc");
  doc["primary_null"] =
      pw.decision_null.empty()
          ? json(nullptr)
          : json({{"name", pw.decision_null},
                  {"reason",
                   "the most conservative geometry-matched null for pwmcc (highest mean similarity)"}});
  doc["summary"] = summary;
  doc["within_nn_cos"] = json::array();
  for (const double v : study.within_nn_cos) doc["within_nn_cos"].push_back(num(v));
  return doc;
}

StabilityStudy study_from_json(const json& doc) {
  if (!doc.contains("schema_version") || doc["schema_version"].get<int>() < kStabilitySchemaVersion ||
      !doc.contains("groups")) {
    throw Error("stability.json was written by an older husai (schema 1): rerun husai compare");
  }
  StabilityStudy s;
  s.confidence = 1.0 - doc.at("alpha").get<double>();
  if (doc.contains("settings")) {
    s.bootstrap = doc["settings"].value("bootstrap", int64_t{0});
    s.seed = doc["settings"].value("seed", uint64_t{0});
  }
  if (doc.contains("inputs")) {
    for (const json& in : doc["inputs"]) s.trained_labels.push_back(in.at("path").get<std::string>());
  }
  for (const json& g : doc.at("groups")) {
    GroupInfo info;
    info.name = g.at("name").get<std::string>();
    info.role = g.at("role").get<std::string>() == "surrogate" ? GroupRole::Surrogate : GroupRole::Null;
    info.geometry_matched = g.at("geometry_matched").get<bool>();
    info.controls_for = g.at("controls_for").get<std::string>();
    info.labels = g.at("dictionaries").get<std::vector<std::string>>();
    s.groups.push_back(std::move(info));
  }
  for (const std::string& metric : study_metrics()) {
    const json& entry = doc.at("summary").at(metric);
    MetricStudy m;
    m.metric = metric;
    m.trained = bootstrap_from(entry.at("trained"), "mean");
    m.n_seeds = entry.at("trained").at("n_seeds").get<int64_t>();
    m.n_pairs = entry.at("trained").at("n_pairs").get<int64_t>();
    m.decision_null = entry.at("decision_null").is_string() ? entry["decision_null"].get<std::string>() : "";
    for (const GroupInfo& g : s.groups) {
      if (g.role == GroupRole::Surrogate) {
        m.comparisons.push_back(comparison_from(g.name, doc.at("surrogate").at(metric)));
      } else {
        m.comparisons.push_back(comparison_from(g.name, entry.at("nulls").at(g.name)));
      }
    }
    s.metrics.push_back(std::move(m));
  }
  if (doc.contains("within_nn_cos")) {
    for (const json& v : doc["within_nn_cos"])
      s.within_nn_cos.push_back(v.is_number() ? v.get<double>() : std::nan(""));
  }
  return s;
}

json write_stability_report(const StabilityStudy& study, const StabilityReportContext& context,
                            const std::string& dir, std::vector<std::string>& written) {
  const auto n = static_cast<int64_t>(study.trained_labels.size());
  json doc = {{"schema_version", kStabilitySchemaVersion},
              {"inputs", context.inputs},
              {"settings", context.settings}};
  doc.update(study_to_json(study));
  doc["pairs"] = json::array();
  for (const StudyPair& r : study.trained_pairs) {
    doc["pairs"].push_back(pair_json(r, study.trained_labels[static_cast<size_t>(r.a)],
                                     study.trained_labels[static_cast<size_t>(r.b)]));
  }
  doc["nulls"] = json::object();
  for (size_t k = 0; k < study.groups.size(); ++k) {
    const GroupInfo& g = study.groups[k];
    json gj = {{"dictionaries", g.labels}, {"pairs", json::array()}, {"cross_pairs", json::array()}};
    for (const StudyPair& r : study.group_pairs[k]) {
      gj["pairs"].push_back(
          pair_json(r, g.labels[static_cast<size_t>(r.a)], g.labels[static_cast<size_t>(r.b)]));
    }
    for (const StudyPair& r : study.cross_pairs[k]) {
      gj["cross_pairs"].push_back(
          pair_json(r, study.trained_labels[static_cast<size_t>(r.a)], g.labels[static_cast<size_t>(r.b)]));
    }
    std::vector<double> all;
    for (const auto& v : study.group_per_feature_dec[k]) all.insert(all.end(), v.begin(), v.end());
    gj["per_feature"] = per_feature_json(all, false);
    doc["nulls"][g.name] = std::move(gj);
  }
  doc["per_feature"] = json::array();
  for (int64_t i = 0; i < n; ++i) {
    doc["per_feature"].push_back(
        {{"sae", i},
         {"path", study.trained_labels[static_cast<size_t>(i)]},
         {"decoder", per_feature_json(study.per_feature_dec[static_cast<size_t>(i)], true)},
         {"encoder", per_feature_json(study.per_feature_enc[static_cast<size_t>(i)], true)}});
  }
  for (const auto& [key, value] : context.extra_sections.items()) doc[key] = value;

  // pairs.csv: every pair of every group.
  std::string pairs_csv = "group,a,b,a_path,b_path";
  for (const std::string& m : pair_metric_names()) pairs_csv += "," + m;
  for (const std::string& m : pair_metric_names()) pairs_csv += "," + m + "_enc";
  pairs_csv += "\n";
  auto csv_rows = [&](const std::string& group, const std::vector<StudyPair>& recs,
                      const std::vector<std::string>& la, const std::vector<std::string>& lb) {
    for (const StudyPair& r : recs) {
      pairs_csv += fmt::format("{},{},{},{},{}", group, r.a, r.b, csv_escape(la[static_cast<size_t>(r.a)]),
                               csv_escape(lb[static_cast<size_t>(r.b)]));
      for (const std::string& m : pair_metric_names())
        pairs_csv += fmt::format(",{:.9g}", pair_metric(r.dec, m));
      for (const std::string& m : pair_metric_names())
        pairs_csv += fmt::format(",{:.9g}", pair_metric(r.enc, m));
      pairs_csv += "\n";
    }
  };
  csv_rows("trained", study.trained_pairs, study.trained_labels, study.trained_labels);
  for (size_t k = 0; k < study.groups.size(); ++k) {
    const GroupInfo& g = study.groups[k];
    const std::string prefix = g.role == GroupRole::Surrogate ? "surrogate:" : "null:";
    csv_rows(prefix + g.name, study.group_pairs[k], g.labels, g.labels);
    csv_rows("cross:" + g.name, study.cross_pairs[k], study.trained_labels, g.labels);
  }
  std::string pf_csv = "sae,path,latent,stability,stability_enc\n";
  for (int64_t i = 0; i < n; ++i) {
    const auto& vd = study.per_feature_dec[static_cast<size_t>(i)];
    const auto& ve = study.per_feature_enc[static_cast<size_t>(i)];
    for (size_t f = 0; f < vd.size(); ++f) {
      pf_csv += fmt::format("{},{},{},{:.9g},{:.9g}\n", i,
                            csv_escape(study.trained_labels[static_cast<size_t>(i)]), f, vd[f], ve[f]);
    }
  }

  if (context.figures) write_figures(study, dir, written);
  auto in_dir = [&](const std::string& name) { return (fs::path(dir) / name).string(); };
  write_file_atomic(in_dir("pairs.csv"), pairs_csv);
  write_file_atomic(in_dir("per_feature.csv"), pf_csv);
  write_file_atomic(in_dir("summary.md"), markdown(study, context));
  write_file_atomic(in_dir("stability.json"), doc.dump(2) + "\n");
  written.insert(written.end(), {"pairs.csv", "per_feature.csv", "summary.md", "stability.json"});
  return doc;
}

json convergence_to_json(const StabilityConvergence& c) {
  json points = json::array();
  for (const ConvergencePoint& p : c.points) {
    points.push_back({{"step", p.step},
                      {"fraction", p.fraction},
                      {"pwmcc", num(p.pwmcc.estimate)},
                      {"pwmcc_ci_bca", interval_json(p.pwmcc.bca)},
                      {"matched_mean_cos", num(p.matched_mean_cos.estimate)},
                      {"matched_mean_cos_ci_bca", interval_json(p.matched_mean_cos.bca)}});
  }
  return {{"points", points},
          {"last_change",
           {{"metric", "pwmcc"},
            {"estimate", num(c.last_change.estimate)},
            {"ci_bca", interval_json(c.last_change.bca)},
            {"confidence", c.last_change.confidence}}},
          {"margin", c.margin},
          {"plateaued", c.plateaued},
          {"rule",
           "plateaued when the BCa interval of pwmcc(last) - pwmcc(previous checkpoint), paired over seed "
           "pairs, lies inside [-margin, margin]"}};
}

}  // namespace husai
