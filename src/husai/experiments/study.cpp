#include "husai/experiments/study.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include <fmt/format.h>

#include "husai/core/error.hpp"
#include "husai/io/json_file.hpp"
#include "husai/metrics/sae_eval.hpp"
#include "husai/train/sae_run.hpp"
#include "husai/train/transformer_config.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

double num(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return std::numeric_limits<double>::quiet_NaN();
  return j[key].get<double>();
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? std::numeric_limits<double>::quiet_NaN() : s / static_cast<double>(v.size());
}

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

Config sae_config_with(const Config& experiment_config, const nlohmann::json& overrides) {
  Config c = sub_config(experiment_config, "sae", sae_config_schema());
  for (const auto& [key, value] : overrides.items()) c.set(key, value, "experiment condition");
  c.validate();
  return c;
}

nlohmann::json sae_run_metrics(const std::string& sae_run_dir, const std::vector<int64_t>& seeds) {
  nlohmann::json per_seed = nlohmann::json::array();
  std::vector<double> ev, ev_train, drop, mse, l0, dead;
  double wall = 0;
  for (const int64_t seed : seeds) {
    const std::string path =
        (fs::path(sae_run_dir) / ("seed" + std::to_string(seed)) / "metrics.json").string();
    const nlohmann::json m = read_json_file(path);
    const nlohmann::json& h = m.at("held_out");
    const nlohmann::json& t = m.at("train_rows");
    const double e = num(h, "explained_variance");
    const double et = num(t, "explained_variance");
    ev.push_back(e);
    ev_train.push_back(et);
    drop.push_back(et - e);
    mse.push_back(num(h, "mse"));
    l0.push_back(num(h, "l0"));
    dead.push_back(num(h, "frac_dead"));
    wall = std::max(wall, num(m, "wall_time_s"));
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
           {{"ev_held_out", mean_of(ev)},
            {"ev_train_rows", mean_of(ev_train)},
            {"ev_drop", mean_of(drop)},
            {"mse", mean_of(mse)},
            {"l0", mean_of(l0)},
            {"frac_dead", mean_of(dead)},
            {"wall_time_s", wall}}}};
}

nlohmann::json sae_run_splice_metrics(const std::string& sae_run_dir, const std::vector<int64_t>& seeds,
                                      const std::string& activations_path,
                                      const std::string& transformer_dir) {
  nlohmann::json per_seed = nlohmann::json::array();
  std::vector<double> ce, kl, acc;
  for (const int64_t seed : seeds) {
    EvalSaeOptions o;
    o.sae_dir = (fs::path(sae_run_dir) / ("seed" + std::to_string(seed))).string();
    o.activations_path = activations_path;
    o.model_dir = transformer_dir;
    o.quiet = true;
    const nlohmann::json r = evaluate_sae(o);
    const nlohmann::json& s = r.at("splice");
    ce.push_back(num(s, "ce_loss_score"));
    kl.push_back(num(s, "kl_div_score"));
    acc.push_back(num(s, "accuracy_sae"));
    per_seed.push_back({{"seed", seed},
                        {"ce_loss_score", s.at("ce_loss_score")},
                        {"kl_div_score", s.at("kl_div_score")},
                        {"accuracy_clean", s.at("accuracy_clean")},
                        {"accuracy_sae", s.at("accuracy_sae")},
                        {"accuracy_zero_ablation", s.at("accuracy_zero_ablation")}});
  }
  return {{"per_seed", per_seed},
          {"mean",
           {{"ce_loss_score", mean_of(ce)}, {"kl_div_score", mean_of(kl)}, {"accuracy_sae", mean_of(acc)}}}};
}

// The layout of stability.json is compare's (docs/formats.md, "husai compare"): summary.<metric>.trained and
// summary.<metric>.nulls.<name>, the decision null in primary_null.name. This is the only reader.
StabilitySummary summarize_stability(const nlohmann::json& stability, const std::string& metric) {
  auto d = [](const nlohmann::json& v) {
    return v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
  };
  StabilitySummary s;
  s.metric = metric;
  if (!stability.contains("summary") || !stability["summary"].contains(metric)) {
    throw Error("stability.json has no summary for metric '" + metric + "'");
  }
  const nlohmann::json& entry = stability["summary"][metric];
  const nlohmann::json& nulls = entry.at("nulls");
  if (!stability.contains("primary_null") || stability["primary_null"].is_null() || nulls.empty()) {
    throw Error("stability.json has no null baseline: a decision needs one (compare.nulls)");
  }
  s.null_name = stability["primary_null"].at("name").get<std::string>();
  if (!nulls.contains(s.null_name)) {
    throw Error("stability.json names primary null '" + s.null_name + "' but has no summary for it");
  }
  for (const auto& [null_name, ne] : nulls.items()) {
    const nlohmann::json& diff = ne.at("difference");
    s.all_nulls[null_name] = {{"mean", ne.at("mean")},
                              {"delta", diff.at("estimate")},
                              {"delta_lo", diff.at("ci_bca")[0]},
                              {"delta_hi", diff.at("ci_bca")[1]},
                              {"p_permutation", ne.at("permutation").at("p_value")},
                              {"p_holm", ne.at("permutation").at("p_holm")},
                              {"verdict", ne.at("verdict")}};
  }
  const nlohmann::json& tr = entry.at("trained");
  const nlohmann::json& ne = nulls.at(s.null_name);
  s.trained = d(tr.at("mean"));
  s.trained_lo = d(tr.at("ci_bca")[0]);
  s.trained_hi = d(tr.at("ci_bca")[1]);
  s.null_mean = d(ne.at("mean"));
  s.null_lo = d(ne.at("ci_bca")[0]);
  s.null_hi = d(ne.at("ci_bca")[1]);
  s.delta = d(ne.at("difference").at("estimate"));
  s.delta_lo = d(ne.at("difference").at("ci_bca")[0]);
  s.delta_hi = d(ne.at("difference").at("ci_bca")[1]);
  s.ratio = d(ne.at("ratio"));
  s.p_permutation = d(ne.at("permutation").at("p_value"));
  s.p_holm = d(ne.at("permutation").at("p_holm"));
  s.cohens_d = d(ne.at("cohens_d"));
  s.mann_whitney_p = d(ne.at("mann_whitney").at("p_value"));
  s.verdict = ne.at("verdict").get<std::string>();
  return s;
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
          {"cohens_d", s.cohens_d},
          {"mann_whitney_p", s.mann_whitney_p},
          {"verdict", s.verdict},
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
  s.cohens_d = d(j.at("cohens_d"));
  s.mann_whitney_p = d(j.at("mann_whitney_p"));
  s.p_holm = d(j.at("p_holm"));
  s.verdict = j.at("verdict").get<std::string>();
  s.all_nulls = j.at("all_nulls");
  return s;
}

std::string fmt_num(double v, int digits) {
  if (std::isnan(v)) return "n/a";
  return fmt::format("{:.{}f}", v, digits);
}

std::string fmt_ci(double lo, double hi, int digits) {
  return "[" + fmt_num(lo, digits) + ", " + fmt_num(hi, digits) + "]";
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
