#include "husai/experiments/demo.hpp"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/core/version.hpp"
#include "husai/experiments/catalog.hpp"
#include "husai/experiments/study.hpp"
#include "husai/io/json_file.hpp"
#include "husai/io/manifest.hpp"
#include "husai/io/safetensors.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

// One SAE family of phase4a's results, as the report shows it. (clang-tidy sees nlohmann::json's move
// constructor, whose invariant check may throw, behind the implicit noexcept move.)
// NOLINTNEXTLINE(bugprone-exception-escape)
struct Family {
  std::string name;          // "topk", "relu"
  std::string label;         // "TopK (k 32)", ...
  nlohmann::json condition;  // results.json conditions.<name>
  nlohmann::json stability;  // compare/<name>/stability.json
};

std::string num(const nlohmann::json& v, const char* format = "{:.4f}") {
  return v.is_number() ? fmt::format(fmt::runtime(format), v.get<double>()) : std::string("n/a");
}

std::string pct(const nlohmann::json& v) {
  return v.is_number() ? fmt::format("{:.1f}%", 100.0 * v.get<double>()) : std::string("n/a");
}

std::string ci(const nlohmann::json& pair) {
  if (!pair.is_array() || pair.size() != 2) return "n/a";
  const auto d = [](const nlohmann::json& v) {
    return v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
  };
  return fmt_ci(d(pair[0]), d(pair[1]));
}

std::string p_text(const nlohmann::json& v) {
  if (!v.is_number()) return "n/a";
  const double p = v.get<double>();
  return p < 1e-3 ? fmt::format("{:.1e}", p) : fmt::format("{:.4f}", p);
}

// Copies `src` to DIR/figures/<name> when it exists (a cached transformer or a resumed comparison may have
// been made with figures off) and records it in `copied`: the report links only what is there.
void copy_figure(const fs::path& src, const fs::path& dir, const std::string& name,
                 std::set<std::string>& copied) {
  if (!fs::exists(src)) return;
  write_file_atomic((dir / "figures" / name).string(), read_file(src.string()));
  copied.insert(name);
}

std::string family_section(const Family& f, const std::string& prefix, const std::string& phase4a_rel,
                           const std::set<std::string>& figures) {
  const nlohmann::json& st = f.stability;
  const std::string primary = st["primary_null"]["name"].get<std::string>();
  std::string s;
  s += fmt::format("### {}\n\n", f.label);
  s += "| metric | trained mean [95% BCa CI] |";
  const std::vector<std::string> nulls = st["settings"]["nulls"].get<std::vector<std::string>>();
  for (const std::string& n : nulls) s += fmt::format(" {} null |", n);
  s += fmt::format(" trained - {} [CI] | ratio | permutation p (Holm) |\n|---|---|", primary);
  for (size_t i = 0; i < nulls.size(); ++i) s += "---|";
  s += "---|---|---|\n";
  for (const char* metric : {"pwmcc", "matched_mean_cos", "shared_frac_05", "shared_frac_07", "pwmcc_enc"}) {
    const nlohmann::json& m = st["summary"][metric];
    s += fmt::format("| `{}` | {} {} |", metric, num(m["trained"]["mean"]), ci(m["trained"]["ci_bca"]));
    for (const std::string& n : nulls) s += fmt::format(" {} |", num(m["nulls"][n]["mean"]));
    const nlohmann::json& pn = m["nulls"][primary];
    s += fmt::format(" {} {} | {} | {} |\n", num(pn["difference"]["estimate"], "{:+.4f}"),
                     ci(pn["difference"]["ci_bca"]), num(pn["ratio"], "{:.3f}"),
                     p_text(pn["permutation"]["p_holm"]));
  }
  s += "\n";
  s += fmt::format("Verdict (`pwmcc`, the reference's max-based score, phase4a's decision metric): {}.\n\n",
                   st["summary"]["pwmcc"]["nulls"][primary]["verdict"].get<std::string>());
  s += fmt::format("Verdict (`matched_mean_cos`, the PW-MCC of Song et al. 2025): {}.\n\n",
                   st["summary"]["matched_mean_cos"]["nulls"][primary]["verdict"].get<std::string>());
  std::string links;
  for (const auto& [fig, alt] : {std::pair<std::string, std::string>{"trained_vs_nulls", "trained vs nulls"},
                                 {"per_feature_hist", "per-feature stability"}}) {
    const std::string name = f.name + "_" + fig + ".png";
    if (figures.count(name) != 0) links += fmt::format("![{}]({}figures/{}) ", alt, prefix, name);
  }
  if (!links.empty()) s += links.substr(0, links.size() - 1) + "\n\n";
  s += fmt::format("Full tables: [`{0}compare/{1}/summary.md`]({0}compare/{1}/summary.md).\n\n", phase4a_rel,
                   f.name);
  return s;
}

// What the report is written from (NOLINT: as Family).
// NOLINTNEXTLINE(bugprone-exception-escape)
struct ReportInputs {
  nlohmann::json config;               // phase4a's resolved config
  nlohmann::json results;              // phase4a's results.json
  nlohmann::json transformer_metrics;  // the transformer run's metrics.json
  bool transformer_reused = false;
  std::map<std::string, std::string> activation_metadata;
  int64_t activation_rows = 0, d_model = 0;
  std::vector<Family> families;
  std::string run_id;
  std::set<std::string> figures;  // files copied to DEMO/figures/ (only those are linked)
  bool resumed = false;           // the phase4a run was continued with --resume
  double wall_s = 0;
};

std::string report_text(const ReportInputs& in, const std::string& prefix, const std::string& phase4a_rel) {
  const nlohmann::json& r = in.config;
  const nlohmann::json& t = in.transformer_metrics;
  const nlohmann::json& p = r["phase4a"];
  std::string s;
  s += "# husai demo report\n\n";
  s += fmt::format(
      "Run `{}` (husai {} built from git {}{}); {:.0f} s end to end{}. The study is the `phase4a` "
      "experiment: "
      "its run folder [`{}`]({}) holds config.json, results.json, summary.md, CSVs, the manifest and every "
      "comparison.\n\n",
      in.run_id, version(), std::string(git_commit()).substr(0, 12),
      git_dirty() ? " with uncommitted changes" : "", in.wall_s,
      in.resumed ? " (this attempt only: the run was resumed)" : "", phase4a_rel, phase4a_rel + "summary.md");

  s += "## 1. The transformer groks modular arithmetic\n\n";
  const nlohmann::json& tr = r["transformer"];
  s += fmt::format(
      "Task: (a {} b) mod {}, format `{}`; the answer is scored at the `=` position, which never sees the "
      "answer token. Model: {} layers, d_model {}, {} heads, d_mlp {}, {}, normalization {}.\n\n",
      tr["task"]["operation"].get<std::string>(), tr["task"]["modulus"].get<int64_t>(),
      tr["task"]["format"].get<std::string>(), tr["model"]["n_layers"].get<int64_t>(),
      tr["model"]["d_model"].get<int64_t>(), tr["model"]["n_heads"].get<int64_t>(),
      tr["model"]["d_mlp"].get<int64_t>(), tr["model"]["act_fn"].get<std::string>(),
      tr["model"]["normalization_type"].get<std::string>());
  s += "| metric | value |\n|---|---|\n";
  s += fmt::format("| epochs | {} |\n", t["epochs"].get<int64_t>());
  s += fmt::format("| train fraction | {} |\n", tr["training"]["train_fraction"].get<double>());
  s += fmt::format("| train accuracy | {:.4f} |\n", t["train_acc"].get<double>());
  s += fmt::format("| held-out accuracy | {:.4f} |\n", t["val_acc"].get<double>());
  s += fmt::format("| held-out loss | {:.4g} |\n", t["val_loss"].get<double>());
  s += fmt::format(
      "| grok epoch (first epoch with held-out accuracy >= 0.99) | {} |\n",
      t["grok_epoch"].is_number() ? std::to_string(t["grok_epoch"].get<int64_t>()) : "not reached");
  s += fmt::format("| training wall time | {:.1f} s{} |\n\n", t["wall_time_s"].get<double>(),
                   in.transformer_reused ? " (earlier; reused from the artifact cache in this run)" : "");
  if (in.figures.count("grokking.png") != 0) {
    s += fmt::format("![grokking curve]({}figures/grokking.png)\n\n", prefix);
  }
  s += t["val_acc"].get<double>() >= 0.99
           ? "Verdict: the model generalises to pairs it never trained on (held-out accuracy >= 0.99).\n\n"
           : "Verdict: the model has NOT generalised (held-out accuracy < 0.99); SAE features learned on it "
             "would describe memorisation (experiment.allow_ungrokked was set).\n\n";

  s += "## 2. Activations\n\n";
  const auto meta = [&](const char* key) {
    const auto it = in.activation_metadata.find(key);
    return it == in.activation_metadata.end() ? std::string("?") : it->second;
  };
  s += fmt::format("`{}`: {} rows (every pair (a, b)) x {} at `{}`, position `{}`.\n\n",
                   in.results["activations"].get<std::string>(), in.activation_rows, in.d_model,
                   meta("hook_name"), meta("position"));

  s += fmt::format("## 3. SAEs on {} seeds\n\n", p["seeds"].size());
  s += fmt::format(
      "Seeds {}; d_sae {} on d_in {}; each family trained in one pass over the data ({} steps); metrics on "
      "the 10% of rows held out from SAE training (mean over seeds){}.\n\n",
      fmt::join(p["seeds"].get<std::vector<int64_t>>(), ", "), p["d_sae"].get<int64_t>(), in.d_model,
      r["sae"]["training"]["steps"].get<int64_t>(),
      r["experiment"]["splice"].get<bool>()
          ? ", CE-loss and KL scores with the SAE spliced into the transformer over all p^2 pairs "
            "(zero-ablation baseline)"
          : "; no splicing into the transformer (experiment.splice=false)");
  s += "| SAE | L0 | explained variance | dead fraction | CE loss score | KL div score | answer acc "
       "(spliced) | train time |\n|---|---|---|---|---|---|---|---|\n";
  for (const Family& f : in.families) {
    const nlohmann::json& m = f.condition["metrics"]["mean"];
    const nlohmann::json sp =
        f.condition.contains("splice") ? f.condition["splice"]["mean"] : nlohmann::json();
    s += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} s |\n", f.label, num(m["l0"], "{:.1f}"),
                     num(m["ev_held_out"]), num(m["frac_dead"], "{:.3f}"),
                     sp.is_object() ? num(sp["ce_loss_score"]) : "n/a",
                     sp.is_object() ? num(sp["kl_div_score"]) : "n/a",
                     sp.is_object() ? num(sp["accuracy_sae"]) : "n/a", num(m["wall_time_s"], "{:.0f}"));
  }
  if (in.results.contains("relu_tuning")) {
    const nlohmann::json& tu = in.results["relu_tuning"];
    s += fmt::format(
        "\nThe ReLU SAEs' L1 coefficient was tuned so that their held-out L0 matches TopK's k: {} tuning "
        "runs of {} steps on seed {} (not an evaluated seed), then {} run(s) of the evaluated seeds, chose "
        "{:.4g}.\n",
        tu["trials"].size(), tu["steps"].get<int64_t>(), tu["seed"].get<int64_t>(),
        tu.value("evaluated", nlohmann::json::array()).size(), tu["l1_coefficient"].get<double>());
    if (in.results.contains("relu_l0_match")) {
      const nlohmann::json& mt = in.results["relu_l0_match"];
      s += mt["within_tolerance"].get<bool>()
               ? fmt::format("Their mean held-out L0 is {:.2f} (target {:.1f}, within {:.3g}%).\n",
                             mt["achieved"].get<double>(), mt["target"].get<double>(),
                             100 * mt["tolerance"].get<double>())
               : fmt::format(
                     "**WARNING: their mean held-out L0 is {:.2f}, outside {:.3g}% of the target {:.1f}: the "
                     "families are compared at different sparsities.**\n",
                     mt["achieved"].get<double>(), 100 * mt["tolerance"].get<double>(),
                     mt["target"].get<double>());
    }
  }

  s += "\n## 4. Are the features real, or an accident of the seed?\n\n";
  s += "For each pair of seeds, decoder rows are matched (`pwmcc`: best |cos| each way; `matched_mean_cos`: "
       "optimal one-to-one matching) and compared with null dictionaries of the same shape: `gaussian` "
       "(isotropic), `untrained` (the SAE's initialisation, never trained) and `covariance` (drawn from the "
       "activations' covariance: chance alignment for vectors living where the data lives). Intervals "
       "resample seeds, not pairs; p-values permute seed labels (one-sided: trained above the null), "
       "Holm-corrected over the three nulls.\n\n";
  for (const Family& f : in.families) s += family_section(f, prefix, phase4a_rel, in.figures);

  s += "## 5. In plain words\n\n";
  for (const Family& f : in.families) {
    const nlohmann::json& st = f.stability;
    const std::string primary = st["primary_null"]["name"].get<std::string>();
    const nlohmann::json& m = st["summary"]["pwmcc"];
    const nlohmann::json& pn = m["nulls"][primary];
    s += fmt::format(
        "- **{}**: each feature's best match in another seed has mean |cos| {} (95% CI {}), against {} for "
        "the {} null (difference {} {}); {} of optimally matched features agree at |cos| >= 0.7. Verdict: "
        "{}.\n",
        f.label, num(m["trained"]["mean"]), ci(m["trained"]["ci_bca"]), num(pn["mean"]), primary,
        num(pn["difference"]["estimate"], "{:+.4f}"), ci(pn["difference"]["ci_bca"]),
        pct(st["summary"]["shared_frac_07"]["trained"]["mean"]), pn["verdict"].get<std::string>());
  }
  s += fmt::format(
      "\nFiles: the SAEs are SAELens folders in the artifact cache (paths in "
      "[`{0}results.json`]({0}results.json)), "
      "every comparison has `stability.json`, CSVs and figures under `{0}compare/`; formats in "
      "docs/formats.md. `make release-gate` and `make audit` read this run as the latest phase4a.\n",
      phase4a_rel);
  return s;
}

}  // namespace

ConfigSchema demo_config_schema() {
  return phase4a_experiment().schema();
}

DemoResult run_demo(const Config& config, const DemoOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const ExperimentDef def = phase4a_experiment();
  ExperimentOptions eo;
  eo.root = options.root;
  eo.resume = options.resume;
  eo.quiet = options.quiet;
  eo.figures = options.figures;
  const ExperimentRunResult run = run_experiment(def, config, eo);

  const fs::path phase4a_dir = run.run_dir;
  ReportInputs in;
  in.run_id = run.run_id;
  in.resumed = run.resumed;
  in.config = read_json_file((phase4a_dir / "config.json").string());
  in.results = read_json_file((phase4a_dir / "results.json").string());
  const nlohmann::json manifest4a = read_json_file((phase4a_dir / "manifest.json").string());
  const fs::path transformer_dir = in.results["transformer"]["dir"].get<std::string>();
  in.transformer_metrics = read_json_file((transformer_dir / "metrics.json").string());
  for (const nlohmann::json& e : manifest4a.value("cache", nlohmann::json::array())) {
    if (e.value("kind", "") == "transformer") in.transformer_reused = e.value("reused", false);
  }
  const std::string acts = in.results["activations"].get<std::string>();
  {
    const SafetensorsFile f = SafetensorsFile::load(acts);
    in.activation_metadata = f.metadata;
    const TensorData& a = f.get("activations");
    in.activation_rows = a.shape.at(0);
    in.d_model = a.shape.at(1);
  }
  const nlohmann::json& p = in.config["phase4a"];
  for (const char* name : {"topk", "relu"}) {
    if (!in.results["conditions"].contains(name)) continue;
    const nlohmann::json& cond = in.results["conditions"][name];
    Family f;
    f.name = name;
    if (f.name == "topk") {
      f.label = fmt::format("TopK (k {})", p["k"].get<int64_t>());
    } else {
      f.label = fmt::format("ReLU + L1 {:.3g} (L0 tuned to {:.0f})",
                            in.results["relu_tuning"]["l1_coefficient"].get<double>(),
                            in.results["relu_tuning"]["target_l0"].get<double>());
    }
    f.condition = cond;
    f.stability = read_json_file((phase4a_dir / cond["stability_file"].get<std::string>()).string());
    in.families.push_back(f);
  }

  // Everything is written to a hidden staging folder and renamed into place at the end, so a demo that fails
  // here leaves no half-written ROOT/demo/<run_id>/.
  const fs::path demo_root = fs::path(options.root) / "demo";
  const fs::path demo_dir = demo_root / run.run_id;
  const fs::path stage = demo_root / ("." + run.run_id + ".partial");
  if (fs::exists(demo_dir))
    throw Error(demo_dir.string() + ": already exists; a demo folder is never overwritten");
  fs::remove_all(stage);
  ensure_directory(stage.string());
  if (options.figures) {
    ensure_directory((stage / "figures").string());
    copy_figure(transformer_dir / "grokking.png", stage, "grokking.png", in.figures);
    copy_figure(transformer_dir / "grokking.svg", stage, "grokking.svg", in.figures);
    for (const Family& f : in.families) {
      for (const char* fig : {"trained_vs_nulls", "per_feature_hist", "pairwise_heatmap"}) {
        for (const char* ext : {".png", ".svg"}) {
          copy_figure(phase4a_dir / "compare" / f.name / (std::string(fig) + ext), stage,
                      f.name + "_" + fig + ext, in.figures);
        }
      }
    }
  }
  in.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  DemoResult result;
  result.run_dir = demo_dir.string();
  result.phase4a_run_dir = phase4a_dir.string();
  result.activations_path = acts;
  result.report_path = (demo_dir / "REPORT.md").string();
  result.latest_report_path = (demo_root / "REPORT.md").string();
  result.wall_time_s = in.wall_s;
  result.exit_code = run.exit_code;
  const std::string rel4a = fs::relative(phase4a_dir, demo_dir).generic_string() + "/";
  const std::string rel4a_latest = fs::relative(phase4a_dir, demo_root).generic_string() + "/";
  write_file_atomic((stage / "REPORT.md").string(), report_text(in, "", rel4a));
  write_file_atomic((stage / "config.json").string(), in.config.dump(2) + "\n");

  Manifest manifest;
  manifest.command = command_line();
  manifest.config_hash = manifest4a.value("config_hash", "");
  manifest.extra = {
      {"phase4a_run", phase4a_dir.string()}, {"run_id", run.run_id}, {"wall_time_s", in.wall_s}};
  manifest.add_input((phase4a_dir / "results.json").string());
  manifest.add_input((phase4a_dir / "manifest.json").string());
  for (const Family& f : in.families) {
    manifest.add_input((phase4a_dir / f.condition["stability_file"].get<std::string>()).string());
  }
  manifest.add_input((transformer_dir / "metrics.json").string());
  manifest.add_output(stage.string(), "REPORT.md");
  manifest.add_output(stage.string(), "config.json");
  for (const std::string& name : in.figures) manifest.add_output(stage.string(), "figures/" + name);
  manifest.write(stage.string());
  fs::rename(stage, demo_dir);
  // The latest report last: ROOT/demo/REPORT.md names a complete run folder.
  write_file_atomic(result.latest_report_path, report_text(in, run.run_id + "/", rel4a_latest));
  return result;
}

}  // namespace husai
