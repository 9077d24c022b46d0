#pragma once

// The main job (`make demo`): the default study end to end.
//   1. train the default transformer until it groks (held-out accuracy >= 0.99);
//   2. extract its answer-position activations (blocks.1.hook_resid_post at '=');
//   3. train TopK SAEs (d_sae 1024, k 32) and ReLU SAEs (L1 coefficient set for L0 near 32) on 5 seeds each,
//      all seeds of a family in one pass;
//   4. evaluate every SAE (held-out reconstruction, CE-loss and KL scores spliced into the transformer);
//   5. `husai compare` each family against the gaussian, untrained and covariance nulls;
//   6. write ROOT/demo/<run_id>/REPORT.md with the grokking curve, the stability figures and a plain-words
//      verdict, and copy it to ROOT/demo/REPORT.md (latest demo; figure links resolve from there).

#include <cstdint>
#include <string>
#include <vector>

#include "husai/io/config.hpp"

namespace husai {

struct DemoOptions {
  std::string root = "results";
  std::vector<uint64_t> seeds = {42, 123, 456, 789, 1011};  // the reference's phase-4a seeds
  int64_t sae_steps = 0;      // 0 = the SAE defaults (configs/sae/*.yaml: 3,000 steps of 1,024 rows)
  int64_t d_sae = 1024;       // 8 x d_model
  int64_t k = 32;             // TopK
  double relu_l1 = 0.5;       // ReLU L1 coefficient: L0 near 32 on the default model (docs/RESULTS.md)
  int64_t bootstrap = 10000;  // seed-bootstrap resamples in compare
  bool quiet = false;
};

struct DemoResult {
  std::string run_dir;
  std::string report_path;         // ROOT/demo/<run_id>/REPORT.md
  std::string latest_report_path;  // ROOT/demo/REPORT.md
  std::string activations_path;
  double wall_time_s = 0;
};

DemoResult run_demo(const Config& transformer_config, const DemoOptions& options);

}  // namespace husai
