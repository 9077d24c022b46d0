#pragma once

// Reconstruction metrics of an SAE on activation rows, named as CONTRACTS.md ("Metric definitions") names
// them. Sums run in double, in row order: results do not depend on the thread count.

#include <cstdint>

#include <nlohmann/json.hpp>

#include "husai/sae/saelens_io.hpp"

namespace husai {

struct ReconMetrics {
  int64_t n_rows = 0;
  double mse = 0;                           // mean over rows and dimensions of (x - x_hat)^2
  double explained_variance = 0;            // 1 - sum||x - x_hat||^2 / sum||x - mean(x)||^2 (centred)
  double explained_variance_per_dim = 0;    // 1 - sum_d var(x_d - x_hat_d) / sum_d var(x_d)
  double explained_variance_uncentred = 0;  // 1 - sum||x - x_hat||^2 / sum||x||^2
  double l0 = 0;                            // mean count of non-zero latents per row
  double l1 = 0;                            // mean over rows of sum |f|
  double cossim = 0;                        // mean over rows of cos(x, x_hat)
  double l2_ratio = 0;                      // mean over rows of ||x_hat|| / ||x||
  double relative_reconstruction_bias = 0;  // E||x_hat||^2 / E<x, x_hat>
  double frac_dead = 0;                     // latents that never fire on these rows
  double frac_dense = 0;                    // latents firing on more than 10% of the rows
};

ReconMetrics reconstruction_metrics(const SaeModel& sae, const float* x, int64_t n_rows,
                                    int64_t batch_rows = 4096);
nlohmann::json to_json(const ReconMetrics& m);

}  // namespace husai
