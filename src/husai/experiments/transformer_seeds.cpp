// transformer-seeds: how much of SAE stability is specific to one trained transformer?
//
// Every other experiment varies only the SAE seed on one transformer. Here N transformers of the same config
// (differing only in `transformer.training.seed`: initialisation, train/held-out split and data order) are
// trained, TopK SAEs are trained on several seeds on each one's answer-position activations, and SAEs are
// compared by what their latents do on the same inputs (metrics/activation_similarity.hpp): every transformer
// sees the same p^2 pairs in the same row order, so latent activations are comparable across transformers
// even though the residual bases are not (decoder cosines across transformers would mean nothing).
// Within-transformer pairs (same transformer, different SAE seeds) against across-transformer pairs
// (different transformers, any seeds): similarity that survives across transformers is about the task's
// computation, the rest is specific to one trained model. The difference gets a bootstrap interval that
// resamples transformers (the unit of replication for this question) and SAE seeds.

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>

#include <fmt/format.h>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"
#include "husai/experiments/catalog.hpp"
#include "husai/experiments/study.hpp"
#include "husai/io/activations.hpp"
#include "husai/io/json_file.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/metrics/activation_similarity.hpp"
#include "husai/metrics/stability.hpp"
#include "husai/train/sae_run.hpp"
#include "husai/train/transformer_config.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

constexpr const char* kMetrics[] = {"act_pwmcc", "act_matched_mean_corr"};

// Below this many distinct bootstrap resamples (multisets of transformers and seeds) the percentile interval
// is a few points, not an interval: no verdict is drawn from it. 2 transformers give 1 distinct transformer
// multiset (both must appear), so 2 x S always ends here; 3 x 3 gives 7 x 7 = 49.
constexpr size_t kMinDistinctResamples = 20;

void check_distinct(const Config& c, const std::string& key, size_t min_size, const std::string& what) {
  const auto v = c.get_int_list(key);
  if (v.size() < min_size)
    c.fail(fmt::format("transformer-seeds needs at least {} {}", min_size, what), {key});
  if (std::set<int64_t>(v.begin(), v.end()).size() != v.size())
    c.fail(key + " must not repeat a seed", {key});
}

ConfigSchema transformer_seeds_schema() {
  ConfigSchema s;
  add_transformer_section(s);
  add_extract_section(s);
  add_sae_section(s);
  s.add_bool("experiment.allow_ungrokked", false,
             "study transformers that have not generalised (each is flagged in the results)");
  s.add_int_list("transformer_seeds.transformer_seeds", nlohmann::json::array({0, 1, 2}),
                 "transformer.training.seed of each transformer (replaces that key)")
      .min(0);
  s.add_int_list("transformer_seeds.seeds", nlohmann::json::array({42, 123, 456}),
                 "SAE seeds (on every transformer)")
      .min(0);
  s.add_int("transformer_seeds.d_sae", 1024, "latents").min(1);
  s.add_int("transformer_seeds.k", 32, "TopK active latents per row").min(1);
  s.add_int("transformer_seeds.bootstrap", 10000, "bootstrap resamples (transformers and SAE seeds)")
      .min(100);
  s.add_float("transformer_seeds.confidence", 0.95, "confidence level of every interval")
      .greater_than(0)
      .less_than(1);
  s.add_int("transformer_seeds.seed", 0, "seed of the bootstrap draws and of the row shuffle (chance level)")
      .min(0);
  s.add_enum("transformer_seeds.metric", "act_pwmcc", {"act_pwmcc", "act_matched_mean_corr"},
             "activation similarity the summary leads with (both are reported)");
  s.add_check([](const Config& c) {
    check_distinct(c, "transformer_seeds.transformer_seeds", 2, "transformer seeds");
    check_distinct(c, "transformer_seeds.seeds", 2, "SAE seeds");
  });
  return s;
}

std::string seed_dir(const std::string& sae_run, int64_t seed) {
  return SaeRunLayout(sae_run).seed_dir(seed);
}

// One transformer: train or reuse it (refusing one that did not generalise unless allow_ungrokked), extract
// its activations, train the SAEs, and their decoder similarity within this transformer (for reference).
nlohmann::json run_transformer(ExperimentContext& ctx, int64_t transformer_seed) {
  const Config& c = ctx.config();
  Config tcfg = sub_config(c, "transformer", transformer_config_schema());
  tcfg.set("training.seed", transformer_seed, "transformer_seeds.transformer_seeds");
  tcfg.validate();
  ctx.log(fmt::format("transformer seed {}", transformer_seed));
  const std::string tdir = ctx.transformer(tcfg);
  const nlohmann::json m = read_json_file((fs::path(tdir) / "metrics.json").string());
  const double val_acc = m.at("val_acc").get<double>();
  const bool grokked = val_acc >= 0.99;
  if (!grokked) {
    const std::string what = fmt::format(
        "the transformer with seed {} reached held-out accuracy {:.4f} < 0.99: it has not generalised, so "
        "its "
        "SAE features would describe memorisation",
        transformer_seed, val_acc);
    if (!c.get_bool("experiment.allow_ungrokked"))
      throw Error(what + " (set experiment.allow_ungrokked=true to study it anyway)");
    ctx.log("warning: " + what);
  }
  const std::string acts = ctx.activations(tdir, extract_spec_from(c));
  const auto seeds = c.get_int_list("transformer_seeds.seeds");
  SaeSettings settings;
  settings.architecture = "topk";
  settings.k = c.get_int("transformer_seeds.k");
  settings.d_sae = c.get_int("transformer_seeds.d_sae");
  settings.seeds = seeds;
  const std::string sae_run = ctx.sae_run(sae_config_with(c, settings), acts);
  std::vector<FeatureSet> dec;
  dec.reserve(seeds.size());
  for (const int64_t s : seeds) dec.push_back(decoder_features(load_sae(seed_dir(sae_run, s))));
  std::vector<const FeatureSet*> ptrs;
  ptrs.reserve(dec.size());
  for (const FeatureSet& f : dec) ptrs.push_back(&f);
  const auto order = upper_pairs(static_cast<int64_t>(seeds.size()));
  const std::vector<PairStability> ps = pair_stabilities(ptrs, order);
  nlohmann::json dec_pairs = nlohmann::json::array();
  double pw = 0, mm = 0;
  for (size_t p = 0; p < ps.size(); ++p) {
    dec_pairs.push_back({{"seed_a", seeds[static_cast<size_t>(order[p].first)]},
                         {"seed_b", seeds[static_cast<size_t>(order[p].second)]},
                         {"pwmcc", ps[p].pwmcc},
                         {"matched_mean_cos", ps[p].matched_mean_cos}});
    pw += ps[p].pwmcc;
    mm += ps[p].matched_mean_cos;
  }
  const auto np = static_cast<double>(ps.size());
  return {{"transformer_seed", transformer_seed},
          {"transformer",
           {{"dir", tdir},
            {"val_acc", m.at("val_acc")},
            {"train_acc", m.at("train_acc")},
            {"grok_epoch", m.at("grok_epoch")},
            {"epochs", m.at("epochs")},
            {"grokked", grokked}}},
          {"activations", acts},
          {"sae_run", sae_run},
          {"sae_metrics", sae_run_metrics(sae_run, seeds)},
          {"decoder_within",
           {{"pairs", dec_pairs}, {"mean_pwmcc", pw / np}, {"mean_matched_mean_cos", mm / np}}}};
}

// The input pairs (a, b) of an activation file, to prove that row n is the same input in every file.
std::pair<std::vector<int64_t>, std::vector<int64_t>> input_pairs(const std::string& path) {
  const SafetensorsFile f = SafetensorsFile::load(path);
  return {f.get("a").to_i64(), f.get("b").to_i64()};
}

nlohmann::json similarity_json(const ActivationPairSimilarity& s) {
  return {{"act_pwmcc", s.act_pwmcc},
          {"act_pwmcc_ab", s.act_pwmcc_ab},
          {"act_pwmcc_ba", s.act_pwmcc_ba},
          {"act_matched_mean_corr", s.act_matched_mean_corr},
          {"act_shared_frac_05", s.act_shared_frac[0]},
          {"act_shared_frac_07", s.act_shared_frac[1]},
          {"act_shared_frac_09", s.act_shared_frac[2]}};
}

// Latent activations of every SAE on its own transformer's activations (all p^2 rows), every pair's
// activation similarity, and a chance level per transformer pair (first SAE seed of each, one side's rows
// shuffled so that row n no longer is the same input).
nlohmann::json run_similarity(ExperimentContext& ctx, const std::vector<nlohmann::json>& transformers) {
  const Config& c = ctx.config();
  const auto seeds = c.get_int_list("transformer_seeds.seeds");
  const auto nS = static_cast<int64_t>(seeds.size());
  const auto nT = static_cast<int64_t>(transformers.size());
  const auto ref_pairs = input_pairs(transformers[0]["activations"].get<std::string>());
  std::vector<LatentActivations> latents;
  nlohmann::json saes = nlohmann::json::array();
  for (int64_t t = 0; t < nT; ++t) {
    const std::string acts_path = transformers[static_cast<size_t>(t)]["activations"].get<std::string>();
    if (input_pairs(acts_path) != ref_pairs) {
      throw Error(acts_path + ": its rows are not the same inputs in the same order as " +
                  transformers[0]["activations"].get<std::string>() +
                  " (activation-based matching needs every transformer on the same rows)");
    }
    const ActivationFile x = load_activation_file(acts_path, "activations");
    for (const int64_t s : seeds) {
      const std::string dir = seed_dir(transformers[static_cast<size_t>(t)]["sae_run"].get<std::string>(), s);
      latents.push_back(sae_latent_activations(load_sae(dir), x.x.data(), x.n_rows));
      saes.push_back({{"transformer_seed", transformers[static_cast<size_t>(t)]["transformer_seed"]},
                      {"sae_seed", s},
                      {"rows", x.n_rows},
                      {"zero_variance_latents", latents.back().n_zero_variance()}});
    }
  }
  ctx.log(fmt::format("activation similarity of {} SAE pairs over {} rows",
                      latents.size() * (latents.size() - 1) / 2, latents[0].n_rows));
  std::vector<const LatentActivations*> ptrs;
  ptrs.reserve(latents.size());
  for (const auto& l : latents) ptrs.push_back(&l);
  const auto order = upper_pairs(static_cast<int64_t>(latents.size()));
  const std::vector<ActivationPairSimilarity> sims = activation_pair_similarities(ptrs, order);
  nlohmann::json pairs = nlohmann::json::array();
  for (size_t p = 0; p < order.size(); ++p) {
    const auto [i, j] = order[p];
    nlohmann::json row = {{"a", i},
                          {"b", j},
                          {"transformer_a", saes[static_cast<size_t>(i)]["transformer_seed"]},
                          {"sae_seed_a", saes[static_cast<size_t>(i)]["sae_seed"]},
                          {"transformer_b", saes[static_cast<size_t>(j)]["transformer_seed"]},
                          {"sae_seed_b", saes[static_cast<size_t>(j)]["sae_seed"]},
                          {"kind", i / nS == j / nS ? "within" : "across"}};
    row.update(similarity_json(sims[p]));
    pairs.push_back(row);
  }
  // Chance level: the same comparison with the rows of b shuffled (one fixed permutation).
  const std::vector<int64_t> shuffle =
      permutation(latents[0].n_rows, static_cast<uint64_t>(c.get_int("transformer_seeds.seed")),
                  stream_id("transformer-seeds-chance"));
  std::vector<LatentActivations> shuffled;
  std::vector<std::pair<int64_t, int64_t>> chance_order;
  std::vector<const LatentActivations*> chance_ptrs;
  for (int64_t t = 0; t < nT; ++t)
    shuffled.push_back(permute_rows(latents[static_cast<size_t>(t * nS)], shuffle));
  for (int64_t t = 0; t < nT; ++t) chance_ptrs.push_back(&latents[static_cast<size_t>(t * nS)]);
  for (int64_t t = 0; t < nT; ++t) chance_ptrs.push_back(&shuffled[static_cast<size_t>(t)]);
  for (int64_t t = 0; t < nT; ++t)
    for (int64_t u = t + 1; u < nT; ++u) chance_order.emplace_back(t, nT + u);
  const std::vector<ActivationPairSimilarity> chance =
      activation_pair_similarities(chance_ptrs, chance_order);
  nlohmann::json chance_pairs = nlohmann::json::array();
  for (size_t p = 0; p < chance_order.size(); ++p) {
    nlohmann::json row = {
        {"transformer_a", transformers[static_cast<size_t>(chance_order[p].first)]["transformer_seed"]},
        {"transformer_b", transformers[static_cast<size_t>(chance_order[p].second - nT)]["transformer_seed"]},
        {"sae_seed", seeds[0]}};
    row.update(similarity_json(chance[p]));
    chance_pairs.push_back(row);
  }
  return {{"saes", saes}, {"pairs", pairs}, {"chance_pairs", chance_pairs}};
}

struct WithinAcross {
  double within = 0, across = 0;
};

// Mean within-transformer and across-transformer similarity of the SAEs (t, s) for the drawn transformer and
// seed indices (with repetition). sim[i * M + j] for SAE indices i = t * nS + s. A within pair needs two
// different seeds, an across pair two different transformers (a repeated draw is not a pair with itself).
WithinAcross within_across(const std::vector<double>& sim, int64_t M, int64_t nS,
                           const std::vector<int64_t>& ts, const std::vector<int64_t>& ss) {
  double w = 0, a = 0;
  int64_t nw = 0, na = 0;
  for (size_t x = 0; x < ts.size(); ++x) {
    for (size_t p = 0; p < ss.size(); ++p) {
      for (size_t q = p + 1; q < ss.size(); ++q) {
        if (ss[p] == ss[q]) continue;
        w += sim[static_cast<size_t>((ts[x] * nS + ss[p]) * M + ts[x] * nS + ss[q])];
        ++nw;
      }
    }
    for (size_t y = x + 1; y < ts.size(); ++y) {
      if (ts[x] == ts[y]) continue;
      for (const int64_t sp : ss) {
        for (const int64_t sq : ss) {
          a += sim[static_cast<size_t>((ts[x] * nS + sp) * M + ts[y] * nS + sq)];
          ++na;
        }
      }
    }
  }
  return {w / static_cast<double>(nw), a / static_cast<double>(na)};
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  // Linear interpolation between order statistics (NumPy's default "linear" method).
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

// Within vs across for one metric, with a two-level bootstrap: each resample redraws the transformers and
// the SAE seeds with replacement (redrawn when fewer than two distinct transformers or seeds come up).
nlohmann::json compare_within_across(const Config& c, const nlohmann::json& sim_result,
                                     const std::string& metric, int64_t nT, int64_t nS, double chance) {
  const int64_t M = nT * nS;
  std::vector<double> sim(static_cast<size_t>(M * M), 0.0);
  for (const auto& p : sim_result["pairs"]) {
    const auto i = p["a"].get<int64_t>(), j = p["b"].get<int64_t>();
    sim[static_cast<size_t>(i * M + j)] = sim[static_cast<size_t>(j * M + i)] = p[metric].get<double>();
  }
  std::vector<int64_t> all_t(static_cast<size_t>(nT)), all_s(static_cast<size_t>(nS));
  for (int64_t t = 0; t < nT; ++t) all_t[static_cast<size_t>(t)] = t;
  for (int64_t s = 0; s < nS; ++s) all_s[static_cast<size_t>(s)] = s;
  const WithinAcross point = within_across(sim, M, nS, all_t, all_s);
  const Philox rng(static_cast<uint64_t>(c.get_int("transformer_seeds.seed")),
                   stream_id("transformer-seeds-bootstrap"));
  uint64_t draw = 0;
  const int64_t B = c.get_int("transformer_seeds.bootstrap");
  std::vector<double> bw, ba, bd, br;
  std::vector<int64_t> ts(static_cast<size_t>(nT)), ss(static_cast<size_t>(nS));
  int64_t redrawn = 0;
  std::set<std::vector<int64_t>> distinct;
  for (int64_t b = 0; b < B; ++b) {
    while (true) {
      for (int64_t& t : ts) t = static_cast<int64_t>(rng.below(draw++, static_cast<uint64_t>(nT)));
      for (int64_t& s : ss) s = static_cast<int64_t>(rng.below(draw++, static_cast<uint64_t>(nS)));
      if (std::set<int64_t>(ts.begin(), ts.end()).size() >= 2 &&
          std::set<int64_t>(ss.begin(), ss.end()).size() >= 2)
        break;
      ++redrawn;
    }
    std::vector<int64_t> key = ts;
    std::sort(key.begin(), key.end());
    key.push_back(-1);
    const size_t seeds_at = key.size();
    key.insert(key.end(), ss.begin(), ss.end());
    std::sort(key.begin() + static_cast<std::ptrdiff_t>(seeds_at), key.end());
    distinct.insert(key);
    const WithinAcross r = within_across(sim, M, nS, ts, ss);
    bw.push_back(r.within);
    ba.push_back(r.across);
    bd.push_back(r.within - r.across);
    br.push_back(r.across / r.within);
  }
  const double alpha = 1 - c.get_double("transformer_seeds.confidence");
  const auto ci = [&](const std::vector<double>& v) {
    return nlohmann::json::array({percentile(v, alpha / 2), percentile(v, 1 - alpha / 2)});
  };
  const double d = point.within - point.across;
  const nlohmann::json d_ci = ci(bd);
  // The verdict is corrected over the metrics tested (Bonferroni: each difference's interval at level
  // 1 - alpha / n_metrics), so two metrics cannot give two chances at a finding.
  const double alpha_each = alpha / static_cast<double>(std::size(kMetrics));
  const nlohmann::json v_ci =
      nlohmann::json::array({percentile(bd, alpha_each / 2), percentile(bd, 1 - alpha_each / 2)});
  std::string verdict = "indistinguishable";
  if (v_ci[0].get<double>() > 0) verdict = "within_higher";
  if (v_ci[1].get<double>() < 0) verdict = "across_higher";
  if (distinct.size() < kMinDistinctResamples) verdict = "undetermined";
  return {{"within", point.within},
          {"within_ci", ci(bw)},
          {"across", point.across},
          {"across_ci", ci(ba)},
          {"difference", d},
          {"difference_ci", d_ci},
          {"verdict_ci", v_ci},
          {"verdict_correction", fmt::format("Bonferroni over {} metrics: interval at level {:.4f}",
                                             std::size(kMetrics), 1 - alpha_each)},
          {"across_over_within", point.across / point.within},
          {"across_over_within_ci", ci(br)},
          {"chance", chance},
          // The part of the above-chance within-transformer similarity that does not carry over to other
          // transformers (0: all of it carries over; 1: none does).
          {"specific_fraction_above_chance", (point.within - point.across) / (point.within - chance)},
          {"verdict", verdict},
          {"bootstrap",
           {{"resamples", B},
            {"redrawn", redrawn},
            {"distinct_resamples", distinct.size()},
            {"min_distinct_for_verdict", kMinDistinctResamples},
            {"method", "percentile"}}}};
}

// Trains (or reuses) each transformer and its SAEs, one resumable condition per transformer seed.
std::vector<nlohmann::json> run_transformers(ExperimentContext& ctx, const std::vector<int64_t>& tseeds) {
  std::vector<nlohmann::json> transformers;
  transformers.reserve(tseeds.size());
  for (const int64_t t : tseeds) {
    transformers.push_back(
        ctx.condition(fmt::format("transformer-seed{}", t), [&] { return run_transformer(ctx, t); }));
  }
  return transformers;
}

// results.json's summary and the transformer seeds that did not generalise.
struct SeedsSummary {
  nlohmann::json summary;
  std::vector<int64_t> ungrokked;
};

// Within vs across for each metric (recording the run's metrics), decoder pwmcc within, ungrokked seeds.
SeedsSummary summarize(ExperimentContext& ctx, const std::vector<nlohmann::json>& transformers,
                       const nlohmann::json& sim, int64_t nT, int64_t nS) {
  const Config& c = ctx.config();
  nlohmann::json summary = nlohmann::json::object();
  for (const char* metric : kMetrics) {
    double chance = 0;
    for (const auto& p : sim["chance_pairs"]) chance += p[metric].get<double>();
    chance /= static_cast<double>(sim["chance_pairs"].size());
    summary[metric] = compare_within_across(c, sim, metric, nT, nS, chance);
    for (const char* key : {"within", "across", "difference", "chance"}) {
      ctx.metric(std::string(metric) + "." + key, summary[metric][key].get<double>());
    }
    ctx.metric(std::string(metric) + ".difference_lo", summary[metric]["difference_ci"][0].get<double>());
  }
  double dec_pw = 0;
  for (const auto& t : transformers) dec_pw += t["decoder_within"]["mean_pwmcc"].get<double>();
  summary["decoder_pwmcc_within"] = dec_pw / static_cast<double>(nT);
  std::vector<int64_t> ungrokked;
  for (const auto& t : transformers) {
    if (!t["transformer"]["grokked"].get<bool>()) ungrokked.push_back(t["transformer_seed"].get<int64_t>());
  }
  summary["ungrokked_transformer_seeds"] = ungrokked;
  return {std::move(summary), std::move(ungrokked)};
}

// summary.md's opening paragraph, the per-transformer table and the warning about ungrokked transformers.
std::string transformers_markdown(const ExperimentContext& ctx, const std::vector<int64_t>& tseeds,
                                  const std::vector<int64_t>& seeds,
                                  const std::vector<nlohmann::json>& transformers, const nlohmann::json& sim,
                                  const std::vector<int64_t>& ungrokked) {
  const Config& c = ctx.config();
  const auto nT = static_cast<int64_t>(tseeds.size());
  std::string md = fmt::format(
      "# transformer-seeds: is SAE stability specific to one trained transformer?\n\nRun `{}`. {} "
      "transformers "
      "(transformer.training.seed {}), TopK SAEs (d_sae {}, k {}) on seeds {} of each, compared by the "
      "Pearson "
      "correlation of their latents over the same {} input rows (activation-based matching: decoder cosines "
      "across transformers would compare different residual bases).\n\n",
      ctx.run_id(), nT, nlohmann::json(tseeds).dump(), c.get_int("transformer_seeds.d_sae"),
      c.get_int("transformer_seeds.k"), nlohmann::json(seeds).dump(), sim["saes"][0]["rows"].get<int64_t>());
  md +=
      "| transformer seed | held-out acc | grok epoch | grokked | held-out EV (mean) | L0 | dead | decoder "
      "pwmcc within |\n"
      "|---|---|---|---|---|---|---|---|\n";
  for (const auto& t : transformers) {
    const nlohmann::json& m = t["sae_metrics"]["mean"];
    md += fmt::format(
        "| {} | {} | {} | {} | {} | {} | {} | {} |\n", t["transformer_seed"].get<int64_t>(),
        fmt_num(t["transformer"]["val_acc"].get<double>()), t["transformer"]["grok_epoch"].dump(),
        t["transformer"]["grokked"].get<bool>() ? "yes" : "**NO**", fmt_num(m["ev_held_out"].get<double>()),
        fmt_num(m["l0"].get<double>(), 1), fmt_num(m["frac_dead"].get<double>(), 3),
        fmt_num(t["decoder_within"]["mean_pwmcc"].get<double>()));
  }
  if (!ungrokked.empty()) {
    md += fmt::format(
        "\n**Warning:** transformer seed(s) {} did not reach held-out accuracy 0.99 (studied only because "
        "experiment.allow_ungrokked is set); their SAEs describe a model that memorised, and the comparison "
        "mixes models that compute different things.\n",
        nlohmann::json(ungrokked).dump());
  }
  return md;
}

// summary.md's table of within vs across, one row per metric.
std::string metrics_markdown(const nlohmann::json& summary) {
  std::string md =
      "\n| metric | within transformer (CI) | across transformers (CI) | within - across (CI) | across / "
      "within "
      "(CI) | chance (rows shuffled) | verdict |\n|---|---|---|---|---|---|---|\n";
  for (const char* metric : kMetrics) {
    const nlohmann::json& s = summary[metric];
    md += fmt::format(
        "| {} | {} {} | {} {} | {} {} | {} {} | {} | {} |\n", metric, fmt_num(s["within"].get<double>()),
        fmt_ci(s["within_ci"][0].get<double>(), s["within_ci"][1].get<double>()),
        fmt_num(s["across"].get<double>()),
        fmt_ci(s["across_ci"][0].get<double>(), s["across_ci"][1].get<double>()),
        fmt_num(s["difference"].get<double>()),
        fmt_ci(s["difference_ci"][0].get<double>(), s["difference_ci"][1].get<double>()),
        fmt_num(s["across_over_within"].get<double>(), 3),
        fmt_ci(s["across_over_within_ci"][0].get<double>(), s["across_over_within_ci"][1].get<double>(), 3),
        fmt_num(s["chance"].get<double>()), s["verdict"].get<std::string>());
  }
  return md;
}

// The conclusion's sentence on the lead metric L (its verdict in words, or why there is none).
std::string lead_finding(const nlohmann::json& L) {
  const std::string v = L["verdict"].get<std::string>();
  std::string finding;
  if (v == "undetermined") {
    finding = fmt::format(
        "the bootstrap has only {} distinct resamples (fewer than {}), so no verdict is drawn: within {}, "
        "across "
        "{}, difference {}",
        L["bootstrap"]["distinct_resamples"].get<int64_t>(), kMinDistinctResamples,
        fmt_num(L["within"].get<double>()), fmt_num(L["across"].get<double>()),
        fmt_num(L["difference"].get<double>()));
  } else {
    finding = fmt::format(
        "SAEs of the same transformer ({}) are {} SAEs of different transformers ({}): difference {} (CI {}; "
        "the verdict uses the Bonferroni-corrected interval {} over both activation metrics)",
        fmt_num(L["within"].get<double>()),
        v == "within_higher" ? "more alike than"
                             : (v == "across_higher" ? "less alike than" : "not distinguishable from"),
        fmt_num(L["across"].get<double>()), fmt_num(L["difference"].get<double>()),
        fmt_ci(L["difference_ci"][0].get<double>(), L["difference_ci"][1].get<double>()),
        fmt_ci(L["verdict_ci"][0].get<double>(), L["verdict_ci"][1].get<double>()));
  }
  return finding;
}

// summary.md's conclusion on the lead metric and its "What this does not show" section.
std::string conclusion_markdown(const Config& c, const std::string& lead, const nlohmann::json& summary,
                                int64_t nT, int64_t nS) {
  const nlohmann::json& L = summary[lead];
  const double conf = c.get_double("transformer_seeds.confidence");
  const std::string finding = lead_finding(L);
  std::string md = fmt::format(
      "\n## Conclusion\n\nOn `{}`, {}. Across / within = {}; (within - across) / (within - chance) = {}: the "
      "share of the above-chance within-transformer similarity (chance {}) that does not carry over to "
      "another "
      "transformer. Decoder pwmcc within a transformer, for reference: {}.\n",
      lead, finding, fmt_num(L["across_over_within"].get<double>(), 3),
      fmt_num(L["specific_fraction_above_chance"].get<double>(), 3), fmt_num(L["chance"].get<double>()),
      fmt_num(summary["decoder_pwmcc_within"].get<double>()));
  md += fmt::format(
      "\n## What this does not show\n\n"
      "- {} transformers are few: the bootstrap ({} resamples at {}, percentile) redraws transformers and "
      "SAE "
      "seeds with replacement, but with {} transformers and {} seeds it has only {} distinct resamples, so "
      "the "
      "interval is coarse and likely too narrow; it is a description, not a test with a controlled error "
      "rate.\n"
      "- Only the transformer seed varies (its initialisation, train/held-out split and data order "
      "together): "
      "one config, one layer and position, one SAE architecture and size.\n"
      "- Activation correlation is a different similarity from decoder cosine; the two are not on one scale, "
      "so "
      "within-transformer decoder pwmcc and activation similarity are not compared here.\n"
      "- The chance level shuffles the rows of one side (first SAE seed of each transformer pair): it keeps "
      "each latent's firing rate and value distribution, not any structure shared by the inputs.\n"
      "- Similar latents on the same inputs can still compute their values differently; matching by "
      "activations says what fires together, not that the features are the same data features.\n",
      nT, c.get_int("transformer_seeds.bootstrap"), conf, nT, nS,
      L["bootstrap"]["distinct_resamples"].get<int64_t>());
  return md;
}

// pairs.csv: every SAE pair's kind, transformers, seeds and activation similarities.
void write_pairs_csv(const ExperimentContext& ctx, const nlohmann::json& sim) {
  std::vector<std::vector<nlohmann::json>> rows;
  for (const auto& p : sim["pairs"]) {
    rows.push_back({p["kind"], p["transformer_a"], p["sae_seed_a"], p["transformer_b"], p["sae_seed_b"],
                    p["act_pwmcc"], p["act_matched_mean_corr"], p["act_shared_frac_05"],
                    p["act_shared_frac_07"], p["act_shared_frac_09"]});
  }
  ctx.write_text("pairs.csv", csv_text({"kind", "transformer_a", "sae_seed_a", "transformer_b", "sae_seed_b",
                                        "act_pwmcc", "act_matched_mean_corr", "act_shared_frac_05",
                                        "act_shared_frac_07", "act_shared_frac_09"},
                                       rows));
}

// Renders the within_across figure of the lead metric.
void write_figure(const ExperimentContext& ctx, const nlohmann::json& sim, const std::string& lead,
                  double chance) {
  // Figure: every pair's similarity by kind, and the chance level.
  std::string data = "$d << EOD\n";
  for (const auto& p : sim["pairs"]) {
    data += fmt::format("{} {}\n", p["kind"] == "within" ? 0 : 1, p[lead].get<double>());
  }
  data += "EOD\n";
  ctx.figure(
      "within_across",
      data +
          fmt::format("set title 'transformer-seeds: {} of SAE pairs'\nset ylabel '{}'\n"
                      "set xrange [-0.5:1.5]\nset xtics ('within transformer' 0, 'across transformers' 1)\n"
                      "set grid ytics\nplot $d using 1:2 with points pt 7 title 'pairs', {} with lines dt 2 "
                      "title 'chance (rows shuffled)'\n",
                      lead, lead, chance));
}

int run_transformer_seeds(ExperimentContext& ctx) {
  const Config& c = ctx.config();
  const auto tseeds = c.get_int_list("transformer_seeds.transformer_seeds");
  const auto seeds = c.get_int_list("transformer_seeds.seeds");
  const auto nT = static_cast<int64_t>(tseeds.size());
  const auto nS = static_cast<int64_t>(seeds.size());
  const std::vector<nlohmann::json> transformers = run_transformers(ctx, tseeds);
  const nlohmann::json sim = ctx.condition("similarity", [&] { return run_similarity(ctx, transformers); });

  nlohmann::json results = {{"schema_version", 1},
                            {"experiment", "transformer-seeds"},
                            {"run_id", ctx.run_id()},
                            {"transformer_seeds", tseeds},
                            {"sae_seeds", seeds},
                            {"transformers", transformers},
                            {"saes", sim["saes"]},
                            {"pairs", sim["pairs"]},
                            {"chance_pairs", sim["chance_pairs"]}};
  const SeedsSummary s = summarize(ctx, transformers, sim, nT, nS);
  const nlohmann::json& summary = s.summary;
  results["summary"] = summary;

  // summary.md
  const std::string lead = c.get_string("transformer_seeds.metric");
  const nlohmann::json& L = summary[lead];
  std::string md = transformers_markdown(ctx, tseeds, seeds, transformers, sim, s.ungrokked);
  md += metrics_markdown(summary);
  md += conclusion_markdown(c, lead, summary, nT, nS);
  results["conclusion"] = md.substr(md.find("## Conclusion"));
  // No audited claim: the audit re-derives stability claims from compare's stability.json, which this
  // experiment does not write (its numbers are the pairs above).
  results["claims"] = nlohmann::json::array();
  ctx.write_json("results.json", results);
  ctx.write_text("summary.md", md);
  write_pairs_csv(ctx, sim);
  write_figure(ctx, sim, lead, L["chance"].get<double>());
  return 0;
}

}  // namespace

ExperimentDef transformer_seeds_experiment() {
  return {"transformer-seeds",
          "SAE stability within vs across transformers of different seeds (activation-based matching)",
          transformer_seeds_schema, run_transformer_seeds};
}

}  // namespace husai
