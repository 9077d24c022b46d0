#include "husai/experiments/demo.hpp"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include <fmt/format.h>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/core/progress.hpp"
#include "husai/core/version.hpp"
#include "husai/experiments/compare.hpp"
#include "husai/io/manifest.hpp"
#include "husai/io/sha256.hpp"
#include "husai/metrics/sae_eval.hpp"
#include "husai/model/extract.hpp"
#include "husai/train/sae_run.hpp"
#include "husai/train/transformer_run.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

// One SAE family of the demo: its training, per-seed evaluation and stability comparison.
struct Family {
  std::string name;     // "topk", "relu"
  std::string label;    // "TopK (k 32)", ...
  std::string sae_dir;  // relative to the run folder
  std::string compare_dir;
  TrainSaeResult train;
  std::vector<nlohmann::json> evals;  // eval-sae document per seed
  nlohmann::json stability;
};

double mean_of(const std::vector<nlohmann::json>& evals, const char* section, const char* key) {
  double s = 0;
  int n = 0;
  for (const nlohmann::json& e : evals) {
    const nlohmann::json& v = e[section][key];
    if (v.is_number()) {
      s += v.get<double>();
      ++n;
    }
  }
  return n > 0 ? s / n : std::nan("");
}

std::string num(const nlohmann::json& v, const char* format = "{:.4f}") {
  return v.is_number() ? fmt::format(fmt::runtime(format), v.get<double>()) : std::string("n/a");
}

std::string pct(const nlohmann::json& v) {
  return v.is_number() ? fmt::format("{:.1f}%", 100.0 * v.get<double>()) : std::string("n/a");
}

std::string ci(const nlohmann::json& pair) {
  if (!pair.is_array() || pair.size() != 2) return "n/a";
  return fmt::format("[{}, {}]", num(pair[0]), num(pair[1]));
}

std::string p_text(const nlohmann::json& v) {
  if (!v.is_number()) return "n/a";
  const double p = v.get<double>();
  return p < 1e-3 ? fmt::format("{:.1e}", p) : fmt::format("{:.4f}", p);
}

std::string family_section(const Family& f, const std::string& prefix) {
  const nlohmann::json& st = f.stability;
  const std::string primary =
      st["primary_null"].is_object() ? st["primary_null"]["name"].get<std::string>() : "";
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
  s += fmt::format("Verdict (`matched_mean_cos`, the PW-MCC of Song et al. 2025): {}.\n\n",
                   st["summary"]["matched_mean_cos"]["nulls"][primary]["verdict"].get<std::string>());
  s += fmt::format("Verdict (`pwmcc`, the reference's max-based score): {}.\n\n",
                   st["summary"]["pwmcc"]["nulls"][primary]["verdict"].get<std::string>());
  s += fmt::format(
      "![trained vs nulls]({0}{1}/trained_vs_nulls.png) ![per-feature stability]({0}{1}/"
      "per_feature_hist.png)\n\n",
      prefix, f.compare_dir);
  s += fmt::format(
      "Full tables: [`{0}{1}/summary.md`]({0}{1}/summary.md); pairwise heatmap "
      "[`{0}{1}/pairwise_heatmap.png`]({0}{1}/pairwise_heatmap.png).\n\n",
      prefix, f.compare_dir);
  return s;
}

std::string report_text(const std::string& prefix, const TrainTransformerResult& t, const Config& config,
                        const ExtractSummary& ex, const std::string& run_id,
                        const std::vector<Family>& families, const DemoOptions& options, double wall_s) {
  const nlohmann::json& r = config.resolved();
  std::string s;
  s += "# husai demo report\n\n";
  s += fmt::format("Run `{}` (husai {} built from git {}{}); {:.0f} s end to end.\n\n", run_id, version(),
                   std::string(git_commit()).substr(0, 12), git_dirty() ? " with uncommitted changes" : "",
                   wall_s);
  s += "## 1. The transformer groks modular arithmetic\n\n";
  s += fmt::format(
      "Task: (a {} b) mod {}, format `{}`; the answer is scored at the `=` position, which never sees the "
      "answer token. Model: {} layers, d_model {}, {} heads, d_mlp {}, {}, normalization {}.\n\n",
      r["task"]["operation"].get<std::string>(), r["task"]["modulus"].get<int64_t>(),
      r["task"]["format"].get<std::string>(), r["model"]["n_layers"].get<int64_t>(),
      r["model"]["d_model"].get<int64_t>(), r["model"]["n_heads"].get<int64_t>(),
      r["model"]["d_mlp"].get<int64_t>(), r["model"]["act_fn"].get<std::string>(),
      r["model"]["normalization_type"].get<std::string>());
  s += "| metric | value |\n|---|---|\n";
  s += fmt::format("| epochs | {} |\n", t.epochs);
  s += fmt::format("| train fraction | {} |\n", r["training"]["train_fraction"].get<double>());
  s += fmt::format("| train accuracy | {:.4f} |\n", t.train.acc);
  s += fmt::format("| held-out accuracy | {:.4f} |\n", t.val.acc);
  s += fmt::format("| held-out loss | {:.4g} |\n", t.val.loss);
  s += fmt::format("| grok epoch (first epoch with held-out accuracy >= 0.99) | {} |\n",
                   t.grok_epoch ? std::to_string(*t.grok_epoch) : "not reached");
  s += fmt::format("| training wall time | {:.1f} s |\n\n", t.wall_time_s);
  s += fmt::format("![grokking curve]({}transformer/grokking.png)\n\n", prefix);
  const bool grokked = t.val.acc >= 0.99;
  s += grokked
           ? "Verdict: the model generalises to pairs it never trained on (held-out accuracy >= 0.99).\n\n"
           : "Verdict: the model has NOT generalised (held-out accuracy < 0.99); SAE features learned on it "
             "would describe memorisation.\n\n";
  s += "## 2. Activations\n\n";
  s += fmt::format("`{}activations.safetensors`: {} rows x {} at `{}`, position `{}`.\n\n", prefix, ex.rows,
                   ex.d_model, ex.hook_name, ex.position);

  s += "## 3. SAEs on 5 seeds\n\n";
  s += fmt::format(
      "Seeds {}; d_sae {} on d_in {}; each family trained in one pass over the data; metrics on the 10% of "
      "rows held out from SAE training (mean over seeds), CE-loss and KL scores with the SAE spliced into "
      "the "
      "transformer over all p^2 pairs (zero-ablation baseline).\n\n",
      fmt::join(options.seeds, ", "), options.d_sae, ex.d_model);
  s += "| SAE | L0 | explained variance | dead fraction | CE loss score | KL div score | answer acc "
       "(spliced) | "
       "train time |\n|---|---|---|---|---|---|---|---|\n";
  for (const Family& f : families) {
    s += fmt::format("| {} | {:.1f} | {:.4f} | {:.3f} | {:.4f} | {:.4f} | {:.4f} | {:.0f} s |\n", f.label,
                     mean_of(f.evals, "held_out", "l0"), mean_of(f.evals, "held_out", "explained_variance"),
                     mean_of(f.evals, "held_out", "frac_dead"), mean_of(f.evals, "splice", "ce_loss_score"),
                     mean_of(f.evals, "splice", "kl_div_score"), mean_of(f.evals, "splice", "accuracy_sae"),
                     f.train.wall_time_s);
  }
  s += "\n## 4. Are the features real, or an accident of the seed?\n\n";
  s += "For each pair of seeds, decoder rows are matched (`pwmcc`: best |cos| each way; `matched_mean_cos`: "
       "optimal one-to-one matching) and compared with null dictionaries of the same shape: `gaussian` "
       "(isotropic), `untrained` (the SAE's initialisation, never trained) and `covariance` (drawn from the "
       "activations' covariance: chance alignment for vectors living where the data lives). Intervals "
       "resample "
       "seeds, not pairs; p-values permute seed labels (exact with 5 + 5 seeds: smallest attainable p = "
       "1/252), "
       "Holm-corrected over the three nulls.\n\n";
  for (const Family& f : families) s += family_section(f, prefix);

  s += "## 5. In plain words\n\n";
  for (const Family& f : families) {
    const nlohmann::json& st = f.stability;
    const std::string primary = st["primary_null"]["name"].get<std::string>();
    const nlohmann::json& m = st["summary"]["matched_mean_cos"];
    const nlohmann::json& pn = m["nulls"][primary];
    s += fmt::format(
        "- **{}**: matched features between seeds have mean |cos| {} (95% CI {}), against {} for the {} "
        "null (difference {} {}); {} of matched features agree at |cos| >= 0.7. Verdict: {}.\n",
        f.label, num(m["trained"]["mean"]), ci(m["trained"]["ci_bca"]), num(pn["mean"]), primary,
        num(pn["difference"]["estimate"], "{:+.4f}"), ci(pn["difference"]["ci_bca"]),
        pct(st["summary"]["shared_frac_07"]["trained"]["mean"]), pn["verdict"].get<std::string>());
  }
  s += "\nFiles: every SAE is a SAELens folder (`sae-<family>/seed<S>/`), every comparison has "
       "`stability.json`, "
       "CSVs and figures (`compare-<family>/`); formats in docs/formats.md.\n";
  return s;
}

Family train_family(const std::string& name, const std::string& label, const fs::path& run_dir,
                    const std::string& acts_path, const std::string& model_dir, const DemoOptions& options,
                    const std::function<void(Config&)>& configure) {
  Family f;
  f.name = name;
  f.label = label;
  f.sae_dir = "sae-" + name;
  f.compare_dir = "compare-" + name;
  Config cfg(sae_config_schema());
  cfg.set("sae.architecture", name, "demo");
  cfg.set("sae.d_sae", options.d_sae, "demo");
  nlohmann::json seeds = nlohmann::json::array();
  for (uint64_t seed : options.seeds) seeds.push_back(seed);
  cfg.set("training.seeds", seeds, "demo");
  if (options.sae_steps > 0) cfg.set("training.steps", options.sae_steps, "demo");
  configure(cfg);
  cfg.validate();
  if (!options.quiet)
    std::fprintf(stderr, "demo: training %s SAEs on %zu seeds\n", label.c_str(), options.seeds.size());
  TrainSaeOptions so;
  so.activations_path = acts_path;
  so.out_dir = (run_dir / f.sae_dir).string();
  so.quiet = options.quiet;
  f.train = train_sae(cfg, so);
  if (!f.train.completed)
    throw Error("demo interrupted during SAE training; its run folder is " + run_dir.string());

  std::vector<std::string> dirs;
  for (uint64_t seed : options.seeds) {
    const std::string dir = (run_dir / f.sae_dir / fmt::format("seed{}", seed)).string();
    dirs.push_back(dir);
    EvalSaeOptions eo;
    eo.sae_dir = dir;
    eo.activations_path = acts_path;
    eo.model_dir = model_dir;
    eo.quiet = true;
    const nlohmann::json eval = evaluate_sae(eo);
    std::ifstream in(dir + "/metrics.json");
    const nlohmann::json metrics = nlohmann::json::parse(in);
    f.evals.push_back({{"held_out", metrics["held_out"]}, {"splice", eval["splice"]}});
  }
  if (!options.quiet) std::fprintf(stderr, "demo: comparing %s SAEs against the nulls\n", label.c_str());
  CompareOptions co;
  co.sae_dirs = dirs;
  co.activations_path = acts_path;
  co.bootstrap = options.bootstrap;
  co.out_dir = (run_dir / f.compare_dir).string();
  co.quiet = options.quiet;
  f.stability = run_compare(co);
  return f;
}

}  // namespace

DemoResult run_demo(const Config& transformer_config, const DemoOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  // The demo's resolved config: the transformer config plus the study's settings; its hash names the run.
  const nlohmann::json demo_config = {{"transformer", transformer_config.resolved()},
                                      {"seeds", options.seeds},
                                      {"sae_steps", options.sae_steps},
                                      {"d_sae", options.d_sae},
                                      {"k", options.k},
                                      {"relu_l1", options.relu_l1},
                                      {"bootstrap", options.bootstrap}};
  const std::string config_hash = sha256_hex(demo_config.dump());
  const std::string run_id = utc_timestamp_compact() + "-" + config_hash.substr(0, 8);
  const fs::path demo_root = fs::path(options.root) / "demo";
  fs::path run_dir = demo_root / run_id;
  for (int i = 2; fs::exists(run_dir); ++i) run_dir = demo_root / (run_id + "-" + std::to_string(i));
  ensure_directory(run_dir.string());
  if (!options.quiet) std::fprintf(stderr, "demo: run folder %s\n", run_dir.string().c_str());

  TrainTransformerOptions topts;
  topts.out_dir = (run_dir / "transformer").string();
  topts.quiet = options.quiet;
  const TrainTransformerResult t = train_transformer(transformer_config, topts);
  if (!t.completed) throw Error("demo interrupted during training; its run folder is " + run_dir.string());

  const LoadedModel model = load_model_dir(topts.out_dir);
  ExtractSpec spec;
  const std::string acts_path = (run_dir / "activations.safetensors").string();
  const ExtractSummary ex = extract_activations(model, spec, acts_path, options.quiet);

  std::vector<Family> families;
  families.push_back(train_family("topk", fmt::format("TopK (k {})", options.k), run_dir, acts_path,
                                  topts.out_dir, options,
                                  [&](Config& c) { c.set("sae.k", options.k, "demo"); }));
  families.push_back(train_family("relu", fmt::format("ReLU + L1 ({})", options.relu_l1), run_dir, acts_path,
                                  topts.out_dir, options,
                                  [&](Config& c) { c.set("sae.l1_coefficient", options.relu_l1, "demo"); }));

  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  DemoResult result;
  result.run_dir = run_dir.string();
  result.activations_path = acts_path;
  result.report_path = (run_dir / "REPORT.md").string();
  result.latest_report_path = (demo_root / "REPORT.md").string();
  result.wall_time_s = wall_s;
  const std::string id = run_dir.filename().string();
  write_file_atomic(result.report_path,
                    report_text("", t, transformer_config, ex, id, families, options, wall_s));
  write_file_atomic(result.latest_report_path,
                    report_text(id + "/", t, transformer_config, ex, id, families, options, wall_s));
  write_file_atomic((run_dir / "config.json").string(), demo_config.dump(2) + "\n");

  Manifest manifest;
  manifest.command = command_line();
  manifest.config_hash = config_hash;
  manifest.extra["wall_time_s"] = wall_s;
  for (const char* name :
       {"config.json", "REPORT.md", "activations.safetensors", "transformer/model.safetensors",
        "transformer/metrics.json", "transformer/grokking.png"}) {
    manifest.add_output(run_dir.string(), name);
  }
  for (const Family& f : families) {
    for (uint64_t seed : options.seeds) {
      manifest.add_output(run_dir.string(),
                          fmt::format("{}/seed{}/sae_weights.safetensors", f.sae_dir, seed));
    }
    manifest.add_output(run_dir.string(), f.compare_dir + "/stability.json");
  }
  manifest.write(run_dir.string());
  return result;
}

}  // namespace husai
