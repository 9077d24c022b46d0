// release-gate: thresholds from config over the latest matching result (found through the registry).
// Gates (CONTRACTS "Experiments"): random_model, reconstruction, generalisation, causal, plus data_features
// (above the surrogate-data control, issue 11); gates on external benchmarks are reported as not applicable
// here.

#include <cmath>
#include <filesystem>
#include <limits>

#include <fmt/format.h>

#include "husai/core/error.hpp"
#include "husai/experiments/catalog.hpp"
#include "husai/experiments/study.hpp"
#include "husai/io/json_file.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

ConfigSchema gate_schema() {
  ConfigSchema s;
  s.add_string("gate.source_experiment", "phase4a", "experiment whose latest completed run is gated");
  s.add_string("gate.source_config_hash", "", "only runs whose config hash starts with this (empty: any)");
  s.add_string("gate.condition", "topk", "condition of the source run (phase4a: topk or relu)");
  s.add_enum("gate.metric", "pwmcc", {"pwmcc", "matched_mean_cos"}, "similarity of the random_model gate");
  s.add_float("gate.reconstruction_ev_floor", 0.9, "reconstruction: mean held-out EV must be >= this").max(1);
  s.add_float("gate.generalisation_max_ev_drop", 0.1,
              "generalisation: EV(training rows) - EV(held-out rows) must be <= this")
      .min(0);
  s.add_float("gate.causal_ce_floor", 0.9, "causal: mean CE loss score must be >= this");
  return s;
}

nlohmann::json gate(const std::string& name, bool pass, const std::string& detail, double value,
                    double threshold) {
  return {{"gate", name},
          {"status", pass ? "pass" : "fail"},
          {"detail", detail},
          {"value", std::isnan(value) ? nlohmann::json() : nlohmann::json(value)},
          {"threshold", threshold}};
}

// The latest completed run of the source experiment (with the configured config hash prefix); throws when
// there is none.
RunRecord find_source_run(ExperimentContext& ctx, const std::string& source) {
  const Config& c = ctx.config();
  const auto run = ctx.registry().latest_completed(source, c.get_string("gate.source_config_hash"));
  if (!run) {
    throw Error(
        fmt::format("release-gate: no completed '{}' run in {}{}; run it first (make reproduce-phase4a)",
                    source, ctx.root(),
                    c.get_string("gate.source_config_hash").empty()
                        ? ""
                        : " with config hash " + c.get_string("gate.source_config_hash")));
  }
  return *run;
}

// Appends the random_model and data_features gates, read from the condition's stability.json.
void add_stability_gates(ExperimentContext& ctx, const fs::path& dir, const nlohmann::json& cond,
                         const std::string& metric, nlohmann::json& gates) {
  // random_model: re-derived from the stored stability.json.
  const std::string stab_path = (dir / cond.at("stability_file").get<std::string>()).string();
  ctx.add_input(stab_path);
  const StabilitySummary s = summarize_stability(read_json_file(stab_path), metric);
  gates.push_back(gate(
      "random_model", s.verdict_kind == "above" && s.delta_lo > 0,
      fmt::format("{} trained {} vs the decision null ({}, the most conservative geometry-matched null) {}: "
                  "difference {} (CI {}), verdict {}; needs verdict above (two-sided permutation p, Holm "
                  "over the compare's nulls and metrics) and lower bound > 0",
                  metric, fmt_num(s.trained), s.null_name, fmt_num(s.null_mean), fmt_num(s.delta),
                  fmt_ci(s.delta_lo, s.delta_hi), s.verdict_kind),
      s.delta_lo, 0.0));
  // data_features: beating the nulls says the dictionaries are reproducible, not that they reflect the data;
  // that needs the surrogate-data control (the same family trained on Gaussian data with the activations'
  // mean and covariance). Without it the gate fails: the claim is not checked.
  if (s.surrogate_verdict_kind.empty()) {
    gates.push_back(gate("data_features", false,
                         "the source comparison ran no surrogate-data control (compare.surrogate none): "
                         "reproducibility beyond the nulls is not evidence of data features",
                         std::numeric_limits<double>::quiet_NaN(), 0.0));
  } else {
    gates.push_back(gate(
        "data_features", s.surrogate_verdict_kind == "above" && s.surrogate_lo > 0,
        fmt::format("{} trained on the activations minus trained on Gaussian surrogate data: {} (CI {}), "
                    "verdict {}; needs verdict above (two-sided permutation p, Holm over the surrogate "
                    "family) and lower bound > 0",
                    metric, fmt_num(s.surrogate_delta), fmt_ci(s.surrogate_lo, s.surrogate_hi),
                    s.surrogate_verdict_kind),
        s.surrogate_lo, 0.0));
  }
}

// Appends the reconstruction, generalisation and causal gates, read from the condition's mean metrics.
void add_condition_gates(const Config& c, const nlohmann::json& cond, nlohmann::json& gates) {
  const nlohmann::json& m = cond.at("metrics").at("mean");
  const double ev = m.at("ev_held_out").get<double>();
  const double floor = c.get_double("gate.reconstruction_ev_floor");
  gates.push_back(gate("reconstruction", ev >= floor,
                       fmt::format("mean held-out EV {} (floor {})", fmt_num(ev), floor), ev, floor));
  const double drop = m.at("ev_drop").get<double>();
  const double max_drop = c.get_double("gate.generalisation_max_ev_drop");
  gates.push_back(gate("generalisation", drop <= max_drop,
                       fmt::format("EV on SAE-training rows minus EV on held-out rows: {} (limit {})",
                                   fmt_num(drop), max_drop),
                       drop, max_drop));
  if (cond.contains("splice")) {
    const double ce = cond["splice"]["mean"]["ce_loss_score"].is_null()
                          ? std::numeric_limits<double>::quiet_NaN()
                          : cond["splice"]["mean"]["ce_loss_score"].get<double>();
    const double ce_floor = c.get_double("gate.causal_ce_floor");
    gates.push_back(
        gate("causal", ce >= ce_floor,
             fmt::format("mean CE loss score with the SAE spliced in: {} (floor {})", fmt_num(ce), ce_floor),
             ce, ce_floor));
  } else {
    gates.push_back(gate("causal", false,
                         "the source run has no splice metrics (experiment.splice was false)",
                         std::numeric_limits<double>::quiet_NaN(), c.get_double("gate.causal_ce_floor")));
  }
}

// summary.md: the source run, one row per gate, the gates not applicable here, and pass_all.
std::string summary_md(const std::string& source, const RunRecord& run, const std::string& cond_name,
                       const nlohmann::json& gates, const nlohmann::json& not_applicable, bool pass_all) {
  std::string md = fmt::format(
      "# Release gate\n\nSource: `{}` run `{}` (condition `{}`, completed {}).\n\n"
      "| gate | status | detail |\n|---|---|---|\n",
      source, run.id, cond_name, run.finished_utc);
  for (const auto& g : gates) {
    md += fmt::format("| {} | {} | {} |\n", g["gate"].get<std::string>(), g["status"].get<std::string>(),
                      g["detail"].get<std::string>());
  }
  for (const auto& g : not_applicable) {
    md += fmt::format("| {} | not applicable here | no external benchmark runs in this project |\n",
                      g["gate"].get<std::string>());
  }
  md += fmt::format("\n**pass_all: {}**\n", pass_all ? "true" : "false");
  return md;
}

// Records each gate's status as a registry metric (1 pass, 0 fail) and returns the gates as claims.
nlohmann::json record_gates(ExperimentContext& ctx, const nlohmann::json& gates) {
  nlohmann::json claims = nlohmann::json::array();
  for (const auto& g : gates) {
    ctx.metric("gate." + g["gate"].get<std::string>(), g["status"] == "pass" ? 1.0 : 0.0);
    claims.push_back({{"id", "release-gate." + g["gate"].get<std::string>()},
                      {"statement", "gate " + g["gate"].get<std::string>() + " passes"},
                      {"kind", "gate"},
                      {"detail", g["detail"]},
                      {"holds", g["status"] == "pass"}});
  }
  return claims;
}

int run_gate(ExperimentContext& ctx) {
  const Config& c = ctx.config();
  const std::string source = c.get_string("gate.source_experiment");
  const RunRecord run = find_source_run(ctx, source);
  const fs::path dir = run.run_dir;
  const std::string results_path = (dir / "results.json").string();
  ctx.add_input(results_path);
  const nlohmann::json src = read_json_file(results_path);
  const std::string cond_name = c.get_string("gate.condition");
  if (!src.contains("conditions") || !src["conditions"].contains(cond_name)) {
    throw Error("release-gate: the source run has no condition '" + cond_name + "'").file(results_path);
  }
  const nlohmann::json& cond = src["conditions"][cond_name];
  const std::string metric = c.get_string("gate.metric");
  nlohmann::json gates = nlohmann::json::array();
  add_stability_gates(ctx, dir, cond, metric, gates);
  add_condition_gates(c, cond, gates);
  bool pass_all = true;
  for (const auto& g : gates) pass_all = pass_all && g["status"] == "pass";
  const nlohmann::json not_applicable =
      nlohmann::json::array({{{"gate", "external_saebench"}, {"status", "not applicable here"}},
                             {{"gate", "external_cebench"}, {"status", "not applicable here"}}});

  const std::string md = summary_md(source, run, cond_name, gates, not_applicable, pass_all);
  const nlohmann::json claims = record_gates(ctx, gates);
  ctx.metric("gate.pass_all", pass_all ? 1.0 : 0.0);
  ctx.write_json(
      "results.json",
      {{"schema_version", 1},
       {"experiment", "release-gate"},
       {"run_id", ctx.run_id()},
       {"source",
        {{"experiment", source}, {"run_id", run.id}, {"run_dir", run.run_dir}, {"condition", cond_name}}},
       {"gates", gates},
       {"not_applicable", not_applicable},
       {"pass_all", pass_all},
       {"claims", claims}});
  ctx.write_text("summary.md", md);
  ctx.log(pass_all ? "all gates pass" : "a gate FAILED (see summary.md)");
  return !pass_all && ctx.options().fail_on_gate_fail ? 2 : 0;
}

}  // namespace

ExperimentDef release_gate_experiment() {
  return {"release-gate",
          "gates over the latest matching result: random_model, reconstruction, generalisation, causal",
          gate_schema, run_gate};
}

}  // namespace husai
