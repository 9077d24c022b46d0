// demo: the main job on built-in defaults (the phase4a experiment plus REPORT.md).

#include <cstdio>
#include <memory>
#include <string>

#include "commands.hpp"
#include "common.hpp"
#include "husai/core/cluster.hpp"
#include "husai/experiments/demo.hpp"
#include "husai/experiments/runner.hpp"
#include "husai/train/sae_run.hpp"

namespace husai::cli {

Runner register_demo(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "demo",
      "The main job: the phase4a experiment on built-in defaults, at 1000 SAE steps (make "
      "reproduce-phase4a runs the full 3000). Trains the default transformer until it groks, extracts its "
      "answer-position activations, trains TopK (d_sae 1024, k 32) and ReLU+L1 (L0 matched) SAEs on 5 seeds, "
      "evaluates them, compares each family with the null dictionaries (geometry-matched ones included) and "
      "with the same SAEs trained on Gaussian surrogate data (ROOT/phase4a/<run_id>/, artifacts cached in "
      "ROOT/cache/), and writes ROOT/demo/<run_id>/REPORT.md (latest copied to ROOT/demo/REPORT.md). "
      "--config/--set take phase4a's keys (`husai experiment phase4a --keys`).");
  struct Opts {
    CommonOptions common;
    ConfigOptions config;
    DemoOptions demo;
    bool no_figures = false;
  };
  auto o = std::make_shared<Opts>();
  add_common(sub, o->common);
  add_config_options(sub, o->config);
  sub->add_option("-o,--out", o->demo.root, "results root ROOT (default: results)");
  sub->add_flag("--resume", o->demo.resume, "continue the newest unfinished run with the same config");
  sub->add_flag("--no-figures", o->no_figures, "skip the gnuplot figures");
  add_config_list_flag(sub, o->config, "--seeds", "phase4a.seeds",
                       "comma-separated SAE seeds (default 42,123,456,789,1011)");
  add_config_flag(
      sub, o->config, "--sae-steps", "sae.training.steps",
      "SAE training steps (default " + std::to_string(kDemoSaeSteps) + "; phase4a's own default: 3000)");
  add_config_flag(sub, o->config, "--d-sae", "phase4a.d_sae", "SAE latents (default 1024)");
  add_config_flag(sub, o->config, "--k", "phase4a.k", "TopK active latents, the ReLU L0 target (default 32)");
  add_config_flag(sub, o->config, "--bootstrap", "compare.bootstrap",
                  "seed-bootstrap resamples (default 10000)");
  return [o] {
    apply_common(o->common);
    // Under mpirun rank 0 runs the command and the other ranks take their share of each SAE training
    // (docs/cluster.md); the service's end releases them, however rank 0 finishes.
    if (cluster::rank() != 0) {
      serve_train_sae_calls();
      return 0;
    }
    const TrainSaeService service;
    const Config config = demo_config(build_config(demo_config_schema(), o->config));
    DemoOptions opts = o->demo;
    opts.quiet = o->common.quiet;
    opts.figures = !o->no_figures;
    try {
      const DemoResult r = run_demo(config, opts);
      std::printf(
          "demo run folder:    %s\nphase4a run folder: %s\nactivations:        %s\nreport:             "
          "%s\ntime:               %.0f s\n",
          r.run_dir.c_str(), r.phase4a_run_dir.c_str(), r.activations_path.c_str(),
          r.latest_report_path.c_str(), r.wall_time_s);
      return r.exit_code;
    } catch (const Interrupted& e) {
      return report_experiment_interrupted(e.what());
    }
  };
}

}  // namespace husai::cli
