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
#include "husai/experiments/stability_report.hpp"
#include "husai/experiments/study.hpp"
#include "husai/io/json_file.hpp"
#include "husai/io/json_values.hpp"
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
  StabilityStudy study;      // compare/<name>/stability.json, Holm-adjusted across the families as phase4a
  nlohmann::json feature_types;  // its feature_types section (null when absent)
};

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
  const StabilityStudy& st = f.study;
  std::string s;
  s += fmt::format("### {}\n\n", f.label);
  s += "| metric | trained mean [95% BCa CI] |";
  for (const GroupInfo& g : st.groups) s += fmt::format(" {} |", g.name);
  s += " decision null | trained - decision null [CI] | Holm p | verdict |\n|---|---|";
  for (size_t i = 0; i < st.groups.size(); ++i) s += "---|";
  s += "---|---|---|---|\n";
  for (const std::string& metric : tested_metrics()) {
    const MetricStudy& m = st.metric(metric);
    s += fmt::format("| `{}` | {} {} |", metric, fmt_num(m.trained.estimate),
                     fmt_ci(m.trained.bca.lo, m.trained.bca.hi));
    for (const GroupComparison& c : m.comparisons)
      s += fmt::format(" {} |", fmt_num(c.group_similarity.estimate));
    if (const GroupComparison* d = m.decision()) {
      s += fmt::format(" {} | {:+.4f} {} | {} | {} |\n", m.decision_null, d->difference.estimate,
                       fmt_ci(d->difference.bca.lo, d->difference.bca.hi), fmt_num(d->p_adjusted),
                       verdict_name(d->verdict));
    } else {
      s += " - | - | - | - |\n";
    }
  }
  s += "\n";
  for (const char* metric : {"pwmcc", "matched_mean_cos"}) {
    const MetricStudy& m = st.metric(metric);
    if (const GroupComparison* d = m.decision()) {
      s += fmt::format("Verdict (`{}`) against the decision null: {}.\n\n", metric,
                       verdict_text(*d, st.confidence));
    }
    for (const GroupComparison& c : m.comparisons) {
      if (c.role == GroupRole::Surrogate)
        s += fmt::format("Surrogate control (`{}`): {}.\n\n", metric, verdict_text(c, st.confidence));
    }
  }
  if (f.feature_types.is_object()) {
    const nlohmann::json& ft = f.feature_types;
    s += "Feature types (decoder atoms; details in the compare folder's summary.md): ";
    for (const nlohmann::json& l : ft["by_label"]) {
      s += fmt::format("{} {} latents, mean stability {}; ", l["label"].get<std::string>(),
                       l["count"].get<int64_t>(),
                       l["mean_stability"].is_number() ? fmt_num(l["mean_stability"].get<double>()) : "n/a");
    }
    s += fmt::format(
        "pwmcc after removing within-SAE duplicates {}. {}.\n\n",
        ft["pwmcc_deduplicated"].is_number() ? fmt_num(ft["pwmcc_deduplicated"].get<double>()) : "n/a",
        ft["verdict"].get<std::string>());
  }
  if (f.condition.contains("convergence")) {
    const nlohmann::json& cv = f.condition["convergence"];
    s += "Stability against training steps (decoder `pwmcc`):";
    for (const nlohmann::json& pt : cv["points"]) {
      s += fmt::format(" step {}: {};", pt["step"].get<int64_t>(),
                       pt["pwmcc"].is_number() ? fmt_num(pt["pwmcc"].get<double>()) : "n/a");
    }
    const nlohmann::json& ch = cv["last_change"];
    s += fmt::format(
        " last change {} {}: {}.\n\n",
        ch["estimate"].is_number() ? fmt::format("{:+.4f}", ch["estimate"].get<double>()) : "n/a",
        fmt_ci(ch["ci_bca"][0].is_number() ? ch["ci_bca"][0].get<double>() : std::nan(""),
               ch["ci_bca"][1].is_number() ? ch["ci_bca"][1].get<double>() : std::nan("")),
        cv["plateaued"].get<bool>() ? "plateaued within the margin" : "NOT shown to have plateaued");
  }
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

// The report's title and the paragraph naming the run, its build and its phase4a run folder.
std::string header_text(const ReportInputs& in, const std::string& phase4a_rel) {
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
  return s;
}

// Section 1: the task, the model, its training metrics, the grokking figure and the verdict.
std::string transformer_section(const ReportInputs& in, const std::string& prefix) {
  const nlohmann::json& r = in.config;
  const nlohmann::json& t = in.transformer_metrics;
  std::string s;
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
  return s;
}

// Section 2: the activation file, its shape and where it was recorded.
std::string activations_section(const ReportInputs& in) {
  std::string s;
  s += "## 2. Activations\n\n";
  const auto meta = [&](const char* key) {
    const auto it = in.activation_metadata.find(key);
    return it == in.activation_metadata.end() ? std::string("?") : it->second;
  };
  s += fmt::format("`{}`: {} rows (every pair (a, b)) x {} at `{}`, position `{}`.\n\n",
                   in.results["activations"].get<std::string>(), in.activation_rows, in.d_model,
                   meta("hook_name"), meta("position"));
  return s;
}

// The ReLU SAEs' L1 tuning and whether their L0 matched TopK's (empty when phase4a did no tuning).
std::string relu_tuning_text(const nlohmann::json& results) {
  std::string s;
  if (results.contains("relu_tuning")) {
    const nlohmann::json& tu = results["relu_tuning"];
    s += fmt::format(
        "\nThe ReLU SAEs' L1 coefficient was tuned so that their held-out L0 matches TopK's k: {} tuning "
        "runs of {} steps on seed {} (not an evaluated seed), then {} run(s) of the evaluated seeds, chose "
        "{:.4g}.\n",
        tu["trials"].size(), tu["steps"].get<int64_t>(), tu["seed"].get<int64_t>(),
        tu.value("evaluated", nlohmann::json::array()).size(), tu["l1_coefficient"].get<double>());
    if (results.contains("relu_l0_match")) {
      const nlohmann::json& mt = results["relu_l0_match"];
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
  return s;
}

// Section 3: the SAE settings, one table row of metrics per family, and the ReLU tuning.
std::string sae_section(const ReportInputs& in) {
  const nlohmann::json& r = in.config;
  const nlohmann::json& p = r["phase4a"];
  std::string s;
  s += fmt::format("## 3. SAEs on {} seeds\n\n", p["seeds"].size());
  s += fmt::format(
      "Seeds {}; d_sae {} on d_in {}; each family trained in one pass over the data ({} steps{}); metrics on "
      "the 10% of rows held out from SAE training (mean over seeds){}.\n\n",
      fmt::join(p["seeds"].get<std::vector<int64_t>>(), ", "), p["d_sae"].get<int64_t>(), in.d_model,
      r["sae"]["training"]["steps"].get<int64_t>(),
      r["sae"]["training"]["steps"].get<int64_t>() == kDemoSaeSteps
          ? ": the demo's reduced size, so that the full controls fit in 10 minutes; `make "
            "reproduce-phase4a` "
            "runs phase4a's 3000"
          : "",
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
    s += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} s |\n", f.label, fmt_json(m["l0"], "{:.1f}"),
                     fmt_json(m["ev_held_out"]), fmt_json(m["frac_dead"], "{:.3f}"),
                     sp.is_object() ? fmt_json(sp["ce_loss_score"]) : "n/a",
                     sp.is_object() ? fmt_json(sp["kl_div_score"]) : "n/a",
                     sp.is_object() ? fmt_json(sp["accuracy_sae"]) : "n/a",
                     fmt_json(m["wall_time_s"], "{:.0f}"));
  }
  s += relu_tuning_text(in.results);
  return s;
}

// Section 4: how reproducibility is tested, then each family's tables, verdicts and figures.
std::string stability_section(const ReportInputs& in, const std::string& prefix,
                              const std::string& phase4a_rel) {
  std::string s;
  s += "\n## 4. Are the features reproducible, and do they reflect the data?\n\n";
  s +=
      "For each pair of seeds, decoder rows are matched (`pwmcc`: best |cos| each way; `matched_mean_cos`: "
      "optimal one-to-one matching) and compared with null dictionaries of the same shape: `gaussian` "
      "(isotropic), `covariance` (drawn from the activations' covariance; a reference only: its atoms "
      "concentrate in the top principal directions more than trained atoms do) and three nulls that keep the "
      "trained dictionary's own geometry (`second_moment`, `axis_reflection`, `rotation`). The decision null "
      "is the most conservative of those three. The surrogate control trains the same SAEs on structureless "
      "Gaussian data with the activations' mean and covariance: features that are data features must be more "
      "reproducible than those. Intervals resample seeds, not pairs; one rule decides every verdict: the "
      "two-sided exact permutation test over seed labels, Holm-adjusted over every null, metric and SAE "
      "family of the run (the surrogate control is its own family).\n\n";
  for (const Family& f : in.families) s += family_section(f, prefix, phase4a_rel, in.figures);
  if (in.figures.count("stability_vs_steps.png") != 0) {
    s += fmt::format("![stability against training steps]({}figures/stability_vs_steps.png)\n\n", prefix);
  }
  return s;
}

// Section 5: each family's pwmcc result in a sentence, the caveat, and where the files are.
std::string plain_words_section(const ReportInputs& in, const std::string& phase4a_rel) {
  std::string s;
  s += "## 5. In plain words\n\n";
  for (const Family& f : in.families) {
    const MetricStudy& m = f.study.metric("pwmcc");
    const GroupComparison* d = m.decision();
    if (d == nullptr) continue;
    s += fmt::format(
        "- **{}**: each feature's best match in another seed has mean |cos| {} (95% CI {}), against {} for "
        "the {} null (difference {:+.4f} {}); {} of optimally matched features agree at |cos| >= 0.7. "
        "Verdict: {} against the decision null.",
        f.label, fmt_num(m.trained.estimate), fmt_ci(m.trained.bca.lo, m.trained.bca.hi),
        fmt_num(d->group_similarity.estimate), m.decision_null, d->difference.estimate,
        fmt_ci(d->difference.bca.lo, d->difference.bca.hi),
        fmt::format("{:.1f}%", 100.0 * f.study.metric("shared_frac_07").trained.estimate),
        verdict_name(d->verdict));
    for (const GroupComparison& c : m.comparisons) {
      if (c.role == GroupRole::Surrogate) {
        s += fmt::format(" Against SAEs trained on surrogate data: {} (difference {:+.4f} {}).",
                         verdict_name(c.verdict), c.difference.estimate,
                         fmt_ci(c.difference.bca.lo, c.difference.bca.hi));
      }
    }
    s += "\n";
  }
  s += "\nReproducible across seeds is not the same as real: only the SAE seed (initialisation and data "
       "order) "
       "varies here, on one transformer, layer and position.\n";
  s += fmt::format(
      "\nFiles: the SAEs are SAELens folders in the artifact cache (paths in "
      "[`{0}results.json`]({0}results.json)), "
      "every comparison has `stability.json`, CSVs and figures under `{0}compare/`; formats in "
      "docs/formats.md. `make release-gate` and `make audit` read this run as the latest phase4a.\n",
      phase4a_rel);
  return s;
}

std::string report_text(const ReportInputs& in, const std::string& prefix, const std::string& phase4a_rel) {
  std::string s;
  s += header_text(in, phase4a_rel);
  s += transformer_section(in, prefix);
  s += activations_section(in);
  s += sae_section(in);
  s += stability_section(in, prefix, phase4a_rel);
  s += plain_words_section(in, phase4a_rel);
  return s;
}

// What run_demo needs from the phase4a run besides the report inputs.
// clang-tidy cannot prove that nlohmann::json's moves never throw (as in io/config.hpp).
// NOLINTNEXTLINE(bugprone-exception-escape)
struct Phase4aFiles {
  nlohmann::json manifest;  // phase4a's manifest.json
  fs::path transformer_dir;
  std::string activations;  // the activation file's path
};

// Reads phase4a's config, results and manifest, the transformer's metrics and the activation file's
// metadata and shape into `in`.
Phase4aFiles read_phase4a_run(const fs::path& phase4a_dir, ReportInputs& in) {
  Phase4aFiles files;
  in.config = read_json_file((phase4a_dir / "config.json").string());
  in.results = read_json_file((phase4a_dir / "results.json").string());
  files.manifest = read_json_file((phase4a_dir / "manifest.json").string());
  files.transformer_dir = in.results["transformer"]["dir"].get<std::string>();
  in.transformer_metrics = read_json_file((files.transformer_dir / "metrics.json").string());
  for (const nlohmann::json& e : files.manifest.value("cache", nlohmann::json::array())) {
    if (e.value("kind", "") == "transformer") in.transformer_reused = e.value("reused", false);
  }
  files.activations = in.results["activations"].get<std::string>();
  {
    const SafetensorsFile f = SafetensorsFile::load(files.activations);
    in.activation_metadata = f.metadata;
    const TensorData& a = f.get("activations");
    in.activation_rows = a.shape.at(0);
    in.d_model = a.shape.at(1);
  }
  return files;
}

// Fills in.families from phase4a's conditions: labels, results and the Holm-adjusted stability studies.
void load_families(const fs::path& phase4a_dir, ReportInputs& in) {
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
    in.families.push_back(f);
  }
  // The same Holm families as phase4a: every compare of the run adjusted together.
  std::vector<std::string> files;
  for (const Family& f : in.families)
    files.push_back(in.results["conditions"][f.name]["stability_file"].get<std::string>());
  std::vector<nlohmann::json> docs;
  std::vector<StabilityStudy> studies = load_experiment_studies(phase4a_dir.string(), files, nullptr, &docs);
  for (size_t i = 0; i < in.families.size(); ++i) {
    in.families[i].study = std::move(studies[i]);
    if (docs[i].contains("feature_types")) in.families[i].feature_types = docs[i]["feature_types"];
  }
}

// Where the demo goes: ROOT/demo/, its run folder there, and the staging folder it is written to first.
struct DemoPaths {
  fs::path root, dir, stage;
};

// Refuses an existing demo folder and starts an empty staging folder.
DemoPaths prepare_stage(const std::string& root, const std::string& run_id) {
  // Everything is written to a hidden staging folder and renamed into place at the end, so a demo that fails
  // here leaves no half-written ROOT/demo/<run_id>/.
  const fs::path demo_root = fs::path(root) / "demo";
  const fs::path demo_dir = demo_root / run_id;
  const fs::path stage = demo_root / ("." + run_id + ".partial");
  if (fs::exists(demo_dir))
    throw Error(demo_dir.string() + ": already exists; a demo folder is never overwritten");
  fs::remove_all(stage);
  ensure_directory(stage.string());
  return {demo_root, demo_dir, stage};
}

// Copies the transformer's, the run's and each family's figures into STAGE/figures/ (recorded in in.figures).
void copy_figures(const fs::path& transformer_dir, const fs::path& phase4a_dir, const fs::path& stage,
                  ReportInputs& in) {
  ensure_directory((stage / "figures").string());
  copy_figure(transformer_dir / "grokking.png", stage, "grokking.png", in.figures);
  copy_figure(transformer_dir / "grokking.svg", stage, "grokking.svg", in.figures);
  copy_figure(phase4a_dir / "stability_vs_steps.png", stage, "stability_vs_steps.png", in.figures);
  copy_figure(phase4a_dir / "stability_vs_steps.svg", stage, "stability_vs_steps.svg", in.figures);
  for (const Family& f : in.families) {
    for (const char* fig : {"trained_vs_nulls", "per_feature_hist", "pairwise_heatmap"}) {
      for (const char* ext : {".png", ".svg"}) {
        copy_figure(phase4a_dir / "compare" / f.name / (std::string(fig) + ext), stage,
                    f.name + "_" + fig + ext, in.figures);
      }
    }
  }
}

// Writes the demo's manifest into the staging folder: phase4a's files read, the report, config and figures.
void write_demo_manifest(const ReportInputs& in, const Phase4aFiles& p4a, const fs::path& phase4a_dir,
                         const fs::path& stage) {
  Manifest manifest;
  manifest.command = command_line();
  manifest.config_hash = p4a.manifest.value("config_hash", "");
  manifest.extra = {{"phase4a_run", phase4a_dir.string()}, {"run_id", in.run_id}, {"wall_time_s", in.wall_s}};
  manifest.add_input((phase4a_dir / "results.json").string());
  manifest.add_input((phase4a_dir / "manifest.json").string());
  for (const Family& f : in.families) {
    manifest.add_input((phase4a_dir / f.condition["stability_file"].get<std::string>()).string());
  }
  manifest.add_input((p4a.transformer_dir / "metrics.json").string());
  manifest.add_output(stage.string(), "REPORT.md");
  manifest.add_output(stage.string(), "config.json");
  for (const std::string& name : in.figures) manifest.add_output(stage.string(), "figures/" + name);
  manifest.write(stage.string());
}

}  // namespace

ConfigSchema demo_config_schema() {
  return phase4a_experiment().schema();
}

Config demo_config(Config config) {
  if (config.source("sae.training.steps").kind == ValueSource::Kind::kDefault) {
    config.set("sae.training.steps", kDemoSaeSteps, "husai demo (reduced size)");
    config.validate();
  }
  return config;
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
  const Phase4aFiles p4a = read_phase4a_run(phase4a_dir, in);
  load_families(phase4a_dir, in);

  const DemoPaths paths = prepare_stage(options.root, run.run_id);
  if (options.figures) copy_figures(p4a.transformer_dir, phase4a_dir, paths.stage, in);
  in.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  DemoResult result;
  result.run_dir = paths.dir.string();
  result.phase4a_run_dir = phase4a_dir.string();
  result.activations_path = p4a.activations;
  result.report_path = (paths.dir / "REPORT.md").string();
  result.latest_report_path = (paths.root / "REPORT.md").string();
  result.wall_time_s = in.wall_s;
  result.exit_code = run.exit_code;
  const std::string rel4a = fs::relative(phase4a_dir, paths.dir).generic_string() + "/";
  const std::string rel4a_latest = fs::relative(phase4a_dir, paths.root).generic_string() + "/";
  write_file_atomic((paths.stage / "REPORT.md").string(), report_text(in, "", rel4a));
  write_file_atomic((paths.stage / "config.json").string(), in.config.dump(2) + "\n");
  write_demo_manifest(in, p4a, phase4a_dir, paths.stage);
  fs::rename(paths.stage, paths.dir);
  // The latest report last: ROOT/demo/REPORT.md names a complete run folder.
  write_file_atomic(result.latest_report_path, report_text(in, run.run_id + "/", rel4a_latest));
  return result;
}

}  // namespace husai
