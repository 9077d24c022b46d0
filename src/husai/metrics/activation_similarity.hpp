#pragma once

// How alike are two SAEs by what their latents *do* on the same inputs? Activation-based matching.
//
// Decoder cosines (metrics/stability.hpp) compare directions in one residual basis, so they mean nothing
// between SAEs trained on different transformers (each transformer has its own basis). What can be compared
// is how the latents fire on the same input rows: for SAEs a and b evaluated on the same N rows (row n of
// both is the same model input), with latent activations Z_a [N, F_a] and Z_b [N, F_b],
//   R_ij = Pearson correlation of column i of Z_a with column j of Z_b     (columns centred)
//   C    = |R|                                                               [F_a, F_b]
// and on C the same summaries as stability.hpp's PairStability has on |cos|:
//   act_pwmcc_ab           = mean_i max_j C_ij,  act_pwmcc_ba = mean_j max_i C_ij,
//   act_pwmcc              = 0.5 * (act_pwmcc_ab + act_pwmcc_ba)
//   act_matched_mean_corr  = mean of C over the optimal one-to-one matching (exact linear assignment,
//                            metrics/assignment.hpp; min(F_a, F_b) matched pairs)
//   act_shared_frac_T      = fraction of those matched pairs with C >= T, T in kSharedThresholds
//   (0.5/0.7/0.9)
// A latent whose column has zero variance over the rows (dead, or constant) has no correlation: its row /
// column of C is 0, as a zero decoder vector has |cos| 0 in stability.hpp, so dead latents lower the scores.
//
// Latents are stored sparse by row (an SAE's latents are mostly zero: TopK keeps k per row), and every sum is
// in double in a fixed order (rows ascending, then the non-zero latents of a row ascending):
//   mean_i = (1/N) sum_n z_ni,   ss_i = sum_{n: z_ni != 0} (z_ni - mean_i)^2 + (N - nnz_i) mean_i^2
//   S_ij   = sum_n z_ni z'_nj  (only rows where both are non-zero contribute),
//   R_ij   = (S_ij - N mean_i mean'_j) / sqrt(ss_i ss'_j), clamped to [-1, 1]
// which is the centred correlation without densifying the centred matrix. Cost per pair:
// O(sum_n nnz_a(n) nnz_b(n) + F_a F_b) plus one F_a x F_b assignment; no float GEMM, so the result is the
// same on every machine and for every thread count (pairs run in parallel, each single-threaded).

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "husai/metrics/assignment.hpp"
#include "husai/metrics/large_matching.hpp"
#include "husai/metrics/stability.hpp"
#include "husai/sae/saelens_io.hpp"

namespace husai {

// The latent activations of one SAE on N rows: the non-zero entries by row (CSR) and per-latent column
// statistics (see above).
struct LatentActivations {
  int64_t n_rows = 0;
  int64_t n_latents = 0;
  std::vector<int64_t> row_ptr;    // [n_rows + 1]: row n's entries are [row_ptr[n], row_ptr[n + 1])
  std::vector<int32_t> latent;     // latent index of each entry, ascending within a row
  std::vector<double> value;       // its activation (non-zero)
  std::vector<double> mean;        // [n_latents]: column mean over all n_rows rows
  std::vector<double> centred_ss;  // [n_latents]: sum over rows of (z - mean)^2; 0 = zero variance

  // Latents with zero variance over the rows (never fire, or always the same value).
  int64_t n_zero_variance() const;
};

// From a dense matrix z [n_rows, n_latents] (row-major). Throws husai::Error on a non-finite entry (naming
// the row and latent, 0-based) or n_rows < 2.
LatentActivations latent_activations_from_dense(const float* z, int64_t n_rows, int64_t n_latents);

// The SAE's latents (SaeModel::encode) on the rows x [n_rows, sae.d_in], encoded `batch_rows` rows at a time
// so the dense [n_rows, d_sae] matrix is never held whole.
LatentActivations sae_latent_activations(const SaeModel& sae, const float* x, int64_t n_rows,
                                         int64_t batch_rows = 4096);

// The same rows in another order: row n of the result is row order[n] of `z` (a permutation of 0..n_rows-1).
// Correlating with a row-permuted copy breaks the row correspondence: the chance level of the scores.
LatentActivations permute_rows(const LatentActivations& z, const std::vector<int64_t>& order);

struct ActivationPairSimilarity {
  double act_pwmcc = 0;
  double act_pwmcc_ab = 0;
  double act_pwmcc_ba = 0;
  double act_matched_mean_corr = 0;
  std::array<double, 3> act_shared_frac{};  // at kSharedThresholds
  int64_t zero_variance_a = 0, zero_variance_b = 0;
};

// Scratch reused across pairs by one thread.
struct ActivationSimilarityWorkspace {
  std::vector<double> corr;
  std::vector<double> col_max;
  AssignmentSolver solver;
};

// |R| into out [a.n_latents, b.n_latents] (row-major). Throws husai::Error when the row counts differ.
void abs_correlation_matrix(const LatentActivations& a, const LatentActivations& b, double* out);

ActivationPairSimilarity activation_pair_similarity(const LatentActivations& a, const LatentActivations& b,
                                                    ActivationSimilarityWorkspace& ws);
ActivationPairSimilarity activation_pair_similarity(const LatentActivations& a, const LatentActivations& b);

// The same scores without the dense [F_a, F_b] matrix, for 16k-131k latents: |R| is computed in blocks of
// kLargeBlockRows latents of the smaller SAE (its entries by column, so every S_ij still sums in row order),
// converted to float, and matched by metrics/large_matching.hpp's certified sparse assignment. The scores
// equal the dense ones up to that float rounding (about 1e-7). info (optional) receives the certificate.
ActivationPairSimilarity large_activation_pair_similarity(const LatentActivations& a,
                                                          const LatentActivations& b,
                                                          LargeMatchingInfo* info = nullptr);

// The listed pairs (indices into sets) in parallel, one single-threaded computation per pair.
std::vector<ActivationPairSimilarity> activation_pair_similarities(
    const std::vector<const LatentActivations*>& sets, const std::vector<std::pair<int64_t, int64_t>>& pairs);

}  // namespace husai
