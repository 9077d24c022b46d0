#include "husai/experiments/feature_types.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include <fmt/format.h>

#include "husai/core/error.hpp"
#include "husai/experiments/study.hpp"
#include "husai/metrics/feature_labels.hpp"
#include "husai/metrics/fourier.hpp"
#include "husai/metrics/sae_eval.hpp"
#include "husai/metrics/statistics.hpp"
#include "husai/model/model_io.hpp"
#include "husai/model/params.hpp"

namespace husai {

namespace {

using nlohmann::json;

constexpr double kReproducedQuantile = 0.99;
constexpr int64_t kFrequencyBins = 10;

json num(double x) {
  return std::isfinite(x) ? json(x) : json(nullptr);
}

// Key frequencies from the activations alone: the n_key frequencies whose own component (6 columns of the
// Fourier design) explains most variance (ties: lower frequency).
std::vector<int64_t> activation_key_frequencies(const ActivationFile& acts, const AnswerRows& rows,
                                                int64_t n_key) {
  std::vector<std::pair<double, int64_t>> v;
  for (int64_t f = 1; f <= (rows.modulus - 1) / 2; ++f) {
    const FourierSubspace s =
        fourier_subspace(acts.x.data(), acts.n_rows, acts.d_in, rows.a, rows.b, rows.c, rows.modulus, {f});
    v.emplace_back(-s.all.variance, f);
  }
  std::sort(v.begin(), v.end());
  std::vector<int64_t> keys;
  for (int64_t i = 0; i < std::min<int64_t>(n_key, static_cast<int64_t>(v.size())); ++i)
    keys.push_back(v[static_cast<size_t>(i)].second);
  return keys;
}

json summaries_json(const std::vector<GroupSummary>& g, const std::vector<std::string>& names) {
  json out = json::array();
  for (const GroupSummary& s : g) {
    out.push_back({{"group", names.empty() ? json(s.group) : json(names[static_cast<size_t>(s.group)])},
                   {"count", s.count},
                   {"mean_stability", num(s.mean)},
                   {"median_stability", num(s.median)}});
  }
  return out;
}

// The names of the feature labels, in FeatureLabel order.
const std::vector<std::string>& label_names() {
  static const std::vector<std::string> names = {"centroid", "fourier", "other"};
  return names;
}

// The key frequencies and a sentence saying where they came from.
struct KeyFrequencies {
  std::vector<int64_t> keys;
  std::string source;
};

// Key frequencies by the transformer's embedding power when a model folder is given, else by the activations.
KeyFrequencies choose_key_frequencies(const ActivationFile& acts, const AnswerRows& rows,
                                      const std::string& model_dir, int64_t n_key_frequencies) {
  const int64_t p = rows.modulus;
  KeyFrequencies k;
  if (!model_dir.empty()) {
    const LoadedModel model = load_model_dir(model_dir);
    const ParamViews<float> pv = make_views(model.cfg, model.layout, const_cast<float*>(model.params.data()));
    k.keys = key_frequencies(embedding_frequency_power(pv.W_E, p, model.cfg.d_model), n_key_frequencies);
    k.source = "largest embedding power of the transformer's W_E (Nanda et al. 2023)";
  } else {
    k.keys = activation_key_frequencies(acts, rows, n_key_frequencies);
    k.source = "largest activation variance explained per frequency (no transformer given)";
  }
  return k;
}

// The reproduced threshold from the decision null of pwmcc (the per-feature stability is decoder pwmcc's).
double reproduced_threshold(const StabilityStudy& study, const std::string& decision) {
  double threshold = std::nan("");
  for (size_t k = 0; k < study.groups.size(); ++k) {
    if (study.groups[k].name != decision) continue;
    std::vector<double> all;
    for (const auto& v : study.group_per_feature_dec[k]) all.insert(all.end(), v.begin(), v.end());
    threshold = stats::quantile(all, kReproducedQuantile);
  }
  return threshold;
}

// What the pass over the SAEs collects: one JSON row per SAE and the pooled inputs of the summary tables.
// clang-tidy cannot prove that nlohmann::json's moves never throw (as in io/config.hpp).
// NOLINTNEXTLINE(bugprone-exception-escape)
struct PerSaePass {
  json per_sae = json::array();
  std::vector<double> pooled_stability;
  std::vector<int64_t> pooled_label;
  std::vector<double> pooled_frequency_bin_stability = std::vector<double>(kFrequencyBins, 0.0);
  std::vector<int64_t> pooled_frequency_bin_count = std::vector<int64_t>(kFrequencyBins, 0);
  std::vector<FeatureSet> deduplicated;
};

// Labels each SAE's decoder atoms, breaks its stability down by label and frequency decile, deduplicates it.
PerSaePass collect_per_sae(const std::vector<SaeModel>& saes, const StabilityStudy& study,
                           const ActivationFile& acts, const FeatureSet& centroids,
                           const FourierSubspace& subspace) {
  const auto n = static_cast<int64_t>(saes.size());
  PerSaePass pass;
  for (int64_t i = 0; i < n; ++i) {
    const SaeModel& sae = saes[static_cast<size_t>(i)];
    const FeatureSet dec = decoder_features(sae);
    const FeatureLabels labels = label_features(dec, centroids, subspace.all);
    const std::vector<double>& stab = study.per_feature_dec[static_cast<size_t>(i)];
    std::vector<int64_t> group(labels.label.size());
    for (size_t f = 0; f < group.size(); ++f) group[f] = static_cast<int64_t>(labels.label[f]);
    const std::vector<double> freq =
        sae_reconstruction_metrics(sae, acts.x.data(), acts.n_rows).feature_density();
    const std::vector<GroupSummary> by_label = stability_by_group(stab, group, 3);
    const std::vector<GroupSummary> by_freq = stability_by_frequency_bin(stab, freq, kFrequencyBins);
    for (const GroupSummary& g : by_freq) {
      if (g.count > 0) {
        pass.pooled_frequency_bin_stability[static_cast<size_t>(g.group)] +=
            g.mean * static_cast<double>(g.count);
        pass.pooled_frequency_bin_count[static_cast<size_t>(g.group)] += g.count;
      }
    }
    std::set<int64_t> covered;
    for (size_t f = 0; f < labels.label.size(); ++f) {
      if (labels.label[f] == FeatureLabel::Centroid) covered.insert(labels.centroid_index[f]);
    }
    const std::vector<int64_t> kept = deduplicate_features(dec);
    pass.deduplicated.push_back(select_features(dec, kept));
    pass.per_sae.push_back({{"sae", i},
                            {"label_counts", labels.counts()},
                            {"centroids_covered", static_cast<int64_t>(covered.size())},
                            {"stability_by_label", summaries_json(by_label, label_names())},
                            {"stability_by_frequency_decile", summaries_json(by_freq, {})},
                            {"duplicate_fraction", duplicate_fraction(dec)},
                            {"kept_after_dedup", static_cast<int64_t>(kept.size())}});
    pass.pooled_stability.insert(pass.pooled_stability.end(), stab.begin(), stab.end());
    pass.pooled_label.insert(pass.pooled_label.end(), group.begin(), group.end());
  }
  return pass;
}

// pwmcc between the deduplicated dictionaries, mean over pairs.
double deduplicated_pwmcc(const std::vector<FeatureSet>& deduplicated, int64_t n) {
  double dedup_sum = 0;
  const std::vector<std::pair<int64_t, int64_t>> tp = upper_pairs(n);
  std::vector<const FeatureSet*> sets;
  sets.reserve(deduplicated.size());
  for (const FeatureSet& f : deduplicated) sets.push_back(&f);
  for (const PairStability& r : pair_stabilities(sets, tp)) dedup_sum += r.pwmcc;
  return dedup_sum / static_cast<double>(tp.size());
}

// The markdown section's heading and the paragraph that defines the labels and the threshold.
std::string intro_markdown(int64_t p, const KeyFrequencies& key, double threshold,
                           const std::string& decision) {
  std::string md = "\n## Feature types (ground truth for modular addition)\n\n";
  md += fmt::format(
      "Decoder atoms labelled `centroid` (|cos| > 0.8 with one of the {} answer-centroid directions), else "
      "`fourier` (norm of the projection onto the key-frequency subspace >= 0.8; key frequencies {}: {}), "
      "else `other`. A latent counts as *reproduced* when its per-feature stability exceeds {}, the 99th "
      "percentile of the per-feature stability of the decision null (`{}`).\n\n",
      p, fmt::format("{}", fmt::join(key.keys, ", ")), key.source, fmt_num(threshold), decision);
  return md;
}

// The pooled by-label table: its JSON rows and markdown rows, and which kinds are mostly reproduced.
// clang-tidy cannot prove that nlohmann::json's moves never throw (as in io/config.hpp).
// NOLINTNEXTLINE(bugprone-exception-escape)
struct LabelTable {
  json rows = json::array();
  std::string markdown;
  std::vector<std::string> reproduced_kinds, not_reproduced_kinds;
};

// Stability and the fraction reproduced per label, over the latents of all SAEs.
LabelTable pooled_label_table(const PerSaePass& pass, double threshold) {
  const std::vector<double>& pooled_stability = pass.pooled_stability;
  const std::vector<int64_t>& pooled_label = pass.pooled_label;
  LabelTable t;
  t.markdown =
      "| label | latents (all SAEs) | mean stability | median | reproduced |\n|---|---|---|---|---|\n";
  const std::vector<GroupSummary> pooled = stability_by_group(pooled_stability, pooled_label, 3);
  for (const GroupSummary& g : pooled) {
    int64_t above = 0;
    for (size_t f = 0; f < pooled_stability.size(); ++f) {
      if (pooled_label[f] == g.group && pooled_stability[f] > threshold) ++above;
    }
    const double frac =
        g.count > 0 ? static_cast<double>(above) / static_cast<double>(g.count) : std::nan("");
    t.rows.push_back({{"label", label_names()[static_cast<size_t>(g.group)]},
                      {"count", g.count},
                      {"mean_stability", num(g.mean)},
                      {"median_stability", num(g.median)},
                      {"frac_reproduced", num(frac)}});
    t.markdown += fmt::format("| {} | {} | {} | {} | {} |\n", label_names()[static_cast<size_t>(g.group)],
                              g.count, fmt_num(g.mean), fmt_num(g.median),
                              std::isnan(frac) ? "n/a" : fmt::format("{:.1f}%", 100 * frac));
    if (g.count > 0)
      (frac > 0.5 ? t.reproduced_kinds : t.not_reproduced_kinds)
          .push_back(label_names()[static_cast<size_t>(g.group)]);
  }
  return t;
}

// The per-SAE table: label counts, centroids covered, duplicates and what deduplication keeps.
std::string per_sae_markdown(const json& per_sae, int64_t p) {
  std::string md =
      "\n| SAE | centroid / fourier / other | centroids covered | duplicates (|cos| > 0.9) | kept after "
      "dedup |\n"
      "|---|---|---|---|---|\n";
  for (const json& s : per_sae) {
    const auto counts = s["label_counts"].get<std::vector<int64_t>>();
    md += fmt::format("| {} | {} / {} / {} | {} of {} | {:.1f}% | {} |\n", s["sae"].get<int64_t>(), counts[0],
                      counts[1], counts[2], s["centroids_covered"].get<int64_t>(), p,
                      100 * s["duplicate_fraction"].get<double>(), s["kept_after_dedup"].get<int64_t>());
  }
  return md;
}

// Mean per-feature stability per firing-frequency decile, pooled over the SAEs: JSON rows and a sentence.
// clang-tidy cannot prove that nlohmann::json's moves never throw (as in io/config.hpp).
// NOLINTNEXTLINE(bugprone-exception-escape)
struct DecileSummary {
  json rows = json::array();
  std::string markdown;
};

// The pooled mean stability of each firing-frequency decile (decile 1 = rarest).
DecileSummary frequency_deciles(const PerSaePass& pass) {
  DecileSummary d;
  d.markdown = "\nMean per-feature stability by firing-frequency decile (all SAEs; decile 1 = rarest):";
  for (int64_t b = 0; b < kFrequencyBins; ++b) {
    const int64_t count = pass.pooled_frequency_bin_count[static_cast<size_t>(b)];
    const double mean =
        count > 0 ? pass.pooled_frequency_bin_stability[static_cast<size_t>(b)] / static_cast<double>(count)
                  : std::nan("");
    d.rows.push_back({{"decile", b + 1}, {"count", count}, {"mean_stability", num(mean)}});
    d.markdown += fmt::format(" {}", fmt_num(mean, 3));
  }
  d.markdown += ".\n";
  return d;
}

// Which kinds are mostly reproduced and which mostly not, in words.
std::string reproducibility_verdict(const LabelTable& labels) {
  std::string verdict = labels.reproduced_kinds.empty()
                            ? "no kind of feature is mostly reproduced"
                            : fmt::format("mostly reproduced: {}", fmt::join(labels.reproduced_kinds, ", "));
  if (!labels.not_reproduced_kinds.empty())
    verdict += fmt::format("; mostly not: {}", fmt::join(labels.not_reproduced_kinds, ", "));
  return verdict;
}

}  // namespace

FeatureTypeReport feature_type_breakdown(const std::vector<SaeModel>& saes, const StabilityStudy& study,
                                         const ActivationFile& acts, const std::string& model_dir,
                                         int64_t n_key_frequencies) {
  const auto n = static_cast<int64_t>(saes.size());
  if (study.per_feature_dec.size() != saes.size()) throw Error("feature types need the study of these SAEs");
  const AnswerRows rows = load_answer_rows(acts.path, acts.n_rows);
  const int64_t p = rows.modulus;
  const FeatureSet centroids = answer_centroid_directions(acts.x.data(), acts.n_rows, acts.d_in, rows.c, p);
  const KeyFrequencies key = choose_key_frequencies(acts, rows, model_dir, n_key_frequencies);
  const FourierSubspace subspace =
      fourier_subspace(acts.x.data(), acts.n_rows, acts.d_in, rows.a, rows.b, rows.c, p, key.keys);

  const std::string decision = study.metric("pwmcc").decision_null;
  const double threshold = reproduced_threshold(study, decision);

  const PerSaePass pass = collect_per_sae(saes, study, acts, centroids, subspace);
  const double dedup_pwmcc = deduplicated_pwmcc(pass.deduplicated, n);

  std::string md = intro_markdown(p, key, threshold, decision);
  const LabelTable labels = pooled_label_table(pass, threshold);
  md += labels.markdown;
  md += per_sae_markdown(pass.per_sae, p);
  const double raw_pwmcc = study.metric("pwmcc").trained.estimate;
  md += fmt::format("\npwmcc after removing within-SAE duplicates: {} (all atoms: {}).\n",
                    fmt_num(dedup_pwmcc), fmt_num(raw_pwmcc));
  const DecileSummary deciles = frequency_deciles(pass);
  md += deciles.markdown;
  const std::string verdict = reproducibility_verdict(labels);
  md += fmt::format(
      "\n**Which kinds are reproducible:** {} (a kind counts when more than half of its latents "
      "pass the null threshold). This describes; it is not a test.\n",
      verdict);

  FeatureTypeReport r;
  r.section = {{"modulus", p},
               {"key_frequencies", key.keys},
               {"key_frequency_source", key.source},
               {"centroid_threshold", FeatureLabelOptions{}.centroid_threshold},
               {"fourier_threshold", FeatureLabelOptions{}.fourier_threshold},
               {"duplicate_threshold", kDuplicateThreshold},
               {"reproduced_threshold", num(threshold)},
               {"reproduced_threshold_rule", "99th percentile of the decision null's per-feature stability"},
               {"decision_null", decision},
               {"by_label", labels.rows},
               {"by_frequency_decile", deciles.rows},
               {"pwmcc_deduplicated", num(dedup_pwmcc)},
               {"per_sae", pass.per_sae},
               {"verdict", verdict}};
  r.markdown = md;
  return r;
}

}  // namespace husai
