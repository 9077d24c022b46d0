// ablations: k sweep at fixed d_sae and d_sae sweep at fixed k, the same seeds in every condition; per
// condition the trained and null similarity with seed-level CIs, their difference and ratio, EV, MSE, L0,
// dead fraction and training time.

#include <set>

#include <fmt/format.h>

#include "husai/experiments/catalog.hpp"
#include "husai/experiments/claims.hpp"
#include "husai/experiments/study.hpp"

namespace husai {
namespace {

ConfigSchema ablations_schema() {
  ConfigSchema s;
  add_transformer_section(s);
  add_extract_section(s);
  add_sae_section(s);
  add_compare_section(s);
  s.add_bool("experiment.allow_ungrokked", false, "study a transformer that has not generalised (warns)");
  s.add_int_list("ablations.seeds", nlohmann::json::array({42, 123, 456}), "SAE seeds (every condition)")
      .min(0);
  s.add_int_list("ablations.k_values", nlohmann::json::array({8, 16, 32, 64}), "k sweep").min(1);
  s.add_int("ablations.k_sweep_d_sae", 128, "d_sae of the k sweep").min(1);
  s.add_int_list("ablations.d_sae_values", nlohmann::json::array({64, 128, 256, 512, 1024}), "d_sae sweep")
      .min(1);
  s.add_int("ablations.d_sae_sweep_k", 32, "k of the d_sae sweep").min(1);
  s.add_check([](const Config& c) {
    if (c.get_int_list("ablations.seeds").size() < 2)
      c.fail("ablations need at least two seeds", {"ablations.seeds"});
  });
  return s;
}

struct Cond {
  std::string sweep;  // "k" or "d_sae"
  int64_t d_sae = 0, k = 0;
  std::string id() const { return fmt::format("d_sae{}-k{}", d_sae, k); }
};

std::string sweep_figure(const std::string& title, const std::string& xlabel, const std::string& data,
                         bool ev) {
  std::string body = data + "set title '" + title + "'\nset xlabel '" + xlabel +
                     "'\nset logscale x 2\nset grid\nset key bottom right\n";
  if (ev) {
    body += "set ylabel 'held-out explained variance'\nplot $d using 1:8 with linespoints pt 7 title 'EV'\n";
  } else {
    body +=
        "set ylabel 'similarity'\nplot $d using 1:2:3:4 with yerrorlines pt 7 title 'trained', "
        "$d using 1:5:6:7 with yerrorlines pt 5 title 'null'\n";
  }
  return body;
}

// The conditions of both sweeps, in order: the k sweep, then the d_sae sweep.
std::vector<Cond> ablation_conditions(const Config& c) {
  std::vector<Cond> conds;
  for (int64_t k : c.get_int_list("ablations.k_values"))
    conds.push_back({"k", c.get_int("ablations.k_sweep_d_sae"), k});
  for (int64_t d : c.get_int_list("ablations.d_sae_values"))
    conds.push_back({"d_sae", d, c.get_int("ablations.d_sae_sweep_k")});
  return conds;
}

// One condition's work: trains the TopK SAEs on every seed and compares them.
nlohmann::json run_condition(ExperimentContext& ctx, const Upstream& up, const std::vector<int64_t>& seeds,
                             const Cond& cond) {
  const Config& c = ctx.config();
  ctx.log("condition " + cond.id());
  SaeSettings settings;
  settings.architecture = "topk";
  settings.d_sae = cond.d_sae;
  settings.k = cond.k;
  settings.seeds = seeds;
  const Config sc = sae_config_with(c, settings);
  const std::string dir = ctx.sae_run(sc, up.activations_path);
  const nlohmann::json stab = compare_seeds(ctx, dir, seeds, up.activations_path, "compare/" + cond.id());
  return nlohmann::json{{"d_sae", cond.d_sae},
                        {"k", cond.k},
                        {"sae_run", dir},
                        {"metrics", sae_run_metrics(dir, seeds)},
                        {"convergence", stab.value("convergence", nlohmann::json())},
                        {"stability_file", "compare/" + cond.id() + "/stability.json"},
                        {"stability",
                         {{"pwmcc", to_json(summarize_stability(stab, "pwmcc"))},
                          {"matched_mean_cos", to_json(summarize_stability(stab, "matched_mean_cos"))}}}};
}

// Runs every condition with k <= d_sae (logging the skipped ones); returns each with its result.
std::vector<std::pair<Cond, nlohmann::json>> run_conditions(ExperimentContext& ctx, const Upstream& up,
                                                            const std::vector<int64_t>& seeds,
                                                            const std::vector<Cond>& conds) {
  std::vector<std::pair<Cond, nlohmann::json>> done;
  for (const Cond& cond : conds) {
    if (cond.k > cond.d_sae) {
      ctx.log(fmt::format("skipping {}: k > d_sae", cond.id()));
      continue;
    }
    // A condition shared by both sweeps (d_sae 128, k 32) is computed once.
    const nlohmann::json r =
        ctx.condition(cond.id(), [&ctx, &up, &seeds, &cond] { return run_condition(ctx, up, seeds, cond); });
    done.emplace_back(cond, r);
  }
  return done;
}

// The header of summary.md, up to the table's column rule.
std::string ablations_header(const ExperimentContext& ctx, const std::vector<int64_t>& seeds,
                             const std::string& metric) {
  return fmt::format(
      "# Core ablations\n\nRun `{}`; seeds {} in every condition; `{}` against each condition's decision "
      "null "
      "(the most conservative geometry-matched null, named per row); CIs are seed-bootstrap BCa. Verdict: "
      "the "
      "two-sided exact permutation test over seed labels, Holm-adjusted over every null, tested metric and "
      "condition of this run (sizes in results.json `holm_families`); above / below when p <= alpha with "
      "that "
      "sign; else *undecidable* when no data could pass (the family's smallest attainable Holm p exceeds "
      "alpha: "
      "too few seeds for the family, so the intervals are the result), else indistinguishable.\n\n"
      "| sweep | d_sae | k | null | trained (CI) | null (CI) | difference (CI) | ratio | Holm p | verdict | "
      "held-out EV | MSE | L0 | dead | train time (s) "
      "|\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
      ctx.run_id(), nlohmann::json(seeds).dump(), metric);
}

// What the per-condition pass accumulates: summary table, CSV rows, results entries, claims, figure data.
struct AblationTables {
  std::string md;
  std::vector<std::vector<nlohmann::json>> rows;
  nlohmann::json rows_json = nlohmann::json::array();
  nlohmann::json claims = nlohmann::json::array();
  std::string data_k = "$d << EOD\n", data_d = "$d << EOD\n";
};

// Adds one Holm-adjusted condition to the tables, records its metrics and its claim.
void add_condition(ExperimentContext& ctx, const std::string& metric, const Cond& cond, nlohmann::json r,
                   const StabilityStudy& study, const std::vector<std::string>& files, AblationTables& t) {
  for (const char* met : {"pwmcc", "matched_mean_cos"}) r["stability"][met] = to_json(summarize(study, met));
  const StabilitySummary s = stability_from_json(r["stability"][metric]);
  const nlohmann::json& m = r["metrics"]["mean"];
  t.md += fmt::format(
      "| {} | {} | {} | {} | {} {} | {} {} | {} {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", cond.sweep,
      cond.d_sae, cond.k, s.null_name, fmt_num(s.trained), fmt_ci(s.trained_lo, s.trained_hi),
      fmt_num(s.null_mean), fmt_ci(s.null_lo, s.null_hi), fmt_num(s.delta), fmt_ci(s.delta_lo, s.delta_hi),
      fmt_num(s.ratio, 3), fmt_num(s.p_holm), s.verdict_kind, fmt_num(m["ev_held_out"].get<double>()),
      fmt_num(m["mse"].get<double>(), 5), fmt_num(m["l0"].get<double>(), 1),
      fmt_num(m["frac_dead"].get<double>(), 3), fmt_num(m["wall_time_s"].get<double>(), 1));
  t.rows.push_back({cond.sweep,     cond.d_sae,      cond.k,           s.null_name, s.trained,
                    s.trained_lo,   s.trained_hi,    s.null_mean,      s.null_lo,   s.null_hi,
                    s.delta,        s.delta_lo,      s.delta_hi,       s.ratio,     s.p_permutation,
                    s.p_holm,       s.verdict_kind,  m["ev_held_out"], m["mse"],    m["l0"],
                    m["frac_dead"], m["wall_time_s"]});
  nlohmann::json row = r;
  row["sweep"] = cond.sweep;
  t.rows_json.push_back(row);
  const std::string line = fmt::format("{} {} {} {} {} {} {} {}\n", cond.sweep == "k" ? cond.k : cond.d_sae,
                                       s.trained, s.trained_lo, s.trained_hi, s.null_mean, s.null_lo,
                                       s.null_hi, m["ev_held_out"].get<double>());
  (cond.sweep == "k" ? t.data_k : t.data_d) += line;
  const std::string cid = cond.sweep + "-" + cond.id();
  ctx.metric(metric + ".delta", s.delta, cid);
  ctx.metric(metric + ".delta_lo", s.delta_lo, cid);
  ctx.metric("ev_held_out", m["ev_held_out"].get<double>(), cid);
  t.claims.push_back(make_stability_claim(
      "ablations." + cid + ".above_null",
      fmt::format("TopK d_sae {} k {} is more alike across seeds than the null", cond.d_sae, cond.k),
      r["stability_file"].get<std::string>(), metric, s, files));
}

// Holm-adjusts all conditions together (family sizes into results) and tabulates each in order.
AblationTables tabulate_conditions(ExperimentContext& ctx, const std::string& metric,
                                   const std::vector<std::pair<Cond, nlohmann::json>>& done,
                                   nlohmann::json& results, const std::string& header) {
  // Every condition's verdict is Holm-adjusted over all conditions of the run (and their nulls and metrics).
  std::vector<std::string> files;
  files.reserve(done.size());
  for (const auto& [cond, r] : done) files.push_back(r["stability_file"].get<std::string>());
  std::vector<std::pair<std::string, int64_t>> families;
  const std::vector<StabilityStudy> studies = load_experiment_studies(ctx.run_dir(), files, &families);
  for (const auto& [family, size] : families) results["holm_families"][family] = size;
  AblationTables t;
  t.md = header;
  for (size_t i = 0; i < done.size(); ++i)
    add_condition(ctx, metric, done[i].first, done[i].second, studies[i], files, t);
  t.data_k += "EOD\n";
  t.data_d += "EOD\n";
  return t;
}

// Stability against steps over each condition's convergence curve; records each curve's last change.
ConvergenceReport ablations_convergence(ExperimentContext& ctx,
                                        const std::vector<std::pair<Cond, nlohmann::json>>& done) {
  // Stability against steps, per condition (each condition once, though it may sit in both sweeps).
  std::vector<std::pair<std::string, nlohmann::json>> curves;
  std::set<std::string> seen;
  for (const auto& [cond, r] : done) {
    if (r.contains("convergence") && !r["convergence"].is_null() && seen.insert(cond.id()).second)
      curves.emplace_back(cond.id(), r["convergence"]);
  }
  ConvergenceReport cr = convergence_report(curves);
  for (const auto& [name, change] : cr.last_change) ctx.metric("pwmcc.last_change", change, name);
  return cr;
}

// Completes and writes results.json, then writes ablations.csv.
void write_ablation_results(const ExperimentContext& ctx, nlohmann::json& results,
                            const ConvergenceReport& cr, const AblationTables& t) {
  results["convergence_summary"] = cr.summary;
  results["conditions"] = t.rows_json;
  results["claims"] = t.claims;
  ctx.write_json("results.json", results);
  ctx.write_text("ablations.csv", csv_text({"sweep",
                                            "d_sae",
                                            "k",
                                            "null",
                                            "trained",
                                            "trained_lo",
                                            "trained_hi",
                                            "null_mean",
                                            "null_lo",
                                            "null_hi",
                                            "delta",
                                            "delta_lo",
                                            "delta_hi",
                                            "ratio",
                                            "p_permutation_two_sided",
                                            "p_holm",
                                            "verdict",
                                            "ev_held_out",
                                            "mse",
                                            "l0",
                                            "frac_dead",
                                            "train_wall_time_s"},
                                           t.rows));
}

// Finishes and writes summary.md, then renders the sweep and convergence figures.
void write_ablation_summary(const ExperimentContext& ctx, const ConvergenceReport& cr,
                            const AblationTables& t) {
  const Config& c = ctx.config();
  std::string md = t.md;
  md +=
      "\nTrain time is the wall time of the train-sae run that produced the condition (all seeds in one "
      "pass); a "
      "reused cache entry reports the time recorded when it was built.\n";
  md += "\n## Stability against training steps\n\n" + cr.markdown;
  md += surrogate_caveat(c);
  ctx.write_text("summary.md", md);
  const std::string ttl = fmt::format("d_sae {}", c.get_int("ablations.k_sweep_d_sae"));
  ctx.figure("similarity_vs_k", sweep_figure("similarity vs k (" + ttl + ")", "k", t.data_k, false));
  ctx.figure("ev_vs_k", sweep_figure("explained variance vs k (" + ttl + ")", "k", t.data_k, true));
  const std::string ttd = fmt::format("k {}", c.get_int("ablations.d_sae_sweep_k"));
  ctx.figure("similarity_vs_d_sae",
             sweep_figure("similarity vs d_sae (" + ttd + ")", "d_sae", t.data_d, false));
  ctx.figure("ev_vs_d_sae",
             sweep_figure("explained variance vs d_sae (" + ttd + ")", "d_sae", t.data_d, true));
  if (!cr.figure_data.empty()) {
    ctx.figure("stability_vs_steps",
               "set title 'ablations: decoder pwmcc across seeds against training steps'\n" + cr.figure_data);
  }
}

int run_ablations(ExperimentContext& ctx) {
  const Config& c = ctx.config();
  const Upstream up = prepare_upstream(ctx, c.get_bool("experiment.allow_ungrokked"));
  const auto seeds = c.get_int_list("ablations.seeds");
  const std::string metric = c.get_string("compare.metric");
  const std::vector<Cond> conds = ablation_conditions(c);

  nlohmann::json results = {{"schema_version", 2},    {"experiment", "ablations"},
                            {"run_id", ctx.run_id()}, {"transformer", up.transformer},
                            {"seeds", seeds},         {"decision_metric", metric}};
  const std::vector<std::pair<Cond, nlohmann::json>> done = run_conditions(ctx, up, seeds, conds);
  const AblationTables t =
      tabulate_conditions(ctx, metric, done, results, ablations_header(ctx, seeds, metric));
  const ConvergenceReport cr = ablations_convergence(ctx, done);
  write_ablation_results(ctx, results, cr, t);
  write_ablation_summary(ctx, cr, t);
  return 0;
}

}  // namespace

ExperimentDef ablations_experiment() {
  return {"ablations", "k sweep {8,16,32,64} at d_sae 128 and d_sae sweep {64..1024} at k 32, same seeds",
          ablations_schema, run_ablations};
}

}  // namespace husai
