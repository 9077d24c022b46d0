#pragma once

// The `benchmark-slice` experiment (issue 5; the reference's "phase 4e" local slice, fixed): for each SAE of
// one condition (SAEs that differ only in their seed),
//   * the SAEBench core metric keys (l0, l1, mse, explained_variance, cossim, l2_ratio,
//     relative_reconstruction_bias, ce_loss_score, kl_div_score, frac_alive, feature_density),
//   * sparse probing (metrics/probing.hpp) for a, b, c, c mod 2, c mod 3 on the top 1, 2, 5 latents, against
//     a probe on the full activations, test accuracy on the transformer's held-out pairs,
//   * Fourier ground truth (metrics/fourier.hpp): how much of the transformer's key-frequency subspace the
//     decoder rows recover,
//   * the causal proxy (metrics/causal.hpp) with the per-feature stability of each SAE across the others.
// Writes OUT/results.json, OUT/summary.md, CSVs, figures (PNG + SVG) and OUT/manifest.json; formats in
// docs/formats.md, definitions in docs/experiments_slice.md.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace husai {

struct BenchmarkSliceOptions {
  std::string model_dir;         // transformer run folder (husai train-transformer)
  std::string activations_path;  // husai extract output of that model (one position; a, b, labels, is_train)
  std::string activations_key = "activations";
  std::vector<std::string> sae_dirs;  // SAELens folders; two or more for the causal proxy's stability
  std::string out_dir;
  bool overwrite = false;
  std::vector<int64_t> probe_k = {1, 2, 5};
  double probe_l2 = 1e-4;
  int64_t probe_max_iter = 500;
  int64_t n_key_frequencies = 5;
  std::vector<int64_t> fourier_m = {0};  // 0 = the subspace's rank
  int64_t causal_m = 16;
  int64_t causal_random_repeats = 3;
  uint64_t seed = 0;
  bool figures = true;
  bool quiet = false;
  // Per-feature stability of each SAE ([sae][latent]), e.g. from `husai compare`'s per-feature stability.
  // Empty: per_feature_stability() of the decoders given (needs >= 2 SAEs for the causal proxy).
  std::vector<std::vector<double>> stability;
};

// Per-feature stability of each dictionary among a set: for dictionary a and its decoder row i,
// mean over the other dictionaries b of max_j |cos(W_dec^a_i, W_dec^b_j)|. Rows of equal d_in; needs >= 2.
std::vector<std::vector<double>> per_feature_stability(const std::vector<std::vector<float>>& decoders,
                                                       const std::vector<int64_t>& n_rows, int64_t d_in);

// Runs everything and writes OUT; returns the results.json document.
nlohmann::json run_benchmark_slice(const BenchmarkSliceOptions& options);

}  // namespace husai
