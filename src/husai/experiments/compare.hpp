#pragma once

// `husai compare`: how alike are SAEs that differ only in their seed, and is that more than chance?
// Loads two or more SAE folders (same d_in), builds the comparison groups (null dictionaries of each kind in
// metrics/nulls.hpp and, with `surrogate`, the same SAE family trained on surrogate data) and runs the
// stability study (metrics/stability_study.hpp): every pairwise metric for the decoder rows and the encoder
// columns, per-feature stability, seed-level statistics and one verdict rule. Writes OUT/stability.json,
// OUT/summary.md, CSVs and figures (PNG + SVG) through experiments/stability_report.hpp, and
// OUT/manifest.json last; formats in docs/formats.md.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace husai {

inline constexpr int64_t kDefaultMinNullSeeds = 10;

struct CompareOptions {
  std::vector<std::string> sae_dirs;  // two or more SAELens (or sparsify) folders, in the order given
  // Empty = default: gaussian, untrained, second_moment, rotation, plus covariance and axis_reflection with
  // activations. {"none"}: no nulls.
  std::vector<std::string> nulls;
  int64_t null_seeds = 0;  // 0 = max(number of SAEs, kDefaultMinNullSeeds); axis_reflection: one per SAE
  // "gaussian": also train the same SAE family on Gaussian surrogate data with the activations' mean and
  // covariance (same rows, config and seeds) into OUT/surrogate/ and compare against it. Needs activations.
  std::string surrogate;
  uint64_t surrogate_seed = 0;  // seed of the surrogate rows
  // Optional transformer run folder: key frequencies by embedding power for the feature-type breakdown
  // (written when the activations are an answer-position modular-addition file).
  std::string model_dir;
  std::string activations_path;  // optional: enables the covariance null
  std::string activations_key = "activations";
  // Activation files with more rows are streamed (covariance null) instead of read into memory.
  int64_t buffer_rows = 131072;
  // With activations: activation similarity of every pair on the first activation_rows rows
  // (experiments/compare_activations.hpp); 0 skips it.
  int64_t activation_rows = 16384;
  int64_t bootstrap = 10000;  // seed-bootstrap resamples (and Monte Carlo permutations when not exact)
  double confidence = 0.95;
  uint64_t seed = 0;  // seeds the statistics' draws; null dictionaries use seeds 1000, 1001, ... (CONTRACTS)
  std::string out_dir;  // refused when it exists and is not empty unless resume/overwrite
  bool overwrite = false;
  bool figures = true;  // render the gnuplot figures (PNG + SVG)
  bool quiet = false;
};

// Runs the comparison and writes everything into options.out_dir; returns the stability.json document.
nlohmann::json run_compare(const CompareOptions& options);

}  // namespace husai
