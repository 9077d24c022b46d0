#pragma once

// `husai compare`: how alike are SAEs that differ only in their seed, and is that more than chance?
// Loads two or more SAE folders (same d_in), computes every pairwise stability metric for the decoder rows
// and the encoder columns, the per-feature stability of each SAE, the same metrics for each null baseline
// (gaussian, untrained, covariance) over as many null seeds as trained SAEs, and the seed-level statistics
// (metrics/statistics.hpp) of trained against each null. Writes OUT/stability.json, OUT/summary.md, CSVs
// and figures (PNG + SVG), and OUT/manifest.json; formats in docs/formats.md.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace husai {

struct CompareOptions {
  std::vector<std::string> sae_dirs;  // two or more SAELens (or sparsify) folders, in the order given
  std::vector<std::string> nulls;  // empty = default: gaussian, untrained, plus covariance with activations
  int64_t null_seeds = 0;          // 0 = as many as sae_dirs
  std::string activations_path;    // optional: enables the covariance null
  std::string activations_key = "activations";
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
