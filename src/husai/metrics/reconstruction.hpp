#pragma once

// Reconstruction and sparsity metrics of an SAE (the `eval-sae` keys of CONTRACTS.md), computed from
// plain arrays so that they do not depend on any SAE class. Shapes: N = rows, D = d_in (the width of x),
// F = d_sae (the number of latents). x and x_hat are [N, D], dense latents [N, F], all row-major float.
//
// Definitions (sums over the rows fed, norms over the D dimensions of a row):
//   mse                           = sum ||x - x_hat||^2 / (N * D)      (mean over rows *and* dimensions)
//   explained_variance            = 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2     (centred)
//   explained_variance_per_dim    = 1 - sum_d var(x_d - x_hat_d) / sum_d var(x_d)       (error centred too)
//   explained_variance_uncentred  = 1 - sum ||x - x_hat||^2 / sum ||x||^2              (inflated; named so)
//   l0                            = mean over rows of the number of non-zero latents
//   l1                            = mean over rows of sum_i |f_i|                     (no decoder-norm
//   weight) frac_dead                     = fraction of latents non-zero on no row frac_dense = fraction of
//   latents non-zero on more than 10% of the rows cossim                        = mean over rows of <x,
//   x_hat> / (||x|| ||x_hat||) l2_ratio                      = mean over rows of ||x_hat|| / ||x||
//   relative_reconstruction_bias  = sum ||x_hat||^2 / sum <x, x_hat>   (= E||x_hat||^2 / E<x, x_hat>)
// var is the population variance (divide by N); the per-dimension ratio does not depend on that choice.
// "Fires" means "is non-zero": negative latents (signed TopK) fire too.
//
// Conventions for degenerate rows and sets:
//   * A row with ||x|| = 0 has no direction and no scale, so cos and the norm ratio are undefined for it:
//     cossim and l2_ratio average over the rows with ||x|| > 0 only (n_zero_norm_rows says how many were
//     left out). A row with ||x|| > 0 and ||x_hat|| = 0 counts with cos = 0 and ratio 0. Every other metric
//     uses every row, zero rows included.
//   * A ratio whose denominator is 0 (constant x for the explained variances, x = 0 everywhere for the
//     uncentred one, sum <x, x_hat> = 0 for the bias, no non-zero row for cossim/l2_ratio) is NaN, which
//     to_json() writes as null. Non-finite inputs propagate into the metrics; they are not rejected.
//
// Determinism: everything is accumulated in double. Rows are cut into chunks of kChunkRows at fixed
// global row indices (0, kChunkRows, ...); each chunk is summed sequentially in row order and the chunks
// are added in order. The result therefore depends only on the rows fed and their order: not on the thread
// count, and not on how the rows were split into add() calls.

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace husai {

// Latents in sparse (CSR) form: row r's active latents are indices[j], values[j] for j in
// [row_offsets[r], row_offsets[r + 1]); row_offsets has n_rows + 1 entries and starts anywhere (only
// differences and the indices/values it points at are read). Indices must lie in [0, d_sae) and be distinct
// within a row; entries whose value is 0 do not count as firing. For TopK with fixed k, row_offsets[r] = k*r.
struct SparseLatents {
  const int64_t* row_offsets = nullptr;
  const int64_t* indices = nullptr;
  const float* values = nullptr;
};

struct ReconstructionMetrics {
  int64_t n_rows = 0;
  int64_t d_in = 0;
  int64_t d_sae = 0;
  double mse = 0;
  double explained_variance = 0;
  double explained_variance_per_dim = 0;
  double explained_variance_uncentred = 0;
  double l0 = 0;
  double l1 = 0;
  double frac_dead = 0;
  double frac_dense = 0;
  double cossim = 0;
  double l2_ratio = 0;
  double relative_reconstruction_bias = 0;
  int64_t n_zero_norm_rows = 0;         // rows with ||x|| = 0, left out of cossim and l2_ratio
  std::vector<int64_t> feature_counts;  // [d_sae]: rows on which each latent fired

  // feature_counts / n_rows: the per-latent firing frequency ("feature density").
  std::vector<double> feature_density() const;

  // {"n_rows", "mse", "explained_variance", "explained_variance_per_dim", "explained_variance_uncentred",
  //  "l0", "l1", "frac_dead", "frac_dense", "cossim", "l2_ratio", "relative_reconstruction_bias"};
  // NaN becomes null. With include_feature_density, also "feature_density" (array of d_sae fractions).
  nlohmann::json to_json(bool include_feature_density = false) const;
};

namespace detail {
// Sums over a set of rows (one chunk, or everything).
struct ReconstructionSums {
  int64_t rows = 0;
  int64_t nonzero_rows = 0;  // rows with ||x|| > 0
  int64_t active = 0;        // non-zero latents over all rows
  double sq_err = 0;         // sum ||x - x_hat||^2
  double sq_x = 0;           // sum ||x||^2
  double sq_x_hat = 0;       // sum ||x_hat||^2
  double dot = 0;            // sum <x, x_hat>
  double cos = 0;            // sum of cos(x, x_hat) over rows with ||x|| > 0
  double ratio = 0;          // sum of ||x_hat|| / ||x|| over rows with ||x|| > 0
  double l1 = 0;             // sum |f|
  // Per dimension, shifted by the first row ever fed so that the variances do not lose their digits to a
  // large mean: sums of (x - x_0), (x - x_0)^2, (e - e_0), (e - e_0)^2 with e = x - x_hat.
  std::vector<double> x1, x2, e1, e2;
  std::vector<int64_t> counts;  // [d_sae]: rows on which each latent fired

  void reset(int64_t d_in, int64_t d_sae);
  void add(const ReconstructionSums& other);
};
}  // namespace detail

// Streams batches of rows; finish() gives the metrics of every row fed so far (and may be called again
// after more batches).
class ReconstructionAccumulator {
 public:
  static constexpr int64_t kChunkRows = 256;

  // Throws husai::Error unless d_in >= 1 and d_sae >= 1.
  ReconstructionAccumulator(int64_t d_in, int64_t d_sae);

  // x, x_hat [n_rows, d_in]; latents [n_rows, d_sae] dense.
  void add(const float* x, const float* x_hat, const float* latents, int64_t n_rows);
  // Same with sparse latents; throws husai::Error (naming the row, counted from the first row ever fed) for
  // an index out of range or repeated within a row, or decreasing row_offsets, and then adds nothing.
  void add(const float* x, const float* x_hat, const SparseLatents& latents, int64_t n_rows);

  int64_t n_rows() const { return n_rows_; }

  // Throws husai::Error when no row has been fed.
  ReconstructionMetrics finish() const;

 private:
  template <typename RowLatents>
  void add_rows(const float* x, const float* x_hat, int64_t n_rows, const RowLatents& latents);

  int64_t d_in_;
  int64_t d_sae_;
  int64_t n_rows_ = 0;
  std::vector<double> shift_x_, shift_err_;  // set from the first row
  detail::ReconstructionSums total_;         // every completed chunk, added in order
  detail::ReconstructionSums open_;          // the chunk being filled (fewer than kChunkRows rows)
};

// One-shot convenience over dense latents.
ReconstructionMetrics reconstruction_metrics(const float* x, const float* x_hat, const float* latents,
                                             int64_t n_rows, int64_t d_in, int64_t d_sae);

}  // namespace husai
