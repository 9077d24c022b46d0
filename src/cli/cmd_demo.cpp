// demo: the main job on built-in defaults.

#include <cstdio>
#include <memory>

#include "commands.hpp"
#include "common.hpp"
#include "husai/experiments/demo.hpp"
#include "husai/train/transformer_config.hpp"

namespace husai::cli {

Runner register_demo(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "demo",
      "The main job: train the default transformer until it groks, extract its "
      "answer-position activations, train TopK and ReLU SAEs on 5 seeds, compare them with "
      "the gaussian, untrained and covariance nulls, and write ROOT/demo/<run_id>/REPORT.md "
      "(latest copied to ROOT/demo/REPORT.md). The --config/--set options are the "
      "transformer's (see train-transformer --help).");
  struct Opts {
    CommonOptions common;
    ConfigOptions config;
    std::string root = "results";
    DemoOptions demo;
  };
  auto o = std::make_shared<Opts>();
  add_common(sub, o->common);
  add_config_options(sub, o->config);
  sub->add_option("-o,--out", o->root, "results root (default: results)");
  sub->add_option("--seeds", o->demo.seeds, "SAE seeds (default: 42,123,456,789,1011)")->delimiter(',');
  sub->add_option("--sae-steps", o->demo.sae_steps, "SAE training steps (default: the SAE defaults, 3000)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--d-sae", o->demo.d_sae, "SAE latents (default: 1024)")->check(CLI::PositiveNumber);
  sub->add_option("--k", o->demo.k, "TopK active latents (default: 32)")->check(CLI::PositiveNumber);
  sub->add_option("--relu-l1", o->demo.relu_l1, "ReLU SAE L1 coefficient (default: 0.5, L0 near 32)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--bootstrap", o->demo.bootstrap, "seed-bootstrap resamples (default: 10000)")
      ->check(CLI::PositiveNumber);
  return [o] {
    apply_common(o->common);
    const Config config = build_config(transformer_config_schema(), o->config);
    DemoOptions opts = o->demo;
    opts.root = o->root;
    opts.quiet = o->common.quiet;
    const DemoResult r = run_demo(config, opts);
    std::printf("demo run folder: %s\nactivations:     %s\nreport:          %s\ntime:            %.0f s\n",
                r.run_dir.c_str(), r.activations_path.c_str(), r.latest_report_path.c_str(), r.wall_time_s);
    return 0;
  };
}

}  // namespace husai::cli
