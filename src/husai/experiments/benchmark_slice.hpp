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
// Writes OUT/results.json, OUT/summary.md, CSVs, figures (PNG + SVG) and (standalone) OUT/manifest.json;
// formats in docs/formats.md, definitions in docs/experiments.md. `husai experiment benchmark-slice`
// (benchmark_slice_experiment.cpp) runs it inside the experiment framework's run folder.

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
  // true: OUT is prepared (refused when not empty unless overwrite) and OUT/manifest.json written here.
  // false: OUT belongs to a caller that writes the manifest (the experiment framework's run folder).
  bool standalone = true;
  nlohmann::json extra = nlohmann::json::object();  // keys added to results.json (e.g. run_id)
  // Per-feature stability of each SAE ([sae][latent]), e.g. from `husai compare`'s per-feature stability.
  // Empty: metrics/stability.hpp's per_feature_stability of the decoders given (the same numbers compare
  // writes to per_feature.csv; needs >= 2 SAEs for the causal proxy).
  std::vector<std::vector<double>> stability;
};

// Runs everything and writes OUT; returns the results.json document.
nlohmann::json run_benchmark_slice(const BenchmarkSliceOptions& options);

}  // namespace husai
