// phase4a: are SAEs trained on the grokked transformer's answer-position activations more alike across
// seeds than null dictionaries? TopK (d_sae 1024, k 32) on 5 seeds, and ReLU+L1 at a matched L0.

#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "husai/core/error.hpp"
#include "husai/experiments/catalog.hpp"
#include "husai/experiments/claims.hpp"
#include "husai/experiments/relu_l0_match.hpp"
#include "husai/experiments/stability_report.hpp"
#include "husai/experiments/study.hpp"
#include "husai/metrics/stability.hpp"
#include "husai/metrics/stability_convergence.hpp"
#include "husai/metrics/stability_study.hpp"
#include "husai/sae/saelens_io.hpp"
#include "husai/train/sae_run.hpp"

namespace husai {
namespace {

ConfigSchema phase4a_schema() {
  ConfigSchema s;
  add_transformer_section(s);
  add_extract_section(s);
  add_sae_section(s);
  add_compare_section(s, /*surrogate_by_default=*/true);
  s.add_bool("experiment.allow_ungrokked", false, "study a transformer that has not generalised (warns)");
  s.add_bool("experiment.splice", true, "CE-loss / KL scores with each SAE spliced into the transformer");
  s.add_int_list("phase4a.seeds", nlohmann::json::array({42, 123, 456, 789, 1011}), "SAE seeds").min(0);
  s.add_int("phase4a.d_sae", 1024, "latents").min(1);
  s.add_int("phase4a.k", 32, "TopK active latents per row").min(1);
  s.add_bool("phase4a.relu", true, "also train ReLU+L1 SAEs at a matched L0");
  add_relu_l0_match_keys(s);
  s.add_check([](const Config& c) {
    if (c.get_int_list("phase4a.seeds").size() < 2)
      c.fail("phase4a needs at least two seeds", {"phase4a.seeds"});
    const auto r = c.get_double_list("phase4a.relu_l1_range");
    if (r[0] >= r[1])
      c.fail("phase4a.relu_l1_range must be [low, high] with low < high", {"phase4a.relu_l1_range"});
    if (c.get_bool("phase4a.relu") && !c.is_null("phase4a.relu_tune_steps") &&
        c.get_int("phase4a.relu_tune_steps") <= c.get_int("sae.sae.l1_warmup_steps")) {
      c.fail(
          "phase4a.relu_tune_steps must exceed sae.sae.l1_warmup_steps: a tuning run must reach its full L1 "
          "coefficient",
          {"phase4a.relu_tune_steps", "sae.sae.l1_warmup_steps"});
    }
    for (int64_t seed : c.get_int_list("phase4a.seeds")) {
      if (seed == c.get_int("phase4a.relu_tune_seed")) {
        c.fail("the tuning seed must not be an evaluated seed", {"phase4a.relu_tune_seed", "phase4a.seeds"});
      }
    }
  });
  return s;
}

nlohmann::json run_arch(ExperimentContext& ctx, const Upstream& up, const std::string& name,
                        const SaeSettings& settings) {
  const Config& c = ctx.config();
  const auto seeds = c.get_int_list("phase4a.seeds");
  SaeSettings o = settings;
  o.d_sae = c.get_int("phase4a.d_sae");
  o.seeds = seeds;
  const std::string dir = ctx.sae_run(sae_config_with(c, o), up.activations_path);
  nlohmann::json out = {{"sae_run", dir}, {"seeds", seeds}, {"settings", settings.to_json()}};
  out["metrics"] = sae_run_metrics(dir, seeds);
  if (c.get_bool("experiment.splice")) {
    out["splice"] = sae_run_splice_metrics(dir, seeds, up.activations_path, up.transformer_dir);
  }
  ctx.log("comparing " + name + " seeds against the nulls" +
          (c.get_string("compare.surrogate") != "none" ? " and the surrogate control" : ""));
  const nlohmann::json stab =
      compare_seeds(ctx, dir, seeds, up.activations_path, "compare/" + name, up.transformer_dir);
  out["stability_file"] = "compare/" + name + "/stability.json";
  // Stability against training steps: the run's snapshots (training.stability_checkpoints) and the final
  // SAEs.
  if (stab.contains("convergence")) out["convergence"] = stab["convergence"];
  return out;
}

// What the pair of verdicts (decision null, surrogate control) supports, in words.
std::string reading(const StabilitySummary& s) {
  const bool above_null = s.verdict_kind == "above";
  if (s.surrogate_verdict_kind.empty()) {
    return above_null
               ? "reproducible beyond the most conservative geometry-matched null; the surrogate control "
                 "was not run, so this says nothing about whether the features reflect the data"
               : "not shown to be reproducible beyond its own geometry";
  }
  const bool above_surrogate = s.surrogate_verdict_kind == "above";
  if (above_null && above_surrogate)
    return "reproducible beyond its own geometry and beyond the same SAEs trained on structureless surrogate "
           "data: "
           "evidence that the reproducible part reflects the data";
  if (above_null)
    return "reproducible beyond its own geometry, but SAEs trained on structureless Gaussian data with the "
           "same "
           "mean and covariance are " +
           std::string(s.surrogate_verdict_kind == "below" ? "MORE" : "as") +
           " alike: no evidence that these reproducible features are data features";
  if (above_surrogate)
    return "more alike than SAEs trained on surrogate data, but not beyond its own geometry";
  return "neither beyond its own geometry nor beyond the surrogate control";
}

// The topk condition and (phase4a.relu) the relu condition at the L1 coefficient tuned to topk's L0.
nlohmann::json train_conditions(ExperimentContext& ctx, const Upstream& up, nlohmann::json& results) {
  const Config& c = ctx.config();
  nlohmann::json conds = nlohmann::json::object();
  conds["topk"] = ctx.condition("topk", [&] {
    SaeSettings topk;
    topk.architecture = "topk";
    topk.k = c.get_int("phase4a.k");
    return run_arch(ctx, up, "topk", topk);
  });
  if (!c.get_bool("phase4a.relu")) return conds;
  const double target = c.is_null("phase4a.relu_target_l0") ? static_cast<double>(c.get_int("phase4a.k"))
                                                            : c.get_double("phase4a.relu_target_l0");
  const auto seeds = c.get_int_list("phase4a.seeds");
  // The evaluated seeds' run as run_arch trains it (cached, so the relu condition reuses it).
  const auto train_evaluated = [&](double l1) {
    SaeSettings relu;
    relu.architecture = "relu";
    relu.l1_coefficient = l1;
    relu.d_sae = c.get_int("phase4a.d_sae");
    relu.seeds = seeds;
    return ctx.sae_run(sae_config_with(c, relu), up.activations_path);
  };
  const nlohmann::json tuning = ctx.condition("relu-l1-tuning", [&] {
    return tune_relu_l1(ctx, up.activations_path, target, seeds, train_evaluated);
  });
  results["relu_tuning"] = tuning;
  conds["relu"] = ctx.condition("relu", [&] {
    SaeSettings relu;
    relu.architecture = "relu";
    relu.l1_coefficient = tuning["l1_coefficient"].get<double>();
    return run_arch(ctx, up, "relu", relu);
  });
  results["relu_l0_match"] = relu_l0_match_json(tuning, conds["relu"]["metrics"]["mean"]["l0"].get<double>());
  if (!results["relu_l0_match"]["within_tolerance"].get<bool>()) {
    ctx.log(fmt::format("WARNING: ReLU L0 not matched: evaluated mean {:.2f} vs target {:.1f}",
                        results["relu_l0_match"]["achieved"].get<double>(), target));
  }
  return conds;
}

// The summary's main table, its stability.csv rows, the claims and the conclusion, from every condition.
struct Phase4aTables {
  std::string table, conclusion;
  std::vector<std::vector<nlohmann::json>> rows;
  nlohmann::json claims = nlohmann::json::array();
};

Phase4aTables condition_tables(ExperimentContext& ctx, const nlohmann::json& conds,
                               const std::vector<std::string>& files) {
  const std::string metric = ctx.config().get_string("compare.metric");
  Phase4aTables t;
  t.table =
      "| SAE | metric | decision null | trained (CI) | null (CI) | difference (CI) | two-sided p | Holm p | "
      "verdict | vs surrogate: difference (CI) | Holm p | verdict | held-out EV | L0 | dead | CE loss score "
      "|\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& [name, cond] : conds.items()) {
    const nlohmann::json& m = cond["metrics"]["mean"];
    const double ce = cond.contains("splice") ? cond["splice"]["mean"]["ce_loss_score"].get<double>()
                                              : std::numeric_limits<double>::quiet_NaN();
    for (const std::string& met : tested_metrics()) {
      const StabilitySummary s = stability_from_json(cond["stability"][met]);
      t.table += fmt::format(
          "| {} | {} | {} | {} {} | {} {} | {} {} | {} | {} | {} | {} {} | {} | {} | {} | {} | {} | {} |\n",
          name, met, s.null_name, fmt_num(s.trained), fmt_ci(s.trained_lo, s.trained_hi),
          fmt_num(s.null_mean), fmt_ci(s.null_lo, s.null_hi), fmt_num(s.delta),
          fmt_ci(s.delta_lo, s.delta_hi), fmt_num(s.p_permutation), fmt_num(s.p_holm), s.verdict_kind,
          fmt_num(s.surrogate_delta), fmt_ci(s.surrogate_lo, s.surrogate_hi), fmt_num(s.surrogate_p_holm),
          s.surrogate_verdict_kind.empty() ? "-" : s.surrogate_verdict_kind,
          fmt_num(m["ev_held_out"].get<double>()), fmt_num(m["l0"].get<double>(), 1),
          fmt_num(m["frac_dead"].get<double>(), 3), fmt_num(ce));
      t.rows.push_back({name,
                        met,
                        s.null_name,
                        s.trained,
                        s.trained_lo,
                        s.trained_hi,
                        s.null_mean,
                        s.null_lo,
                        s.null_hi,
                        s.delta,
                        s.delta_lo,
                        s.delta_hi,
                        s.ratio,
                        s.p_permutation,
                        s.p_holm,
                        s.holm_family_size,
                        s.verdict_kind,
                        s.surrogate_delta,
                        s.surrogate_lo,
                        s.surrogate_hi,
                        s.surrogate_p_holm,
                        s.surrogate_verdict_kind,
                        m["ev_held_out"],
                        m["ev_drop"],
                        m["l0"],
                        m["frac_dead"],
                        m["mse"],
                        ce});
      ctx.metric(met + ".delta", s.delta, name);
      ctx.metric(met + ".delta_lo", s.delta_lo, name);
      if (!std::isnan(s.surrogate_delta)) ctx.metric(met + ".surrogate_delta", s.surrogate_delta, name);
    }
    const StabilitySummary s = stability_from_json(cond["stability"][metric]);
    t.conclusion +=
        fmt::format("- **{}** SAEs (held-out EV {}, L0 {}), `{}`: {}.\n  - vs the decision null: {}.\n", name,
                    fmt_num(m["ev_held_out"].get<double>(), 3), fmt_num(m["l0"].get<double>(), 1), metric,
                    reading(s), s.verdict);
    if (!s.surrogate_verdict.empty())
      t.conclusion += fmt::format("  - vs the surrogate control: {}.\n", s.surrogate_verdict);
    t.claims.push_back(
        make_stability_claim("phase4a." + name + ".above_null",
                             name + " SAEs are more alike across seeds than the most conservative "
                                    "geometry-matched null",
                             cond["stability_file"].get<std::string>(), metric, s, files));
    ctx.metric("ev_held_out", m["ev_held_out"].get<double>(), name);
    ctx.metric("ev_drop", m["ev_drop"].get<double>(), name);
    ctx.metric("l0", m["l0"].get<double>(), name);
    if (!std::isnan(ce)) ctx.metric("ce_loss_score", ce, name);
  }
  return t;
}

// Every comparison (each null and the surrogate, both families, every tested metric) with its verdict.
std::string comparisons_table(const nlohmann::json& conds, const std::vector<StabilityStudy>& studies) {
  std::string md =
      "\nEvery comparison (each null and the surrogate, both SAE families, every tested metric) with its "
      "verdict:\n\n"
      "| SAE | metric | group | group mean | difference (CI) | Holm p | verdict "
      "|\n|---|---|---|---|---|---|---|\n";
  size_t index = 0;
  for (const auto& [name, cond] : conds.items()) {
    const StabilityStudy& study = studies[index++];
    for (const std::string& met : tested_metrics()) {
      for (const GroupComparison& g : study.metric(met).comparisons) {
        md += fmt::format("| {} | {} | {}{} | {} | {:+.4f} {} | {} | {} |\n", name, met, g.group,
                          g.group == study.metric(met).decision_null ? " (decision)" : "",
                          fmt_num(g.group_similarity.estimate), g.difference.estimate,
                          fmt_ci(g.difference.bca.lo, g.difference.bca.hi), fmt_num(g.p_adjusted),
                          verdict_name(g.verdict));
      }
    }
  }
  return md;
}

void write_stability_csv(ExperimentContext& ctx, const std::vector<std::vector<nlohmann::json>>& rows) {
  ctx.write_text("stability.csv", csv_text({"sae",
                                            "metric",
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
                                            "holm_family_size",
                                            "verdict",
                                            "surrogate_delta",
                                            "surrogate_lo",
                                            "surrogate_hi",
                                            "surrogate_p_holm",
                                            "surrogate_verdict",
                                            "ev_held_out",
                                            "ev_drop",
                                            "l0",
                                            "frac_dead",
                                            "mse",
                                            "ce_loss_score"},
                                           rows));
}

// Figure: trained vs decision null with CIs per SAE and metric.
void similarity_figure(ExperimentContext& ctx, const std::vector<std::vector<nlohmann::json>>& rows) {
  std::string data = "$d << EOD\n";
  int i = 0;
  for (const auto& row : rows) {
    data +=
        fmt::format("{} \"{}\\n{}\" {} {} {} {} {} {}\n", i++, row[0].get<std::string>(),
                    row[1].get<std::string>(), row[3].get<double>(), row[4].get<double>(),
                    row[5].get<double>(), row[6].get<double>(), row[7].get<double>(), row[8].get<double>());
  }
  data += "EOD\n";
  ctx.figure(
      "similarity",
      data +
          "set title 'phase4a: trained vs the decision null (seed-bootstrap CIs)'\nset ylabel 'similarity'\n"
          "set xrange [-0.5:" +
          std::to_string(i) +
          "-0.5]\nset key top left\nset grid ytics\nset xtics noenhanced\n"
          "plot $d using ($1-0.1):3:4:5:xtic(2) with yerrorbars pt 7 title 'trained', "
          "$d using ($1+0.1):6:7:8 with yerrorbars pt 5 title 'decision null'\n");
}

std::string how_to_read(const Config& c, const std::string& families_text) {
  return fmt::format(
      "**How to read this.** Each SAE family is compared with null dictionaries (compare/<family>/summary.md "
      "lists "
      "all of them) and, where run, with the same family trained on Gaussian surrogate data with the "
      "activations' mean and covariance. The decision null of a metric is the most conservative "
      "geometry-matched null (second_moment, axis_reflection or rotation: the one with the highest mean "
      "similarity). One rule decides every verdict: *above* / *below* when the two-sided exact permutation "
      "test "
      "over seed labels, Holm-adjusted over its family, gives p <= {} with that sign of the difference; else "
      "*undecidable* when no data could pass (the family's smallest attainable Holm p exceeds alpha), else "
      "*indistinguishable*. Holm families pooled over both SAE families' compares: {}.\n\n",
      fmt_num(1.0 - c.get_double("compare.confidence"), 2), families_text);
}

int run_phase4a(ExperimentContext& ctx) {
  const Config& c = ctx.config();
  const Upstream up = prepare_upstream(ctx, c.get_bool("experiment.allow_ungrokked"));
  nlohmann::json results = {{"schema_version", 2},
                            {"experiment", "phase4a"},
                            {"run_id", ctx.run_id()},
                            {"transformer", up.transformer},
                            {"activations", up.activations_path},
                            {"decision_metric", c.get_string("compare.metric")}};
  nlohmann::json conds = train_conditions(ctx, up, results);

  // Every verdict is Holm-adjusted across both families' compares (and within each over nulls and metrics).
  std::vector<std::string> files;
  for (const auto& [name, cond] : conds.items()) files.push_back(cond["stability_file"].get<std::string>());
  std::vector<std::pair<std::string, int64_t>> family_sizes;
  const std::vector<StabilityStudy> studies = load_experiment_studies(ctx.run_dir(), files, &family_sizes);
  std::string families_text;
  for (const auto& [family, size] : family_sizes) {
    families_text += fmt::format("{}{} ({} tests)", families_text.empty() ? "" : ", ", family, size);
    results["holm_families"][family] = size;
  }
  size_t index = 0;
  for (auto& [name, cond] : conds.items()) {
    const StabilityStudy& study = studies[index++];
    for (const std::string& met : tested_metrics()) cond["stability"][met] = to_json(summarize(study, met));
  }
  results["conditions"] = conds;

  const Phase4aTables tables = condition_tables(ctx, conds, files);
  std::string md = fmt::format(
      "# phase4a: trained SAEs vs geometry-matched nulls and a surrogate-data control\n\nRun `{}`. "
      "Transformer: "
      "held-out accuracy {}, grok epoch {}. Activations: `{}`.\n\n",
      ctx.run_id(), fmt_num(up.transformer["val_acc"].get<double>()), up.transformer["grok_epoch"].dump(),
      up.activations_path);
  md += how_to_read(c, families_text) + tables.table + comparisons_table(conds, studies);
  std::vector<std::pair<std::string, nlohmann::json>> curves;
  for (const auto& [name, cond] : conds.items())
    if (cond.contains("convergence")) curves.emplace_back(name, cond["convergence"]);
  const ConvergenceReport cr = convergence_report(curves);
  md += "\n## Stability against training steps\n\n" + cr.markdown;
  for (const auto& [name, change] : cr.last_change) ctx.metric("pwmcc.last_change", change, name);
  if (!cr.figure_data.empty()) {
    ctx.figure("stability_vs_steps",
               "set title 'phase4a: decoder pwmcc across seeds against training steps'\n" + cr.figure_data);
  }
  results["convergence_summary"] = cr.summary;

  if (results.contains("relu_tuning")) {
    md += relu_l0_match_markdown(results["relu_tuning"], results["relu_l0_match"],
                                 c.get_int_list("phase4a.seeds").size());
  }
  md += "\n## Conclusion\n\n" + tables.conclusion +
        "\nWhat this does not show: reproducible across SAE seeds is not the same as real or interpretable. "
        "Only "
        "the SAE initialisation and data order vary here: one transformer, one layer and position. The "
        "effect sizes in compare/<family>/summary.md (seed-level Cohen's d) and the Mann-Whitney test on "
        "pairwise values are reference comparisons, never decisions. The reference reported PWMCC 0.3001 vs "
        "0.2988 for an under-trained TopK SAE on activations that encoded the answer token itself.\n";
  results["claims"] = tables.claims;
  results["conclusion"] = tables.conclusion;
  ctx.write_json("results.json", results);
  ctx.write_text("summary.md", md);
  write_stability_csv(ctx, tables.rows);
  similarity_figure(ctx, tables.rows);
  return 0;
}

}  // namespace

ExperimentDef phase4a_experiment() {
  return {"phase4a", "trained vs null dictionaries: TopK d_sae 1024 k 32 on 5 seeds, ReLU at matched L0",
          phase4a_schema, run_phase4a};
}

}  // namespace husai
