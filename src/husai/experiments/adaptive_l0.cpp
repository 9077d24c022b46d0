// adaptive-l0: choose k on search seeds by the lower confidence bound of (trained - null) among the
// candidates whose held-out EV clears a floor, then retrain the chosen k on fresh seeds (disjoint from the
// search seeds) and report that retrain as the estimate; the search value is optimistically biased by the
// selection and is shown only for contrast. `--k-candidates 32` is the matched control.

#include <cmath>
#include <set>

#include <fmt/format.h>

#include "husai/experiments/catalog.hpp"
#include "husai/experiments/claims.hpp"
#include "husai/experiments/study.hpp"

namespace husai {
namespace {

ConfigSchema adaptive_schema() {
  ConfigSchema s;
  add_transformer_section(s);
  add_extract_section(s);
  add_sae_section(s);
  add_compare_section(s);
  s.add_bool("experiment.allow_ungrokked", false, "study a transformer that has not generalised (warns)");
  s.add_int_list("adaptive.k_candidates", nlohmann::json::array({4, 8, 12, 16, 24, 32, 48, 64}), "k searched")
      .min(1);
  s.add_int("adaptive.d_sae", 128, "latents").min(1);
  s.add_int_list("adaptive.search_seeds", nlohmann::json::array({42, 123, 456, 789, 1011}),
                 "seeds of the search")
      .min(0);
  s.add_int_list("adaptive.retrain_seeds",
                 nlohmann::json::array({2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008}),
                 "fresh seeds of the retrain (disjoint from the search seeds)")
      .min(0);
  s.add_float("adaptive.ev_floor", 0.2, "held-out explained variance a candidate must reach").max(1);
  s.add_check([](const Config& c) {
    const auto a = c.get_int_list("adaptive.search_seeds");
    const auto b = c.get_int_list("adaptive.retrain_seeds");
    if (a.size() < 2 || b.size() < 2)
      c.fail("search and retrain need two seeds each", {"adaptive.search_seeds", "adaptive.retrain_seeds"});
    const std::set<int64_t> sa(a.begin(), a.end());
    for (int64_t seed : b) {
      if (sa.count(seed) > 0) {
        c.fail(fmt::format("retrain seed {} is also a search seed; the estimate must come from fresh seeds",
                           seed),
               {"adaptive.retrain_seeds", "adaptive.search_seeds"});
      }
    }
    for (int64_t k : c.get_int_list("adaptive.k_candidates")) {
      if (k > c.get_int("adaptive.d_sae"))
        c.fail("a k candidate exceeds d_sae", {"adaptive.k_candidates", "adaptive.d_sae"});
    }
  });
  return s;
}

nlohmann::json train_and_compare(ExperimentContext& ctx, const Upstream& up, int64_t k,
                                 const std::vector<int64_t>& seeds, const std::string& id) {
  const Config& c = ctx.config();
  SaeSettings settings;
  settings.architecture = "topk";
  settings.d_sae = c.get_int("adaptive.d_sae");
  settings.k = k;
  settings.seeds = seeds;
  const Config sc = sae_config_with(c, settings);
  const std::string dir = ctx.sae_run(sc, up.activations_path);
  const nlohmann::json stab = compare_seeds(ctx, dir, seeds, up.activations_path, "compare/" + id);
  return {{"k", k},
          {"seeds", seeds},
          {"sae_run", dir},
          {"metrics", sae_run_metrics(dir, seeds)},
          {"stability_file", "compare/" + id + "/stability.json"},
          {"stability",
           {{"pwmcc", to_json(summarize_stability(stab, "pwmcc"))},
            {"matched_mean_cos", to_json(summarize_stability(stab, "matched_mean_cos"))}}}};
}

// The search: one condition per k candidate, trained and compared on the search seeds.
nlohmann::json run_search(ExperimentContext& ctx, const Upstream& up) {
  const Config& c = ctx.config();
  nlohmann::json search = nlohmann::json::array();
  for (int64_t k : c.get_int_list("adaptive.k_candidates")) {
    const std::string id = fmt::format("search-k{}", k);
    search.push_back(ctx.condition(id, [&ctx, &up, k, &id] {
      ctx.log(fmt::format("search k {}", k));
      return train_and_compare(ctx, up, k, ctx.config().get_int_list("adaptive.search_seeds"), id);
    }));
  }
  return search;
}

// Each candidate's Holm p across the search, and the size of that family of nulls.
struct SearchHolm {
  std::vector<double> p_holm;
  int64_t family_size = 0;
};

// Re-summarises every search candidate with one Holm adjustment across all candidates.
SearchHolm holm_adjust_search(const ExperimentContext& ctx, nlohmann::json& search,
                              const std::string& metric) {
  // Searching several k is several tests: every search comparison (each candidate against each null, both
  // tested metrics) is Holm-adjusted in one family across all candidates. The retrain is one confirmatory
  // study on fresh seeds: Holm within its own comparison (its nulls and metrics) only.
  std::vector<std::string> search_files;
  search_files.reserve(search.size());
  for (const nlohmann::json& r : search) search_files.push_back(r["stability_file"].get<std::string>());
  std::vector<std::pair<std::string, int64_t>> families;
  const std::vector<StabilityStudy> search_studies =
      load_experiment_studies(ctx.run_dir(), search_files, &families);
  SearchHolm holm;
  std::vector<double>& search_holm = holm.p_holm;
  search_holm.reserve(search.size());
  for (size_t i = 0; i < search.size(); ++i) {
    for (const char* met : {"pwmcc", "matched_mean_cos"})
      search[i]["stability"][met] = to_json(summarize(search_studies[i], met));
    search_holm.push_back(stability_from_json(search[i]["stability"][metric]).p_holm);
    search[i]["p_holm_across_candidates"] =
        std::isfinite(search_holm[i]) ? nlohmann::json(search_holm[i]) : nlohmann::json(nullptr);
  }
  for (const auto& [family, size] : families)
    if (family == "nulls") holm.family_size = size;
  return holm;
}

// results.json as far as the search goes.
nlohmann::json search_results(const ExperimentContext& ctx, const Upstream& up, const std::string& metric,
                              double floor, const nlohmann::json& search, const AdaptiveChoice& choice,
                              int64_t search_family) {
  const Config& c = ctx.config();
  nlohmann::json results = {{"schema_version", 1},
                            {"experiment", "adaptive-l0"},
                            {"run_id", ctx.run_id()},
                            {"transformer", up.transformer},
                            {"decision_metric", metric},
                            {"ev_floor", floor},
                            {"search", search},
                            {"eligible_k", choice.eligible},
                            {"search_holm_family_size", search_family}};
  // A single candidate is the matched control (`make adaptive-l0-control`): audited apart from the search.
  if (c.get_int_list("adaptive.k_candidates").size() == 1) results["variant"] = "control";
  return results;
}

// What the report accumulates: summary.md, the CSV rows (search, then retrain) and the claims.
struct AdaptiveReport {
  std::string md;
  std::vector<std::vector<nlohmann::json>> rows;
  nlohmann::json claims = nlohmann::json::array();
};

// Starts the report: summary.md's header and one table row and CSV row per search candidate.
AdaptiveReport search_report(const ExperimentContext& ctx, const std::string& metric, double floor,
                             const nlohmann::json& search, const SearchHolm& holm) {
  const Config& c = ctx.config();
  const std::vector<double>& search_holm = holm.p_holm;
  AdaptiveReport rep;
  rep.md = fmt::format(
      "# Adaptive L0 calibration\n\nRun `{}`. Search seeds {}, retrain seeds {} (disjoint), "
      "d_sae {}, EV floor {}; choice = the largest lower confidence bound of (trained - "
      "null) in `{}` among candidates with held-out EV >= floor, against each candidate's decision null (the "
      "most "
      "conservative geometry-matched null). Search p = two-sided exact permutation p against it; Holm p = "
      "adjusted in one family over the {} candidates x every null x the 2 tested metrics ({} tests). The "
      "retrain is Holm-adjusted within its own comparison.\n\n"
      "| k | held-out EV | L0 | trained | null | difference (CI) | search p | Holm p | eligible |\n"
      "|---|---|---|---|---|---|---|---|---|\n",
      ctx.run_id(), nlohmann::json(c.get_int_list("adaptive.search_seeds")).dump(),
      nlohmann::json(c.get_int_list("adaptive.retrain_seeds")).dump(), c.get_int("adaptive.d_sae"), floor,
      metric, search.size(), holm.family_size);
  for (size_t i = 0; i < search.size(); ++i) {
    const nlohmann::json& r = search[i];
    const StabilitySummary s = stability_from_json(r["stability"][metric]);
    const double ev = r["metrics"]["mean"]["ev_held_out"].get<double>();
    rep.md +=
        fmt::format("| {} | {} | {} | {} | {} | {} {} | {} | {} | {} |\n", r["k"].get<int64_t>(), fmt_num(ev),
                    fmt_num(r["metrics"]["mean"]["l0"].get<double>(), 1), fmt_num(s.trained),
                    fmt_num(s.null_mean), fmt_num(s.delta), fmt_ci(s.delta_lo, s.delta_hi),
                    fmt_num(s.p_permutation), fmt_num(search_holm[i]), ev >= floor ? "yes" : "no");
    rep.rows.push_back({"search", r["k"], s.null_name, s.trained, s.null_mean, s.delta, s.delta_lo,
                        s.delta_hi, s.p_permutation, search_holm[i], ev, r["metrics"]["mean"]["l0"]});
  }
  return rep;
}

// Retrains the chosen k on fresh seeds: the estimate, its metrics and the two claims.
void retrain_chosen(ExperimentContext& ctx, const Upstream& up, const std::string& metric, double floor,
                    int64_t k, const StabilitySummary& sel, double sel_holm, nlohmann::json& results,
                    AdaptiveReport& rep) {
  const Config& c = ctx.config();
  results["chosen_k"] = k;
  const nlohmann::json retrain = ctx.condition(fmt::format("retrain-k{}", k), [&ctx, &up, k] {
    ctx.log(fmt::format("retrain k {} on fresh seeds", k));
    return train_and_compare(ctx, up, k, ctx.config().get_int_list("adaptive.retrain_seeds"),
                             fmt::format("retrain-k{}", k));
  });
  results["retrain"] = retrain;
  const StabilitySummary s = stability_from_json(retrain["stability"][metric]);
  rep.rows.push_back({"retrain", k, s.null_name, s.trained, s.null_mean, s.delta, s.delta_lo, s.delta_hi,
                      s.p_permutation, nullptr, retrain["metrics"]["mean"]["ev_held_out"],
                      retrain["metrics"]["mean"]["l0"]});
  rep.md += fmt::format(
      "\nChosen k = {} (search difference {} {}, Holm p across candidates {}; optimistic because it was "
      "selected).\n\n"
      "**Estimate (retrain on {} fresh seeds):** trained {} vs {} null {}, difference {} {}, "
      "ratio {}, held-out EV {}. Verdict: {}.\n",
      k, fmt_num(sel.delta), fmt_ci(sel.delta_lo, sel.delta_hi), fmt_num(sel_holm),
      c.get_int_list("adaptive.retrain_seeds").size(), fmt_num(s.trained), s.null_name, fmt_num(s.null_mean),
      fmt_num(s.delta), fmt_ci(s.delta_lo, s.delta_hi), fmt_num(s.ratio, 3),
      fmt_num(retrain["metrics"]["mean"]["ev_held_out"].get<double>()), s.verdict);
  ctx.metric("chosen_k", static_cast<double>(k));
  ctx.metric(metric + ".delta", s.delta, "retrain");
  ctx.metric(metric + ".delta_lo", s.delta_lo, "retrain");
  ctx.metric(metric + ".search_delta", sel.delta, "search");
  rep.claims.push_back(
      make_stability_claim("adaptive-l0.retrain.above_null",
                           fmt::format("the chosen k = {}, retrained on fresh seeds, is more alike "
                                       "across seeds than the null",
                                       k),
                           retrain["stability_file"].get<std::string>(), metric, s));
  rep.claims.push_back({{"id", "adaptive-l0.choice"},
                        {"statement", fmt::format("k = {} is the choice the search results imply", k)},
                        {"kind", "adaptive_choice"},
                        {"metric", metric},
                        {"ev_floor", floor},
                        {"chosen_k", k},
                        {"holds", true}});
}

// The gnuplot body of the search figure from the search rows of the CSV.
std::string search_figure(const std::vector<std::vector<nlohmann::json>>& rows, const std::string& metric) {
  std::string data = "$d << EOD\n";
  for (const auto& row : rows) {
    if (row[0] == "search") {
      data += fmt::format("{} {} {} {}\n", row[1].get<int64_t>(), row[5].get<double>(), row[6].get<double>(),
                          row[7].get<double>());
    }
  }
  data += "EOD\n";
  return data + "set title 'adaptive L0 search: trained - null (" + metric +
         ")'\nset xlabel 'k'\nset logscale x 2\nset grid\nset ylabel 'difference'\n"
         "plot $d using 1:2:3:4 with yerrorlines pt 7 title 'search seeds', 0 with lines dt 2 "
         "notitle\n";
}

int run_adaptive(ExperimentContext& ctx) {
  const Config& c = ctx.config();
  const Upstream up = prepare_upstream(ctx, c.get_bool("experiment.allow_ungrokked"));
  const std::string metric = c.get_string("compare.metric");
  const double floor = c.get_double("adaptive.ev_floor");
  nlohmann::json search = run_search(ctx, up);
  const AdaptiveChoice choice = choose_adaptive_k(search, metric, floor);
  const SearchHolm holm = holm_adjust_search(ctx, search, metric);
  nlohmann::json results = search_results(ctx, up, metric, floor, search, choice, holm.family_size);
  AdaptiveReport rep = search_report(ctx, metric, floor, search, holm);
  if (!choice.k) {
    rep.md += "\nNo candidate reached the EV floor: nothing to retrain, no estimate.\n";
    results["chosen_k"] = nullptr;
  } else {
    const StabilitySummary sel = stability_from_json(search[choice.index]["stability"][metric]);
    retrain_chosen(ctx, up, metric, floor, *choice.k, sel, holm.p_holm[choice.index], results, rep);
  }
  results["claims"] = rep.claims;
  ctx.write_json("results.json", results);
  ctx.write_text("adaptive_l0.csv",
                 csv_text({"phase", "k", "null", "trained", "null_mean", "delta", "delta_lo", "delta_hi",
                           "p_permutation", "p_holm_across_candidates", "ev_held_out", "l0"},
                          rep.rows));
  rep.md += surrogate_caveat(c);
  ctx.write_text("summary.md", rep.md);
  ctx.figure("search", search_figure(rep.rows, metric));
  return 0;
}

}  // namespace

ExperimentDef adaptive_l0_experiment() {
  return {"adaptive-l0", "search k by the lower confidence bound of (trained - null), retrain on fresh seeds",
          adaptive_schema, run_adaptive};
}

}  // namespace husai
