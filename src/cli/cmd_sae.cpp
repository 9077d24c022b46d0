// train-sae and synth: SAE training (runbook step C) and planted-dictionary activations.

#include <cstdio>
#include <filesystem>
#include <memory>

#include "commands.hpp"
#include "common.hpp"
#include "husai/core/cluster.hpp"
#include "husai/core/error.hpp"
#include "husai/data/synthetic.hpp"
#include "husai/sae/architecture.hpp"
#include "husai/train/sae_run.hpp"

namespace husai::cli {
namespace {

// One line per architecture of the table: training name, SAELens inference architecture, summary.
std::string architecture_list() {
  std::string out = "Architectures (sae.architecture; SAELens architecture of the exported folder):\n";
  for (const SaeArchitecture* a : sae_architectures()) {
    out += "  " + std::string(a->name) + std::string(a->name.size() < 11 ? 11 - a->name.size() : 1, ' ') +
           "-> " + std::string(a->inference->name) +
           std::string(a->inference->name.size() < 9 ? 9 - a->inference->name.size() : 1, ' ') +
           std::string(a->summary) + "\n";
  }
  return out;
}

}  // namespace

Runner register_architectures(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "architectures",
      "List the SAE architectures train-sae knows (the architecture table), with the SAELens "
      "architecture each exports and its config keys.");
  auto names_only = std::make_shared<bool>(false);
  sub->add_flag("--names", *names_only, "print only the names, one per line (for scripts)");
  return [names_only] {
    if (*names_only) {
      for (const SaeArchitecture* a : sae_architectures()) std::printf("%s\n", std::string(a->name).c_str());
      return 0;
    }
    std::printf("%s", architecture_list().c_str());
    for (const SaeArchitecture* a : sae_architectures()) {
      std::string keys;
      for (const SaeKey& k : a->keys) keys += (keys.empty() ? "" : ", ") + std::string(k.path);
      std::printf("  %s keys: %s\n", std::string(a->name).c_str(),
                  keys.empty() ? "(none of its own)" : keys.c_str());
    }
    return 0;
  };
}

Runner register_train_sae(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "train-sae",
      "Train sparse autoencoders on an activation file, several seeds in one pass (runbook step C); with "
      "--target-activations, transcoders that predict another site from it (any architecture). Writes "
      "--out/seed<S>/ SAELens folders (cfg.json, sae_weights.safetensors) with metrics.json(l), plus "
      "split.safetensors, trainer_state.safetensors and manifest.json.");
  struct Opts {
    CommonOptions common;
    ConfigOptions config;
    OutputOptions output;
    std::string activations, target, target_key = "activations";
    bool data_parallel = false;
  };
  auto o = std::make_shared<Opts>();
  add_common(sub, o->common);
  add_config_options(sub, o->config);
  sub->add_option("--activations", o->activations,
                  "activation rows: a safetensors or .npy file, or a folder or glob of shards (f32/f16/bf16)")
      ->required();
  sub->add_option("--target-activations", o->target,
                  "train transcoders: rows of another site to predict from --activations (row r pairs with "
                  "row r; e.g. husai extract --site resid_mid --target-site mlp_out)");
  sub->add_option("--target-key", o->target_key, "tensor name in the target file (default: activations)");
  add_config_flag(sub, o->config, "--key", "data.key", "tensor name in the activation file");
  add_config_flag(sub, o->config, "--architecture", "sae.architecture",
                  sae_architecture_names("|") + " (husai architectures)");
  add_config_flag(sub, o->config, "--d-sae", "sae.d_sae", "number of latents");
  add_config_flag(sub, o->config, "--expansion", "sae.expansion", "d_sae / d_in");
  add_config_flag(sub, o->config, "--k", "sae.k", "active latents per row");
  add_config_flag(sub, o->config, "--l1", "sae.l1_coefficient",
                  "L1 coefficient (architectures with an L1 penalty)");
  add_config_flag(sub, o->config, "--steps", "training.steps", "optimizer steps");
  add_config_flag(sub, o->config, "--epochs", "training.epochs",
                  "passes over the training rows (instead of --steps)");
  add_config_flag(sub, o->config, "--batch-size", "training.batch_size", "rows per step");
  add_config_flag(sub, o->config, "--lr", "training.lr", "Adam learning rate");
  add_config_list_flag(sub, o->config, "--seeds", "training.seeds",
                       "comma-separated SAE seeds, e.g. 42,123,456");
  add_config_flag(sub, o->config, "--data-order-seed", "training.data_order_seed",
                  "one data order shared by all seeds; null (default) = each seed its own order");
  add_config_flag(sub, o->config, "--eval-fraction", "data.eval_fraction", "fraction of rows held out");
  add_config_flag(sub, o->config, "--buffer-rows", "data.buffer_rows",
                  "rows held in memory; a larger file is streamed through a shuffle window this size");
  add_config_flag(sub, o->config, "--checkpoint-every", "training.checkpoint_every",
                  "steps between checkpoints");
  add_output_options(sub, o->output, "run folder to write");
  sub->add_flag(
      "--data-parallel", o->data_parallel,
      "under mpirun: every rank trains every seed on its share of each batch's rows (topk; the same "
      "bytes as one process); without it the ranks split the seeds (docs/cluster.md)");
  sub->footer(architecture_list() +
              "\nConfig keys (YAML sections, or --set section.key=value; [..] names the "
              "architectures that read a key):\n" +
              sae_config_schema().describe());
  return [o] {
    apply_common(o->common);
    const Config config = build_config(sae_config_schema(), o->config);
    TrainSaeOptions opts;
    opts.activations_path = o->activations;
    opts.target_activations_path = o->target;
    opts.target_key = o->target_key;
    opts.out_dir = o->output.out;
    opts.existing = existing_policy(o->output);
    opts.quiet = o->common.quiet;
    opts.data_parallel = o->data_parallel;
    const TrainSaeResult r = train_sae(config, opts);
    if (!r.completed) return report_interrupted("step", r.steps, opts.out_dir);
    if (!o->common.quiet && cluster::rank() == 0) {  // under mpirun, rank 0 reports every seed
      std::printf("trained %zu seed(s) x %lld steps in %.1f s (%.0f samples/s)\n", r.seeds.size(),
                  static_cast<long long>(r.steps), r.wall_time_s, r.samples_per_s);
      for (size_t i = 0; i < r.seeds.size(); ++i) {
        std::printf("  seed %llu: held-out explained variance %.4f, L0 %.2f\n",
                    static_cast<unsigned long long>(r.seeds[i]), r.eval_explained_variance[i], r.eval_l0[i]);
      }
      std::printf("run folder: %s\n", opts.out_dir.c_str());
    }
    return 0;
  };
}

Runner register_synth(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "synth",
      "Write activations built from a planted random dictionary (unit rows) with sparse non-negative "
      "codes: tensors `activations` [rows, d_in] and `dictionary` [n_features, d_in].");
  struct Opts {
    CommonOptions common;
    SynthSpec spec;
    std::string out;
    bool overwrite = false;
  };
  auto o = std::make_shared<Opts>();
  add_common(sub, o->common);
  sub->add_option("--d-in", o->spec.d_in, "dimension of the rows")->required();
  sub->add_option("--n-features", o->spec.n_features, "planted dictionary size")->required();
  sub->add_option("--active", o->spec.active, "features per row")->required();
  sub->add_option("--rows", o->spec.rows, "number of rows")->required();
  sub->add_option("--seed", o->spec.seed, "seed (default 0)");
  sub->add_flag("--transcoder", o->spec.transcoder,
                "also write `targets` [rows, d_in] and `target_dictionary`: the same codes on a second "
                "planted dictionary (train-sae --target-activations FILE --target-key targets)");
  sub->add_option("-o,--out", o->out, "output .safetensors file")->required();
  sub->add_flag("--overwrite", o->overwrite, "replace an existing output file");
  return [o] {
    apply_common(o->common);
    if (!o->overwrite && std::filesystem::exists(o->out)) {
      throw Error("output file exists; pass --overwrite to replace it").file(o->out);
    }
    const SynthData data = make_synthetic(o->spec);
    write_synthetic(o->out, o->spec, data);
    if (!o->common.quiet) {
      std::printf("wrote %lld rows (d_in %lld, %lld planted features, %lld active) to %s\n",
                  static_cast<long long>(o->spec.rows), static_cast<long long>(o->spec.d_in),
                  static_cast<long long>(o->spec.n_features), static_cast<long long>(o->spec.active),
                  o->out.c_str());
    }
    return 0;
  };
}

}  // namespace husai::cli
