#include "husai/experiments/demo.hpp"

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/core/version.hpp"
#include "husai/io/manifest.hpp"
#include "husai/model/extract.hpp"
#include "husai/train/transformer_run.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

std::string report_text(const std::string& fig_prefix, const TrainTransformerResult& t, const Config& config,
                        const ExtractSummary& ex, const std::string& run_id) {
  const nlohmann::json& r = config.resolved();
  std::string s;
  s += "# husai demo report\n\n";
  s += fmt::format("Run `{}` (config hash `{}`, husai {} built from git {}{}).\n\n", run_id,
                   config.hash().substr(0, 12), version(), std::string(git_commit()).substr(0, 12),
                   git_dirty() ? " with uncommitted changes" : "");
  s += "## 1. The transformer groks modular arithmetic\n\n";
  s += fmt::format(
      "Task: (a {} b) mod {}, format `{}`; the answer is scored at the `=` position, which never sees the "
      "answer "
      "token. Model: {} layers, d_model {}, {} heads, d_mlp {}, {}, normalization {}.\n\n",
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
  s += fmt::format("![grokking curve]({}transformer/grokking.png)\n\n", fig_prefix);
  const bool grokked = t.val.acc >= 0.99;
  s += grokked
           ? "Verdict: the model generalises to pairs it never trained on (held-out accuracy >= 0.99).\n\n"
           : "Verdict: the model has NOT generalised (held-out accuracy < 0.99); SAE features learned on it "
             "would describe memorisation.\n\n";
  s += "## 2. Activations\n\n";
  s += fmt::format("`{}activations.safetensors`: {} rows x {} at `{}`, position `{}`.\n", fig_prefix, ex.rows,
                   ex.d_model, ex.hook_name, ex.position);
  return s;
}

}  // namespace

DemoResult run_demo(const Config& transformer_config, const DemoOptions& options) {
  const std::string run_id = utc_timestamp_compact() + "-" + transformer_config.hash().substr(0, 8);
  const fs::path demo_root = fs::path(options.root) / "demo";
  fs::path run_dir = demo_root / run_id;
  for (int i = 2; fs::exists(run_dir); ++i) run_dir = demo_root / (run_id + "-" + std::to_string(i));
  ensure_directory(run_dir.string());

  TrainTransformerOptions topts;
  topts.out_dir = (run_dir / "transformer").string();
  topts.quiet = options.quiet;
  const TrainTransformerResult t = train_transformer(transformer_config, topts);
  if (!t.completed) throw Error("demo interrupted during training; its run folder is " + run_dir.string());

  const LoadedModel model = load_model_dir(topts.out_dir);
  ExtractSpec spec;
  const std::string acts_path = (run_dir / "activations.safetensors").string();
  const ExtractSummary ex = extract_activations(model, spec, acts_path, options.quiet);

  DemoResult result;
  result.run_dir = run_dir.string();
  result.activations_path = acts_path;
  result.report_path = (run_dir / "REPORT.md").string();
  result.latest_report_path = (demo_root / "REPORT.md").string();
  write_file_atomic(result.report_path,
                    report_text("", t, transformer_config, ex, run_dir.filename().string()));
  write_file_atomic(
      result.latest_report_path,
      report_text(run_dir.filename().string() + "/", t, transformer_config, ex, run_dir.filename().string()));
  write_file_atomic((run_dir / "config.json").string(), transformer_config.resolved().dump(2) + "\n");

  Manifest manifest;
  manifest.command = command_line();
  manifest.config_hash = transformer_config.hash();
  for (const char* name :
       {"config.json", "REPORT.md", "activations.safetensors", "transformer/model.safetensors",
        "transformer/metrics.json", "transformer/grokking.png"}) {
    manifest.add_output(run_dir.string(), name);
  }
  manifest.write(run_dir.string());
  return result;
}

}  // namespace husai
