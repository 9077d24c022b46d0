#pragma once

// Stability of two large dictionaries (16k-131k features) without an n_a x n_b matrix in memory.
//
// Everything comes from |cos| computed in row blocks of kLargeBlockRows features of `a` against all of `b`
// (one float GEMM per block, core/gemm.hpp's fixed tiling), so memory is kLargeBlockRows * n_b floats plus
// O((n_a + n_b) * kLargeCandidates) for the candidate graph:
//   * best_ab / best_ba (each feature's best |cos| in the other dictionary) and the pwmcc of stability.hpp:
//     exact (maxima do not depend on the order they are taken in);
//   * matched_mean_cos: the exact maximum-|cos| one-to-one matching (stability.hpp), found without the dense
//     cost matrix:
//       1. candidate graph: each row's kLargeCandidates best columns, plus each column's best row;
//       2. solve the assignment on that sparse graph by shortest augmenting paths with dual potentials
//          (Jonker & Volgenant's method on a sparse graph; rows matched in index order), which leaves
//          potentials u (rows) and v (columns) with cost_ij - u_i - v_j >= 0 on every graph edge, = 0 on the
//          matched ones, v_j <= 0, and v_j = 0 for unmatched columns;
//       3. certify: recompute every |cos| block by block and check cost_ij - u_i - v_j >= -tolerance for ALL
//          pairs. These are the complementary-slackness conditions of the assignment LP, so when they hold
//          the matching is optimal on the full dense problem. Violating pairs are added to the graph and the
//          problem is solved again; `rounds` counts the solves.
//     cost_ij = -|cos_ij| in double (the float |cos| converted exactly); the tolerance is 1e-9.
// Requires n_a <= n_b (every feature of a is matched). Deterministic: the result is a pure function of the
// two dictionaries, whatever the thread count.

#include <cstdint>
#include <functional>
#include <vector>

#include "husai/metrics/stability.hpp"

namespace husai {

inline constexpr int64_t kLargeBlockRows = 256;
inline constexpr int64_t kLargeCandidates = 128;

struct LargeMatchingInfo {
  bool certified = false;  // the dual certificate held on every pair
  int64_t rounds = 0;      // sparse solves (1 when the first candidate graph sufficed)
  int64_t edges = 0;       // edges of the final candidate graph
  int64_t violations_added = 0;
};

// pwmcc, matched_mean_cos and shared fractions of a and b (and best_ab / best_ba with keep_best), as
// pair_stability computes them, blockwise. Throws husai::Error when the dimensions differ, a dictionary is
// empty, or n_a > n_b. `matched` (optional) receives the column of each row of a.
// `candidates`: each row's first candidate count (tests lower it to make the certificate add pairs).
PairStability large_pair_stability(const FeatureSet& a, const FeatureSet& b, bool keep_best,
                                   LargeMatchingInfo* info = nullptr, std::vector<int64_t>* matched = nullptr,
                                   int64_t candidates = kLargeCandidates);

// The same summaries and certified matching for any similarity in [0, 1] given by row blocks:
// fill(i0, i1, block) writes the similarities of rows [i0, i1) of a (i1 - i0 <= kLargeBlockRows) against all
// n_b columns into block [(i1 - i0), n_b], row-major, the same values every time it is asked (activation
// correlations use it: metrics/activation_similarity.hpp). large_pair_stability is this with |cos|.
using SimilarityRowsFn = std::function<void(int64_t i0, int64_t i1, std::vector<float>& block)>;
PairStability large_pair_similarity(int64_t n_a, int64_t n_b, const SimilarityRowsFn& fill, bool keep_best,
                                    LargeMatchingInfo* info = nullptr,
                                    std::vector<int64_t>* matched = nullptr,
                                    int64_t candidates = kLargeCandidates);

// The sparse assignment of step 2 on its own (exposed for tests): n_rows rows, n_cols >= n_rows columns, the
// edges of each row (cols and costs, CSR by row_ptr). Minimises the total cost with every row matched; fills
// u, v as described above. Returns false when the graph has no matching of every row.
struct SparseAssignment {
  std::vector<int64_t> col_of_row;  // [n_rows]
  std::vector<double> u, v;         // [n_rows], [n_cols]
};
bool solve_sparse_assignment(int64_t n_rows, int64_t n_cols, const std::vector<int64_t>& row_ptr,
                             const std::vector<int32_t>& cols, const std::vector<double>& costs,
                             SparseAssignment& out);

}  // namespace husai
