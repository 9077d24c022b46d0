#include "husai/experiments/study.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include <fmt/format.h>

#include "husai/core/error.hpp"
#include "husai/core/text.hpp"
#include "husai/experiments/stability_report.hpp"
#include "husai/io/json_file.hpp"
#include "husai/io/json_values.hpp"
#include "husai/metrics/sae_eval.hpp"
#include "husai/metrics/stability.hpp"
#include "husai/metrics/stability_convergence.hpp"
#include "husai/sae/saelens_io.hpp"
#include "husai/train/sae_run.hpp"
#include "husai/train/transformer_config.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

}  // namespace

Upstream prepare_upstream(ExperimentContext& ctx, bool allow_ungrokked) {
  Upstream up;
  const Config tcfg = sub_config(ctx.config(), "transformer", transformer_config_schema());
  up.transformer_dir = ctx.transformer(tcfg);
  const nlohmann::json m = read_json_file((fs::path(up.transformer_dir) / "metrics.json").string());
  up.transformer = {{"dir", up.transformer_dir},
                    {"val_acc", m.at("val_acc")},
                    {"train_acc", m.at("train_acc")},
                    {"grok_epoch", m.at("grok_epoch")},
                    {"epochs", m.at("epochs")}};
  const double val_acc = m.at("val_acc").get<double>();
  if (val_acc < 0.99) {
    const std::string what = fmt::format(
        "the transformer reached held-out accuracy {:.4f} < 0.99: it has not generalised, so its SAE "
        "features "
        "would describe memorisation",
        val_acc);
    if (!allow_ungrokked) throw Error(what + " (set experiment.allow_ungrokked=true to study it anyway)");
    ctx.log("warning: " + what);
  }
  up.activations_path = ctx.activations(up.transformer_dir, extract_spec_from(ctx.config()));
  return up;
}

nlohmann::json SaeSettings::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  if (architecture) j["sae.architecture"] = *architecture;
  if (d_sae) j["sae.d_sae"] = *d_sae;
  if (k) j["sae.k"] = *k;
  if (l1_coefficient) j["sae.l1_coefficient"] = *l1_coefficient;
  if (steps) j["training.steps"] = *steps;
  if (seeds) j["training.seeds"] = *seeds;
  if (consistency_reference) j["consistency.reference"] = *consistency_reference;
  if (consistency_lambda) j["consistency.lambda"] = *consistency_lambda;
  return j;
}

Config sae_config_with(const Config& experiment_config, const SaeSettings& settings) {
  Config c = sub_config(experiment_config, "sae", sae_config_schema());
  const nlohmann::json values = settings.to_json();  // named: items() does not keep a temporary alive
  for (const auto& [key, value] : values.items()) c.set(key, value, "experiment condition");
  c.validate();
  return c;
}

nlohmann::json sae_run_metrics(const std::string& sae_run_dir, const std::vector<int64_t>& seeds) {
  nlohmann::json per_seed = nlohmann::json::array();
  std::vector<double> ev, ev_train, drop, mse, l0, dead;
  double wall = 0;
  for (const int64_t seed : seeds) {
    const std::string path = SaeRunLayout(sae_run_dir).seed_metrics(seed);
    const nlohmann::json m = read_json_file(path);
    const nlohmann::json& h = m.at("held_out");
    const nlohmann::json& t = m.at("train_rows");
    const double e = json_number_or_nan(h, "explained_variance");
    const double et = json_number_or_nan(t, "explained_variance");
    ev.push_back(e);
    ev_train.push_back(et);
    drop.push_back(et - e);
    mse.push_back(json_number_or_nan(h, "mse"));
    l0.push_back(json_number_or_nan(h, "l0"));
    dead.push_back(json_number_or_nan(h, "frac_dead"));
    wall = std::max(wall, json_number_or_nan(m, "wall_time_s"));
    per_seed.push_back({{"seed", seed},
                        {"ev_held_out", e},
                        {"ev_train_rows", et},
                        {"ev_drop", et - e},
                        {"mse", mse.back()},
                        {"l0", l0.back()},
                        {"frac_dead", dead.back()}});
  }
  return {{"per_seed", per_seed},
          {"mean",
           {{"ev_held_out", mean_or_nan(ev)},
            {"ev_train_rows", mean_or_nan(ev_train)},
            {"ev_drop", mean_or_nan(drop)},
            {"mse", mean_or_nan(mse)},
            {"l0", mean_or_nan(l0)},
            {"frac_dead", mean_or_nan(dead)},
            {"wall_time_s", wall}}}};
}

nlohmann::json sae_run_splice_metrics(const std::string& sae_run_dir, const std::vector<int64_t>& seeds,
                                      const std::string& activations_path,
                                      const std::string& transformer_dir) {
  nlohmann::json per_seed = nlohmann::json::array();
  std::vector<double> ce, kl, acc;
  for (const int64_t seed : seeds) {
    EvalSaeOptions o;
    o.sae_dir = SaeRunLayout(sae_run_dir).seed_dir(seed);
    o.activations_path = activations_path;
    o.model_dir = transformer_dir;
    o.quiet = true;
    const nlohmann::json r = evaluate_sae(o);
    const nlohmann::json& s = r.at("splice");
    ce.push_back(json_number_or_nan(s, "ce_loss_score"));
    kl.push_back(json_number_or_nan(s, "kl_div_score"));
    acc.push_back(json_number_or_nan(s, "accuracy_sae"));
    per_seed.push_back({{"seed", seed},
                        {"ce_loss_score", s.at("ce_loss_score")},
                        {"kl_div_score", s.at("kl_div_score")},
                        {"accuracy_clean", s.at("accuracy_clean")},
                        {"accuracy_sae", s.at("accuracy_sae")},
                        {"accuracy_zero_ablation", s.at("accuracy_zero_ablation")}});
  }
  return {{"per_seed", per_seed},
          {"mean",
           {{"ce_loss_score", mean_or_nan(ce)},
            {"kl_div_score", mean_or_nan(kl)},
            {"accuracy_sae", mean_or_nan(acc)}}}};
}

StabilitySummary summarize(const StabilityStudy& study, const std::string& metric) {
  const MetricStudy& m = study.metric(metric);
  const GroupComparison* d = m.decision();
  if (d == nullptr) {
    throw Error(
        "the stability study has no geometry-matched null (second_moment, axis_reflection or rotation): "
        "a decision needs one (compare.nulls)");
  }
  StabilitySummary s;
  s.metric = metric;
  s.null_name = m.decision_null;
  s.trained = m.trained.estimate;
  s.trained_lo = m.trained.bca.lo;
  s.trained_hi = m.trained.bca.hi;
  s.null_mean = d->group_similarity.estimate;
  s.null_lo = d->group_similarity.bca.lo;
  s.null_hi = d->group_similarity.bca.hi;
  s.delta = d->difference.estimate;
  s.delta_lo = d->difference.bca.lo;
  s.delta_hi = d->difference.bca.hi;
  s.ratio = d->ratio;
  s.p_permutation = d->permutation.p_value_two_sided;
  s.p_holm = d->p_adjusted;
  s.holm_family_size = d->family_size;
  s.cohens_d = d->effect_size_seed_level;
  s.mann_whitney_p = d->reference_mann_whitney.p_value;
  s.verdict_kind = std::string(verdict_name(d->verdict));
  s.verdict = verdict_text(*d, study.confidence);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  s.surrogate_delta = s.surrogate_lo = s.surrogate_hi = s.surrogate_p_holm = nan;
  for (const GroupComparison& c : m.comparisons) {
    s.all_nulls[c.group] = {{"role", std::string(group_role_name(c.role))},
                            {"mean", c.group_similarity.estimate},
                            {"delta", c.difference.estimate},
                            {"delta_lo", c.difference.bca.lo},
                            {"delta_hi", c.difference.bca.hi},
                            {"p_permutation", c.permutation.p_value_two_sided},
                            {"p_holm", c.p_adjusted},
                            {"verdict", std::string(verdict_name(c.verdict))}};
    if (c.role == GroupRole::Surrogate) {
      s.surrogate_delta = c.difference.estimate;
      s.surrogate_lo = c.difference.bca.lo;
      s.surrogate_hi = c.difference.bca.hi;
      s.surrogate_p_holm = c.p_adjusted;
      s.surrogate_verdict_kind = std::string(verdict_name(c.verdict));
      s.surrogate_verdict = verdict_text(c, study.confidence);
    }
  }
  return s;
}

StabilitySummary summarize_stability(const nlohmann::json& stability, const std::string& metric) {
  return summarize(study_from_json(stability), metric);
}

std::string surrogate_caveat(const Config& experiment_config) {
  if (experiment_config.get_string("compare.surrogate") != "none") return "";
  return "\n**What these verdicts can claim.** No surrogate-data control was run (`compare.surrogate: "
         "none`): "
         "*above* means more alike across seeds than the most conservative geometry-matched null, not that "
         "the features reflect the data. SAEs trained on Gaussian data with the activations' mean and "
         "covariance can be as alike or more (TopK k 32 in phase4a); set `compare.surrogate: gaussian` to "
         "test that.\n";
}

ConvergenceReport convergence_report(const std::vector<std::pair<std::string, nlohmann::json>>& curves) {
  ConvergenceReport r;
  if (curves.empty()) {
    r.summary = "No snapshots were kept (training.stability_checkpoints).\n";
    r.markdown = r.summary;
    return r;
  }
  auto v = [](const nlohmann::json& x) { return x.is_number() ? x.get<double>() : std::nan(""); };
  r.markdown =
      "Decoder `pwmcc` across the seeds at the run's snapshots (fractions of training) and at the end. "
      "Plateau test: the BCa interval of the last change (final minus the previous snapshot, paired over "
      "seed pairs) must lie inside +-margin (an equivalence test); held-out EV plateauing says nothing about "
      "this.\n\n| SAE | step | fraction | pwmcc (CI) | matched_mean_cos (CI) |\n|---|---|---|---|---|\n";
  std::string plot = "plot ";
  for (size_t i = 0; i < curves.size(); ++i) {
    const auto& [name, cv] = curves[i];
    r.figure_data += fmt::format("$c{} << EOD\n", i);
    for (const nlohmann::json& pt : cv["points"]) {
      r.markdown += fmt::format(
          "| {} | {} | {:.3f} | {} {} | {} {} |\n", name, pt["step"].get<int64_t>(),
          pt["fraction"].get<double>(), fmt_num(v(pt["pwmcc"])),
          fmt_ci(v(pt["pwmcc_ci_bca"][0]), v(pt["pwmcc_ci_bca"][1])), fmt_num(v(pt["matched_mean_cos"])),
          fmt_ci(v(pt["matched_mean_cos_ci_bca"][0]), v(pt["matched_mean_cos_ci_bca"][1])));
      r.figure_data += fmt::format("{} {} {} {}\n", pt["step"].get<int64_t>(), v(pt["pwmcc"]),
                                   v(pt["pwmcc_ci_bca"][0]), v(pt["pwmcc_ci_bca"][1]));
    }
    r.figure_data += "EOD\n";
    plot += fmt::format("{}$c{} using 1:2:3:4 with yerrorlines title '{}'", i ? ", " : "", i, name);
    const nlohmann::json& ch = cv["last_change"];
    r.summary += fmt::format("- {}: last change of pwmcc {:+.4f} {}: {} (margin +-{}).\n", name,
                             v(ch["estimate"]), fmt_ci(v(ch["ci_bca"][0]), v(ch["ci_bca"][1])),
                             cv["plateaued"].get<bool>() ? "plateaued" : "NOT shown to have plateaued",
                             cv["margin"].get<double>());
    r.last_change.emplace_back(name, v(ch["estimate"]));
  }
  r.markdown += "\n" + r.summary;
  r.figure_data +=
      "set xlabel 'step'\nset ylabel 'pwmcc'\nset logscale x 2\nset grid\nset key bottom right\n" + plot +
      "\n";
  return r;
}

std::vector<StabilityStudy> load_experiment_studies(
    const std::string& run_dir, const std::vector<std::string>& files,
    std::vector<std::pair<std::string, int64_t>>* family_sizes, std::vector<nlohmann::json>* documents) {
  std::vector<StabilityStudy> studies;
  studies.reserve(files.size());
  if (documents != nullptr) documents->clear();
  for (const std::string& f : files) {
    nlohmann::json doc = read_json_file((fs::path(run_dir) / f).string());
    studies.push_back(study_from_json(doc));
    if (documents != nullptr) documents->push_back(std::move(doc));
  }
  std::vector<StabilityStudy*> ptrs;
  ptrs.reserve(studies.size());
  for (StabilityStudy& s : studies) ptrs.push_back(&s);
  const auto sizes = holm_across_studies(ptrs);
  if (family_sizes != nullptr) *family_sizes = sizes;
  return studies;
}

nlohmann::json to_json(const StabilitySummary& s) {
  return {{"metric", s.metric},
          {"null", s.null_name},
          {"trained", s.trained},
          {"trained_ci", {s.trained_lo, s.trained_hi}},
          {"null_mean", s.null_mean},
          {"null_ci", {s.null_lo, s.null_hi}},
          {"delta", s.delta},
          {"delta_ci", {s.delta_lo, s.delta_hi}},
          {"ratio", s.ratio},
          {"p_permutation", s.p_permutation},
          {"p_holm", s.p_holm},
          {"holm_family_size", s.holm_family_size},
          {"cohens_d_seed_level", s.cohens_d},
          {"mann_whitney_p", s.mann_whitney_p},
          {"verdict_kind", s.verdict_kind},
          {"verdict", s.verdict},
          {"surrogate",
           {{"delta", s.surrogate_delta},
            {"delta_ci", {s.surrogate_lo, s.surrogate_hi}},
            {"p_holm", s.surrogate_p_holm},
            {"verdict_kind", s.surrogate_verdict_kind},
            {"verdict", s.surrogate_verdict}}},
          {"all_nulls", s.all_nulls}};
}

StabilitySummary stability_from_json(const nlohmann::json& j) {
  auto d = [](const nlohmann::json& v) {
    return v.is_null() ? std::numeric_limits<double>::quiet_NaN() : v.get<double>();
  };
  StabilitySummary s;
  s.metric = j.at("metric").get<std::string>();
  s.null_name = j.at("null").get<std::string>();
  s.trained = d(j.at("trained"));
  s.trained_lo = d(j.at("trained_ci")[0]);
  s.trained_hi = d(j.at("trained_ci")[1]);
  s.null_mean = d(j.at("null_mean"));
  s.null_lo = d(j.at("null_ci")[0]);
  s.null_hi = d(j.at("null_ci")[1]);
  s.delta = d(j.at("delta"));
  s.delta_lo = d(j.at("delta_ci")[0]);
  s.delta_hi = d(j.at("delta_ci")[1]);
  s.ratio = d(j.at("ratio"));
  s.p_permutation = d(j.at("p_permutation"));
  s.p_holm = d(j.at("p_holm"));
  // Keys added with stability.json schema 2 default when absent (summaries stored by an older husai).
  const double nan = std::numeric_limits<double>::quiet_NaN();
  s.holm_family_size = j.value("holm_family_size", int64_t{0});
  s.cohens_d = j.contains("cohens_d_seed_level") ? d(j["cohens_d_seed_level"]) : nan;
  s.mann_whitney_p = j.contains("mann_whitney_p") ? d(j["mann_whitney_p"]) : nan;
  s.verdict_kind = j.value("verdict_kind", std::string());
  s.verdict = j.at("verdict").get<std::string>();
  s.surrogate_delta = s.surrogate_lo = s.surrogate_hi = s.surrogate_p_holm = nan;
  if (j.contains("surrogate") && j["surrogate"].is_object()) {
    const nlohmann::json& sur = j["surrogate"];
    s.surrogate_delta = d(sur.at("delta"));
    s.surrogate_lo = d(sur.at("delta_ci")[0]);
    s.surrogate_hi = d(sur.at("delta_ci")[1]);
    s.surrogate_p_holm = d(sur.at("p_holm"));
    s.surrogate_verdict_kind = sur.at("verdict_kind").get<std::string>();
    s.surrogate_verdict = sur.at("verdict").get<std::string>();
  }
  s.all_nulls = j.value("all_nulls", nlohmann::json::object());
  return s;
}

std::string csv_text(const std::vector<std::string>& header,
                     const std::vector<std::vector<nlohmann::json>>& rows) {
  auto cell = [](const nlohmann::json& v) -> std::string {
    if (v.is_string()) {
      std::string s = v.get<std::string>();
      if (s.find_first_of(",\"\n") == std::string::npos) return s;
      std::string q = "\"";
      for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
      return q + "\"";
    }
    if (v.is_null()) return "";
    if (v.is_number_float()) {
      const double d = v.get<double>();
      return std::isfinite(d) ? fmt::format("{:.17g}", d) : "";
    }
    return v.dump();
  };
  std::string s;
  for (size_t i = 0; i < header.size(); ++i) s += (i ? "," : "") + header[i];
  s += "\n";
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) s += (i ? "," : "") + cell(row[i]);
    s += "\n";
  }
  return s;
}

}  // namespace husai
