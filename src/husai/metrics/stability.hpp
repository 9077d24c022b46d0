#pragma once

// How alike are two dictionaries? Pairwise feature similarity between SAEs (REFERENCE.md section 5,
// CONTRACTS.md "Stability").
//
// A dictionary is a set of feature vectors in R^dim. For an SAE in SAELens layout the decoder features are
// the rows of W_dec [d_sae, d_in] and the encoder features the columns of W_enc [d_in, d_sae]. Which is which
// is fixed by the layout, never guessed from the shape (the reference transposed any decoder with more rows
// than columns, so for d_sae < d_in it compared the wrong vectors).
//
// For dictionaries a (n_a features) and b (n_b features), every vector unit-normalised, C = |a b^T| [n_a,
// n_b]:
//   pwmcc_ab          = mean_i max_j C_ij           (each feature of a: its best match in b)
//   pwmcc_ba          = mean_j max_i C_ij
//   pwmcc             = 0.5 * (pwmcc_ab + pwmcc_ba)  (the reference's max-based score)
//   matched_mean_cos  = mean of C over the optimal one-to-one matching (linear assignment maximising the
//                       total |cos|; min(n_a, n_b) matched pairs): the PW-MCC of Song et al. (2025)
//   shared_frac_T     = fraction of those matched pairs with |cos| >= T, T in {0.5, 0.7, 0.9}
// A zero vector has no direction: it stays zero after normalisation and has |cos| 0 with everything.
//
// C is one float GEMM per pair (core/gemm.hpp, single-threaded per pair); pairs run in parallel; all sums are
// in double in index order. Results do not depend on the thread count.

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "husai/metrics/assignment.hpp"
#include "husai/sae/saelens_io.hpp"

namespace husai {

struct FeatureSet {
  int64_t n_features = 0;
  int64_t dim = 0;
  std::vector<float> rows;  // [n_features, dim], each row unit norm (or zero)
};

// Features given as the rows of [n, dim] (row-major).
FeatureSet features_from_rows(const float* rows, int64_t n, int64_t dim);
// Features given as the columns of [dim, n] (row-major): feature f is (m[0, f], m[1, f], ...).
FeatureSet features_from_columns(const float* m, int64_t dim, int64_t n);
// An SAE's decoder features (rows of W_dec) and encoder features (columns of W_enc).
FeatureSet decoder_features(const SaeModel& sae);
FeatureSet encoder_features(const SaeModel& sae);

inline constexpr std::array<double, 3> kSharedThresholds = {0.5, 0.7, 0.9};

// Above this many |cos| entries (n_a * n_b) a pair is compared blockwise (metrics/large_matching.hpp: no
// n_a x n_b matrix, an exact matching certified by its dual potentials) instead of through the dense matrix;
// at or below it, through the dense matrix and the dense assignment solver. 4,096^2 floats = 64 MiB.
inline constexpr int64_t kDenseStabilityLimit = int64_t{4096} * 4096;

struct PairStability {
  double pwmcc = 0;
  double pwmcc_ab = 0;
  double pwmcc_ba = 0;
  double matched_mean_cos = 0;
  std::array<double, 3> shared_frac{};  // at kSharedThresholds
  std::vector<float> best_ab;           // [n_a]: max_j C_ij (only with keep_best)
  std::vector<float> best_ba;           // [n_b]: max_i C_ij (only with keep_best)
  // Blockwise path only (n_a * n_b > kDenseStabilityLimit): sparse solves until the optimality certificate
  // held, and the candidate edges then (0 and 0: the dense solver, which needs no certificate).
  int64_t matching_rounds = 0;
  int64_t matching_edges = 0;
  // The optimal matching itself (only with keep_best): matched (row of a, column of b) pairs in row order and
  // each pair's |cos|.
  std::vector<std::pair<int32_t, int32_t>> matching;
  std::vector<float> matched_cos;
};

// Scratch reused across pairs by one thread: the |cos| matrix, column maxima and the assignment solver.
struct StabilityWorkspace {
  std::vector<float> cos;
  std::vector<float> col_max;
  AssignmentSolver solver;
};

// |a b^T| into out [a.n_features, b.n_features]. Throws husai::Error when the dimensions differ.
void abs_cosine_matrix(const FeatureSet& a, const FeatureSet& b, float* out);

PairStability pair_stability(const FeatureSet& a, const FeatureSet& b, StabilityWorkspace& ws,
                             bool keep_best = false);
PairStability pair_stability(const FeatureSet& a, const FeatureSet& b, bool keep_best = false);

// The listed pairs (indices into sets) in parallel, one single-threaded GEMM and assignment per pair.
std::vector<PairStability> pair_stabilities(const std::vector<const FeatureSet*>& sets,
                                            const std::vector<std::pair<int64_t, int64_t>>& pairs,
                                            bool keep_best = false);

// All pairs (i, j), i < j, of n items in row order: (0,1), (0,2), ..., (1,2), ...
std::vector<std::pair<int64_t, int64_t>> upper_pairs(int64_t n);

// Within-dictionary nearest neighbour: for each feature i, max_{j != i} |cos(f_i, f_j)| (0 for a zero
// feature, and for every feature of a one-feature dictionary). The mean of these is the reference line beside
// the nulls: how alike a dictionary's atoms are to each other. Computed in row blocks of
// kNearestNeighbourBlock features against all n (one float GEMM per block, core/gemm.hpp's fixed tiling), so
// memory is kNearestNeighbourBlock * n floats and the result does not depend on the thread count.
inline constexpr int64_t kNearestNeighbourBlock = 256;
std::vector<float> nearest_neighbour_abs_cos(const FeatureSet& f);

// Per-feature stability of each of n dictionaries from the results of all their pairs (as listed by
// upper_pairs(n), computed with keep_best): for each feature of dictionary i, the mean over the other
// dictionaries j of its best |cos| in j (best_ab of (i, j) when i < j, best_ba of (j, i) otherwise), summed
// in order of j.
std::vector<std::vector<double>> per_feature_stability(int64_t n, const std::vector<PairStability>& pairs);

}  // namespace husai
