// consistency-sweep (issue 5; the reference's consistency-objective sweep, fixed):
//   1. one reference SAE on its own seed (never an evaluated seed), trained once through the artifact cache;
//   2. per ratio r of the grid, SAEs on the evaluated seeds with the alignment penalty
//      lambda * (1 - mean_i max_j |cos(D_i, R_j)|) to the reference (train/consistency.hpp), where
//      lambda = r * mse_ref and mse_ref = E||x - x_hat||^2 of the reference on its held-out rows in the
//      trainer's (scaled) units: held_out.mse * d_in * activation_scaling_factor^2. r = 0 is the unpenalised
//      control;
//   3. per r: `husai compare` among the evaluated seeds only (the reference is in no pair) against every
//   null,
//      with seed-level CIs; the alignment of each SAE to the reference (reported apart); held-out EV;
//   4. among the r whose mean EV is within max_ev_drop of r = 0's, the largest trained - null difference of
//      compare.metric (ties: the smaller r).

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "husai/core/text.hpp"
#include "husai/experiments/catalog.hpp"
#include "husai/experiments/claims.hpp"
#include "husai/experiments/study.hpp"
#include "husai/io/json_file.hpp"
#include "husai/sae/saelens_io.hpp"
#include "husai/train/consistency.hpp"
#include "husai/train/sae_run.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

ConfigSchema consistency_sweep_schema() {
  ConfigSchema s;
  add_transformer_section(s);
  add_extract_section(s);
  add_sae_section(s);
  add_compare_section(s);
  s.add_bool("experiment.allow_ungrokked", false, "study a transformer that has not generalised (warns)");
  s.add_int("consistency.d_sae", 128, "latents (TopK)").min(1);
  s.add_int("consistency.k", 4, "TopK active latents per row (the runbook's --k 4)").min(1);
  s.add_int("consistency.reference_seed", 7, "seed of the reference SAE (excluded from every pair)").min(0);
  s.add_int_list("consistency.seeds", nlohmann::json::array({42, 123, 456}), "evaluated seeds").min(0);
  s.add_float_list("consistency.lambda_ratios", nlohmann::json::array({0.0, 0.01, 0.03, 0.1, 0.3, 1.0}),
                   "lambda / mse_ref grid; must start with 0 (the unpenalised control)")
      .min(0);
  s.add_float("consistency.max_ev_drop", 0.05,
              "largest held-out EV drop below r = 0 a selected ratio may have")
      .min(0);
  s.add_check([](const Config& c) {
    const auto seeds = c.get_int_list("consistency.seeds");
    if (seeds.size() < 2)
      c.fail("consistency-sweep needs at least two evaluated seeds", {"consistency.seeds"});
    if (std::find(seeds.begin(), seeds.end(), c.get_int("consistency.reference_seed")) != seeds.end()) {
      c.fail("the reference seed must not be an evaluated seed: the reference stays out of every pair",
             {"consistency.reference_seed", "consistency.seeds"});
    }
    const auto grid = c.get_double_list("consistency.lambda_ratios");
    if (grid.empty() || grid.front() != 0.0)
      c.fail("the lambda grid must start with 0 (the unpenalised control)", {"consistency.lambda_ratios"});
  });
  return s;
}

// The sweep's settings, read from the config.
struct SweepSettings {
  std::vector<int64_t> seeds;
  std::vector<double> ratios;
  int64_t ref_seed = 0;
  double max_drop = 0;
  std::string metric;
  SaeSettings shape;
};

// Reads the sweep's settings from the experiment config.
SweepSettings read_sweep_settings(const Config& c) {
  SweepSettings st;
  st.seeds = c.get_int_list("consistency.seeds");
  st.ratios = c.get_double_list("consistency.lambda_ratios");
  st.ref_seed = c.get_int("consistency.reference_seed");
  st.max_drop = c.get_double("consistency.max_ev_drop");
  st.metric = c.get_string("compare.metric");
  st.shape.architecture = "topk";
  st.shape.d_sae = c.get_int("consistency.d_sae");
  st.shape.k = c.get_int("consistency.k");
  return st;
}

// The reference SAE: its folder, its metrics.json, mse_ref and its unit decoder rows.
// clang-tidy cannot prove that nlohmann::json's moves never throw (as in io/config.hpp).
// NOLINTNEXTLINE(bugprone-exception-escape)
struct Reference {
  std::string dir;
  nlohmann::json metrics;
  double mse = 0;
  ConsistencyReference unit_rows;
};

// Trains (or reuses) the reference SAE and derives mse_ref in the trainer's units.
Reference train_reference(ExperimentContext& ctx, const Upstream& up, const SweepSettings& st) {
  const Config& c = ctx.config();
  // 1. The reference, trained once (cached: reused across ratios and reruns).
  SaeSettings ref_over = st.shape;
  ref_over.seeds = std::vector<int64_t>{st.ref_seed};
  const std::string ref_run = ctx.sae_run(sae_config_with(c, ref_over), up.activations_path);
  Reference ref;
  ref.dir = SaeRunLayout(ref_run).seed_dir(st.ref_seed);
  ref.metrics = read_json_file((fs::path(ref.dir) / "metrics.json").string());
  const nlohmann::json& ref_metrics = ref.metrics;
  const SaeModel reference = load_sae(ref.dir);
  const double scale = ref_metrics.at("activation_scaling_factor").get<double>();
  ref.mse = ref_metrics.at("held_out").at("mse").get<double>() * static_cast<double>(reference.d_in) * scale *
            scale;
  ref.unit_rows = make_consistency_reference(reference.W_dec.data(), reference.d_sae, reference.d_in);
  ctx.log(fmt::format("reference seed {}: held-out EV {:.4f}, mse_ref {:.5g}", st.ref_seed,
                      ref_metrics["held_out"]["explained_variance"].get<double>(), ref.mse));
  return ref;
}

// One ratio's condition: trains the evaluated seeds with the penalty and compares them among themselves.
nlohmann::json run_ratio(ExperimentContext& ctx, const Upstream& up, const SweepSettings& st,
                         const Reference& ref, double ratio, const std::string& id) {
  const Config& c = ctx.config();
  const std::vector<int64_t>& seeds = st.seeds;
  const double lambda = ratio * ref.mse;
  ctx.log(fmt::format("ratio {} (lambda {:.4g})", ratio, lambda));
  SaeSettings over = st.shape;
  over.seeds = seeds;
  if (lambda > 0) {
    over.consistency_reference = ref.dir;
    over.consistency_lambda = lambda;
  }
  const std::string dir = ctx.sae_run(sae_config_with(c, over), up.activations_path);
  std::vector<double> align;
  for (const int64_t seed : seeds) {
    const SaeModel m = load_sae(SaeRunLayout(dir).seed_dir(seed));
    ConsistencyWorkspace<float> ws;
    align.push_back(consistency_alignment<float>(m.W_dec.data(), m.d_sae, ref.unit_rows, 0.0, nullptr, ws));
  }
  const std::string rel = "compare/" + id;
  const nlohmann::json stab = compare_seeds(ctx, dir, seeds, up.activations_path, rel);
  nlohmann::json pairs = nlohmann::json::array();
  for (const auto& p : stab["pairs"]) {
    pairs.push_back({{"seed_a", seeds[p["a"].get<size_t>()]},
                     {"seed_b", seeds[p["b"].get<size_t>()]},
                     {"pwmcc", p["pwmcc"]},
                     {"matched_mean_cos", p["matched_mean_cos"]}});
  }
  return nlohmann::json{{"ratio", ratio},
                        {"lambda", lambda},
                        {"sae_run", dir},
                        {"metrics", sae_run_metrics(dir, seeds)},
                        {"alignment_to_reference", align},
                        {"mean_alignment_to_reference", mean_or_nan(align)},
                        {"pairs", pairs},
                        {"stability_file", rel + "/stability.json"},
                        {"stability",
                         {{"pwmcc", to_json(summarize_stability(stab, "pwmcc"))},
                          {"matched_mean_cos", to_json(summarize_stability(stab, "matched_mean_cos"))}}}};
}

// The stability files of every ratio and the size of their joint Holm family of nulls.
struct HolmFamily {
  std::vector<std::string> files;
  int64_t size = 0;
};

// Re-summarises every ratio's stability with one Holm adjustment across all ratios.
HolmFamily holm_adjust_rows(const ExperimentContext& ctx, nlohmann::json& rows) {
  // Every ratio's comparisons (each null, both tested metrics) are Holm-adjusted in one family.
  HolmFamily holm;
  std::vector<std::string>& files = holm.files;
  files.reserve(rows.size());
  for (const nlohmann::json& r : rows) files.push_back(r["stability_file"].get<std::string>());
  std::vector<std::pair<std::string, int64_t>> families;
  const std::vector<StabilityStudy> studies = load_experiment_studies(ctx.run_dir(), files, &families);
  for (const auto& [family, size] : families)
    if (family == "nulls") holm.size = size;
  for (size_t i = 0; i < rows.size(); ++i) {
    for (const char* met : {"pwmcc", "matched_mean_cos"})
      rows[i]["stability"][met] = to_json(summarize(studies[i], met));
  }
  return holm;
}

// The selected ratio and the rows of sweep.csv and pairs.csv.
struct Selection {
  size_t best = 0;
  std::vector<std::vector<nlohmann::json>> csv_rows, pair_rows;
};

// Marks each ratio's EV drop and eligibility, records its metrics and picks the best eligible ratio.
Selection select_ratio(ExperimentContext& ctx, nlohmann::json& rows, const SweepSettings& st) {
  const std::string& metric = st.metric;
  // 4. Selection under the EV-drop limit.
  const double ev0 = rows[0]["metrics"]["mean"]["ev_held_out"].get<double>();
  Selection sel;
  size_t& best = sel.best;
  for (size_t i = 0; i < rows.size(); ++i) {
    nlohmann::json& r = rows[i];
    const double ev = r["metrics"]["mean"]["ev_held_out"].get<double>();
    r["ev_drop"] = ev0 - ev;
    r["eligible"] = ev0 - ev <= st.max_drop;
    const StabilitySummary s = stability_from_json(r["stability"][metric]);
    if (r["eligible"].get<bool>() && s.delta > stability_from_json(rows[best]["stability"][metric]).delta)
      best = i;
    sel.csv_rows.push_back({r["ratio"], r["lambda"], s.null_name, s.trained, s.trained_lo, s.trained_hi,
                            s.null_mean, s.null_lo, s.null_hi, s.delta, s.delta_lo, s.delta_hi,
                            s.p_permutation, s.p_holm, s.verdict_kind, r["mean_alignment_to_reference"], ev,
                            ev0 - ev, r["eligible"]});
    for (const auto& p : r["pairs"])
      sel.pair_rows.push_back({r["ratio"], p["seed_a"], p["seed_b"], p["pwmcc"], p["matched_mean_cos"]});
    const std::string cid = fmt::format("ratio={}", r["ratio"].get<double>());
    ctx.metric(metric + ".trained", s.trained, cid);
    ctx.metric(metric + ".delta", s.delta, cid);
    ctx.metric(metric + ".delta_lo", s.delta_lo, cid);
    ctx.metric("ev_held_out", ev, cid);
    ctx.metric("alignment_to_reference", r["mean_alignment_to_reference"].get<double>(), cid);
  }
  return sel;
}

// Builds results.json with its two claims and writes it, sweep.csv and pairs.csv.
void write_sweep_results(const ExperimentContext& ctx, const Upstream& up, const SweepSettings& st,
                         const Reference& ref, nlohmann::json& rows, const HolmFamily& holm,
                         const Selection& sel) {
  const std::string& metric = st.metric;
  const std::vector<std::string>& files = holm.files;
  const nlohmann::json& ref_metrics = ref.metrics;
  const nlohmann::json& pick = rows[sel.best];
  const StabilitySummary sp = stability_from_json(pick["stability"][metric]);
  const StabilitySummary s0 = stability_from_json(rows[0]["stability"][metric]);
  nlohmann::json claims = nlohmann::json::array(
      {make_stability_claim("consistency-sweep.unpenalised.above_null",
                            "unpenalised SAEs (ratio 0) are more alike across seeds than the null",
                            rows[0]["stability_file"].get<std::string>(), metric, s0, files),
       make_stability_claim(
           "consistency-sweep.selected.above_null",
           fmt::format("SAEs at the selected ratio {} are more alike across seeds than the null",
                       pick["ratio"].get<double>()),
           pick["stability_file"].get<std::string>(), metric, sp, files)});
  const nlohmann::json results = {
      {"schema_version", 1},
      {"experiment", "consistency-sweep"},
      {"run_id", ctx.run_id()},
      {"transformer", up.transformer},
      {"activations", up.activations_path},
      {"reference",
       {{"seed", st.ref_seed},
        {"path", ref.dir},
        {"held_out_explained_variance", ref_metrics["held_out"]["explained_variance"]},
        {"mse_ref_trainer_units", ref.mse},
        {"excluded_from_pairs", true}}},
      {"seeds", st.seeds},
      {"decision_metric", metric},
      {"lambda_rule",
       "lambda = ratio * mse_ref, mse_ref = held_out.mse * d_in * activation_scaling_factor^2"},
      {"max_ev_drop", st.max_drop},
      {"holm_family_size", holm.size},
      {"sweep", rows},
      {"selected",
       {{"ratio", pick["ratio"]},
        {"lambda", pick["lambda"]},
        {"null", sp.null_name},
        {"delta_vs_null", sp.delta},
        {"delta_ci", {sp.delta_lo, sp.delta_hi}},
        {"ev_drop", pick["ev_drop"]},
        {"gain_over_unpenalised", sp.trained - s0.trained}}},
      {"claims", claims}};
  ctx.write_json("results.json", results);
  ctx.write_text("sweep.csv", csv_text({"ratio", "lambda", "null", "trained", "trained_lo", "trained_hi",
                                        "null_mean", "null_lo", "null_hi", "delta", "delta_lo", "delta_hi",
                                        "p_permutation", "p_holm", "verdict", "mean_alignment_to_reference",
                                        "mean_explained_variance", "ev_drop", "eligible"},
                                       sel.csv_rows));
  ctx.write_text("pairs.csv",
                 csv_text({"ratio", "seed_a", "seed_b", "pwmcc", "matched_mean_cos"}, sel.pair_rows));
}

// The summary's header and per-ratio table, and the figure's data block.
struct SweepTable {
  std::string md, data;
};

// Builds summary.md's header and per-ratio table together with the figure's data rows.
SweepTable sweep_table(const ExperimentContext& ctx, const SweepSettings& st, const Reference& ref,
                       const nlohmann::json& rows, int64_t family_size) {
  const std::string& metric = st.metric;
  const nlohmann::json& ref_metrics = ref.metrics;
  SweepTable t;
  std::string& md = t.md;
  std::string& data = t.data;
  md = fmt::format(
      "# Consistency sweep\n\nRun `{}`. Reference SAE: seed {} (in no evaluated pair), held-out EV {}, "
      "mse_ref {:.5g} (trainer units); lambda = ratio * mse_ref. Evaluated seeds {}; `{}` among them against "
      "the decision null named per row (the most conservative geometry-matched null), CIs seed-bootstrap "
      "BCa; "
      "p = two-sided exact permutation p, Holm-adjusted in one family over every ratio x null x the 2 tested "
      "metrics ({} tests).\n\n"
      "| ratio | lambda | trained (CI) | null | null mean | difference (CI) | p (perm.) | Holm p | verdict | "
      "alignment to reference | held-out EV | EV drop | eligible |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
      ctx.run_id(), st.ref_seed, fmt_num(ref_metrics["held_out"]["explained_variance"].get<double>()),
      ref.mse, nlohmann::json(st.seeds).dump(), metric, family_size);
  data = "$d << EOD\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::json& r = rows[i];
    const StabilitySummary s = stability_from_json(r["stability"][metric]);
    const double ev = r["metrics"]["mean"]["ev_held_out"].get<double>();
    md += fmt::format("| {} | {:.4g} | {} {} | {} | {} | {} {} | {} | {} | {} | {} | {} | {:+.4f} | {} |\n",
                      r["ratio"].get<double>(), r["lambda"].get<double>(), fmt_num(s.trained),
                      fmt_ci(s.trained_lo, s.trained_hi), s.null_name, fmt_num(s.null_mean), fmt_num(s.delta),
                      fmt_ci(s.delta_lo, s.delta_hi), fmt_num(s.p_permutation, 3), fmt_num(s.p_holm, 3),
                      s.verdict_kind, fmt_num(r["mean_alignment_to_reference"].get<double>()), fmt_num(ev),
                      r["ev_drop"].get<double>(), r["eligible"].get<bool>() ? "yes" : "no");
    data += fmt::format("{} {:.6g} {:.6g} {:.6g} {:.6g} {:.6g} {:.6g}\n", i, s.trained, s.trained_lo,
                        s.trained_hi, s.null_mean, ev, r["mean_alignment_to_reference"].get<double>());
  }
  data += "EOD\n";
  return t;
}

// The summary's closing paragraph on the selected ratio.
std::string sweep_conclusion(const SweepSettings& st, const nlohmann::json& rows, size_t best) {
  const nlohmann::json& pick = rows[best];
  const StabilitySummary sp = stability_from_json(pick["stability"][st.metric]);
  const StabilitySummary s0 = stability_from_json(rows[0]["stability"][st.metric]);
  return fmt::format(
      "\nSelected ratio {} (largest trained - null difference among ratios with EV drop <= {}): difference "
      "{} {}, gain over the unpenalised SAEs {:+.4f}. Caveat: SAEs pulled towards one shared reference "
      "become more alike because they share a target; the alignment column shows how much of any gain is "
      "that. Per-ratio comparisons are in `compare/ratio_<i>/`.\n",
      pick["ratio"].get<double>(), st.max_drop, fmt_num(sp.delta), fmt_ci(sp.delta_lo, sp.delta_hi),
      sp.trained - s0.trained);
}

// The gnuplot body of the sweep figure from its data block.
std::string sweep_figure(const SweepSettings& st, const std::string& data) {
  const std::vector<double>& ratios = st.ratios;
  std::string xtics = "set xtics (";
  for (size_t i = 0; i < ratios.size(); ++i) xtics += fmt::format("{}'{}' {}", i ? ", " : "", ratios[i], i);
  xtics += ")\n";
  return data + xtics +
         "set xlabel 'lambda / mse_ref'\nset ylabel 'value'\nset grid\nset key bottom left\n"
         "set title 'Consistency sweep (" +
         st.metric +
         " among evaluated seeds)'\nplot $d using 1:2:3:4 with yerrorlines pt 7 title "
         "'trained', $d using 1:5 with linespoints pt 5 title 'null', $d using 1:6 with "
         "linespoints title 'held-out EV', $d using 1:7 with linespoints title 'alignment "
         "to reference'\n";
}

int run_consistency_sweep(ExperimentContext& ctx) {
  const Config& c = ctx.config();
  const Upstream up = prepare_upstream(ctx, c.get_bool("experiment.allow_ungrokked"));
  const SweepSettings st = read_sweep_settings(c);
  const Reference ref = train_reference(ctx, up, st);

  // 2-3. One condition per ratio.
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < st.ratios.size(); ++i) {
    const std::string id = fmt::format("ratio_{}", i);
    const double ratio = st.ratios[i];
    rows.push_back(ctx.condition(
        id, [&ctx, &up, &st, &ref, ratio, &id] { return run_ratio(ctx, up, st, ref, ratio, id); }));
  }

  const HolmFamily holm = holm_adjust_rows(ctx, rows);
  const Selection sel = select_ratio(ctx, rows, st);
  write_sweep_results(ctx, up, st, ref, rows, holm, sel);

  const SweepTable table = sweep_table(ctx, st, ref, rows, holm.size);
  std::string md = table.md;
  md += sweep_conclusion(st, rows, sel.best);
  md += surrogate_caveat(c);
  ctx.write_text("summary.md", md);
  ctx.figure("sweep", sweep_figure(st, table.data));
  return 0;
}

}  // namespace

ExperimentDef consistency_sweep_experiment() {
  return {"consistency-sweep",
          "alignment penalty to a reference SAE over a lambda grid scaled to the reconstruction loss",
          consistency_sweep_schema, run_consistency_sweep};
}

}  // namespace husai
