#pragma once

// The `consistency-sweep` experiment (issue 5; the reference's consistency-objective sweep, fixed):
//   1. train one reference SAE on its own seed (never one of the evaluated seeds);
//   2. for each ratio r of the grid, train SAEs on the evaluated seeds with the alignment penalty
//      lambda * (1 - mean_i max_j |cos(D_i, R_j)|) to the reference (train/consistency.hpp), where
//      lambda = r * mse_ref and mse_ref = E||x - x_hat||^2 of the reference on its held-out rows in the
//      trainer's (scaled) units: held_out.mse * d_in * activation_scaling_factor^2. r = 0 is the unpenalised
//      control;
//   3. per r: stability among the evaluated seeds only (the reference is excluded from every pair), against a
//      Gaussian null of the same shape, the alignment of each SAE to the reference (reported apart), and the
//      held-out explained variance;
//   4. select, among the r whose mean EV is within max_ev_drop of r = 0's, the one of largest trained - null
//      stability (ties: the smaller r).
// Writes OUT/results.json, OUT/summary.md, OUT/sweep.csv, OUT/pairs.csv, figures and OUT/manifest.json.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "husai/io/config.hpp"

namespace husai {

struct ConsistencySweepOptions {
  std::string activations_path;
  std::string sae_config;                  // optional train-sae YAML (configs/sae/*.yaml)
  std::vector<std::string> sae_overrides;  // "section.key=value" on top of it
  uint64_t reference_seed = 7;
  std::vector<uint64_t> seeds = {42, 123, 456};
  std::vector<double> lambda_ratios = {0.0, 0.01, 0.03, 0.1, 0.3, 1.0};
  double max_ev_drop = 0.05;
  uint64_t null_seed = 1000;  // Gaussian null dictionaries use seeds null_seed, null_seed + 1, ...
  std::string out_dir;
  bool resume = false;  // reuse finished SAE runs in OUT (train-sae --resume semantics)
  bool overwrite = false;
  bool figures = true;
  bool quiet = false;
  // Trains (or reuses) a train-sae run for a resolved train-sae config and returns its folder; `name` is
  // "reference" or "ratio_<i>". Empty: train_sae into OUT/<name> (resuming a folder that is there). The
  // experiment framework passes its artifact cache here.
  std::function<std::string(const Config& sae_config, const std::string& name)> train_run;
};

// 0.5 * (mean_i max_j |cos(a_i, b_j)| + mean_j max_i |cos(a_i, b_j)|) of two decoders [n_a, d] and [n_b, d]
// (the reference project's PWMCC, on decoder rows, no orientation guessing).
double decoder_pwmcc(const std::vector<float>& a, int64_t n_a, const std::vector<float>& b, int64_t n_b,
                     int64_t d);

nlohmann::json run_consistency_sweep(const ConsistencySweepOptions& options);

}  // namespace husai
