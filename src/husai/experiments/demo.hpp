#pragma once

// The main job (`make demo`): the default study end to end, as the phase4a experiment.
//   1. `husai experiment phase4a` through the experiment framework (ROOT/phase4a/<run_id>/, registry row,
//      artifact cache, --resume): train the default transformer until it groks, extract its
//      answer-position activations, train TopK SAEs (d_sae 1024, k 32) and ReLU+L1 SAEs (L1 coefficient
//      tuned to the same held-out L0) on 5 seeds, evaluate each (held-out reconstruction, CE-loss and KL
//      scores spliced into the transformer), and `husai compare` each family against the null
//      dictionaries (the geometry-matched ones decide) and the surrogate-data control;
//   2. ROOT/demo/<run_id>/ (same run id): REPORT.md with the grokking curve, the stability figures
//      (copied to figures/) and a plain-words verdict, config.json, manifest.json; the latest report is
//      copied to ROOT/demo/REPORT.md (its links resolve from there).
// The demo trains its SAEs for kDemoSaeSteps steps unless the config says otherwise: on a 2-core AVX2 machine
// the full controls at phase4a's 3000 steps took 22 minutes (1,328 s measured, AMD EPYC Zen 3), more than the
// demo's 10-minute budget; at 1000 steps the demo took 555 s there. `make reproduce-phase4a` runs the full
// size and reuses the demo's transformer and activations; release-gate / audit find the demo's phase4a run as
// the latest one.

#include <cstdint>
#include <string>

#include "husai/io/config.hpp"

namespace husai {

struct DemoOptions {
  std::string root = "results";
  bool resume = false;  // continue the newest unfinished phase4a run with the same config
  bool figures = true;  // gnuplot figures (the report links them)
  bool quiet = false;
};

struct DemoResult {
  std::string run_dir;             // ROOT/demo/<run_id>/
  std::string phase4a_run_dir;     // ROOT/phase4a/<run_id>/
  std::string report_path;         // ROOT/demo/<run_id>/REPORT.md
  std::string latest_report_path;  // ROOT/demo/REPORT.md
  std::string activations_path;
  double wall_time_s = 0;
  int exit_code = 0;
};

inline constexpr int64_t kDemoSaeSteps = 1000;

// The config schema of the demo: phase4a's (configs/experiments/phase4a.yaml).
ConfigSchema demo_config_schema();

// The demo's reduced size: sae.training.steps = kDemoSaeSteps when the config left it at its default.
Config demo_config(Config config);

// `config` is a Config of demo_config_schema(). Throws Interrupted (experiments/runner.hpp) when stopped
// by SIGINT/SIGTERM; the same command plus resume continues.
DemoResult run_demo(const Config& config, const DemoOptions& options);

}  // namespace husai
