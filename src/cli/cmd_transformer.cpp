// train-transformer, eval-transformer and extract: runbook steps A and B.

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include "commands.hpp"
#include "common.hpp"
#include "husai/core/error.hpp"
#include "husai/model/extract.hpp"
#include "husai/train/transformer_config.hpp"
#include "husai/train/transformer_run.hpp"

namespace husai::cli {

Runner register_train_transformer(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "train-transformer",
      "Train the modular-arithmetic transformer (runbook step A). Writes model.safetensors (TransformerLens "
      "names), config.json, split.safetensors, metrics.json(l), grokking.png/svg and manifest.json into "
      "--out.");
  struct Opts {
    CommonOptions common;
    ConfigOptions config;
    OutputOptions output;
  };
  auto o = std::make_shared<Opts>();
  add_common(sub, o->common);
  add_config_options(sub, o->config);
  add_config_flag(sub, o->config, "--epochs", "training.epochs", "number of epochs");
  add_config_flag(sub, o->config, "--batch-size", "training.batch_size", "rows per step, or 'full'");
  add_config_flag(sub, o->config, "--lr", "training.lr", "AdamW learning rate");
  add_config_flag(sub, o->config, "--seed", "training.seed", "seed of init, split and data order");
  add_config_flag(sub, o->config, "--train-fraction", "training.train_fraction",
                  "fraction of pairs trained on");
  add_config_flag(sub, o->config, "--weight-decay", "training.weight_decay", "AdamW weight decay");
  add_config_flag(sub, o->config, "--modulus", "task.modulus", "the modulus p");
  add_config_flag(sub, o->config, "--checkpoint-every", "training.checkpoint_every",
                  "epochs between checkpoints");
  add_output_options(sub, o->output, "run folder to write");
  sub->footer("Config keys (YAML sections, or --set section.key=value):\n" +
              transformer_config_schema().describe());
  return [o] {
    apply_common(o->common);
    const Config config = build_config(transformer_config_schema(), o->config);
    TrainTransformerOptions opts;
    opts.out_dir = o->output.out;
    opts.existing = existing_policy(o->output);
    opts.quiet = o->common.quiet;
    const TrainTransformerResult r = train_transformer(config, opts);
    if (!r.completed) return report_interrupted("epoch", r.epochs, opts.out_dir);
    if (!o->common.quiet) {
      std::printf(
          "trained %lld epochs in %.1f s: train acc %.4f, val acc %.4f (val loss %.4g), grok epoch %s\n",
          static_cast<long long>(r.epochs), r.wall_time_s, r.train.acc, r.val.acc, r.val.loss,
          r.grok_epoch ? std::to_string(*r.grok_epoch).c_str() : "none");
      std::printf("run folder: %s\n", opts.out_dir.c_str());
    }
    return 0;
  };
}

Runner register_eval_transformer(CLI::App& app) {
  CLI::App* sub =
      app.add_subcommand("eval-transformer",
                         "Print a trained transformer's loss and accuracy at the '=' position on its "
                         "training pairs, its held-out pairs and all pairs.");
  struct Opts {
    CommonOptions common;
    std::string model;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  add_common(sub, o->common);
  sub->add_option("-m,--model", o->model, "transformer run folder")->required();
  sub->add_flag("--json", o->json, "print JSON instead of a table");
  return [o] {
    apply_common(o->common);
    const TransformerEvaluation ev = evaluate_transformer_dir(o->model);
    if (o->json) {
      std::printf(
          "{\"train_acc\": %.6f, \"train_loss\": %.6g, \"val_acc\": %.6f, \"val_loss\": %.6g, "
          "\"all_acc\": %.6f, \"all_loss\": %.6g}\n",
          ev.train.acc, ev.train.loss, ev.val.acc, ev.val.loss, ev.all.acc, ev.all.loss);
    } else {
      std::printf("%-6s %8s %10s %12s\n", "split", "rows", "accuracy", "loss");
      std::printf("%-6s %8lld %10.4f %12.6g\n", "train", static_cast<long long>(ev.train.n), ev.train.acc,
                  ev.train.loss);
      std::printf("%-6s %8lld %10.4f %12.6g\n", "val", static_cast<long long>(ev.val.n), ev.val.acc,
                  ev.val.loss);
      std::printf("%-6s %8lld %10.4f %12.6g\n", "all", static_cast<long long>(ev.all.n), ev.all.acc,
                  ev.all.loss);
    }
    return 0;
  };
}

Runner register_extract(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "extract",
      "Extract activations at a TransformerLens hook point (runbook step B) into a safetensors file.");
  struct Opts {
    CommonOptions common;
    std::string model, site = "resid_post", position = "answer", out;
    std::string target_site, target_out;
    std::optional<int64_t> target_layer;
    int64_t layer = -1;
    int64_t shard_rows = 0;
    bool overwrite = false;
  };
  auto o = std::make_shared<Opts>();
  add_common(sub, o->common);
  sub->add_option("-m,--model", o->model, "transformer run folder")->required();
  sub->add_option("--layer", o->layer, "block index, 0-based (default: last; negative counts from the end)");
  sub->add_option("--site", o->site, "resid_pre | resid_mid | attn_out | mlp_out | resid_post")
      ->check(CLI::IsMember({"resid_pre", "resid_mid", "attn_out", "mlp_out", "resid_post"}));
  sub->add_option("--position", o->position,
                  "answer (the '=' position) | all | <index> (negative from the end)");
  sub->add_option("-o,--out", o->out, "output .safetensors file")->required();
  auto* target_site =
      sub->add_option("--target-site", o->target_site,
                      "also write a second hook point from the same forward passes (a transcoder's target, "
                      "e.g. --site resid_mid --target-site mlp_out)")
          ->check(CLI::IsMember({"resid_pre", "resid_mid", "attn_out", "mlp_out", "resid_post"}));
  sub->add_option("--target-layer", o->target_layer, "block of --target-site (default: --layer)")
      ->needs(target_site);
  sub->add_option("--target-out", o->target_out, "output .safetensors file of --target-site")
      ->needs(target_site);
  target_site->needs("--target-out");
  sub->add_option(
         "--shard-rows", o->shard_rows,
         "write --out (and --target-out) as a folder of safetensors shards of at most this many rows "
         "(shard_00000.safetensors, ...; read back as one file by train-sae, eval-sae and compare)")
      ->check(CLI::PositiveNumber);
  sub->add_flag("--overwrite", o->overwrite, "replace an existing output file");
  return [o] {
    apply_common(o->common);
    for (const std::string& path : {o->out, o->target_out}) {
      if (!path.empty() && !o->overwrite && std::filesystem::exists(path)) {
        throw Error("output file exists; pass --overwrite to replace it").file(path);
      }
    }
    if (!o->target_out.empty() &&
        std::filesystem::absolute(o->target_out) == std::filesystem::absolute(o->out)) {
      throw Error("--target-out names the same file as --out").file(o->out);
    }
    const LoadedModel model = load_model_dir(o->model);
    ExtractSpec spec;
    spec.layer = o->layer;
    spec.site = parse_hook_site(o->site);
    spec.position = o->position;
    spec.shard_rows = o->shard_rows;
    if (!o->target_site.empty()) {
      spec.target_site = parse_hook_site(o->target_site);
      spec.target_layer = o->target_layer;
    }
    const ExtractSummary s = extract_activations(model, spec, o->out, o->common.quiet, o->target_out);
    if (!o->common.quiet) {
      std::printf("wrote %lld x %lld activations (%s, position %s) to %s\n", static_cast<long long>(s.rows),
                  static_cast<long long>(s.d_model), s.hook_name.c_str(), s.position.c_str(), o->out.c_str());
      if (!s.target_hook_name.empty()) {
        std::printf("wrote %lld x %lld target activations (%s) to %s\n", static_cast<long long>(s.rows),
                    static_cast<long long>(s.d_model), s.target_hook_name.c_str(), o->target_out.c_str());
      }
    }
    return 0;
  };
}

}  // namespace husai::cli
