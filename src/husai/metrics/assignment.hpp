#pragma once

// Exact linear assignment (the optimal one-to-one matching behind `matched_mean_cos`).
//
// Given a cost matrix C [n_rows, n_cols] (row-major, double), find the matching of min(n_rows, n_cols) rows
// to distinct columns with the smallest (or, with maximize, the largest) total cost: the problem of
// scipy.optimize.linear_sum_assignment, with the same conventions:
//   * rectangular matrices are allowed; every row (when n_rows <= n_cols) or every column is matched;
//   * the result lists the matched rows in ascending order with their columns;
//   * +inf (when minimising; -inf when maximising) marks a forbidden pair; a matrix with no complete
//     matching through allowed pairs is "infeasible" and throws husai::Error, as does NaN or the opposite
//     infinity.
// Ties may be broken differently from SciPy; the optimal total is the same.
//
// Method: shortest augmenting paths (Jonker & Volgenant 1987; Crouse 2016 for the rectangular case, which is
// what SciPy implements). A square finite matrix first goes through Jonker-Volgenant's initialisation
// (column reduction, reduction transfer, two rounds of augmenting row reduction), which assigns most rows
// cheaply; the remaining rows are matched by Dijkstra searches on reduced costs. Each search scans all
// columns in one branch-free pass per step so the compiler vectorises it. Single-threaded; the result is a
// pure function of the matrix.

#include <cstdint>
#include <memory>
#include <vector>

namespace husai {

struct AssignmentResult {
  std::vector<int64_t> rows;  // matched rows, ascending
  std::vector<int64_t> cols;  // cols[k] is the column matched to rows[k]
  double total = 0;           // sum of cost[rows[k], cols[k]] in the order of rows
};

AssignmentResult linear_sum_assignment(const double* cost, int64_t n_rows, int64_t n_cols,
                                       bool maximize = false);

// The same solver with its buffers kept between calls, for many matrices in a row (one per thread): the
// n_rows x n_cols working copy is allocated once. A float matrix is solved in double (each entry converted
// exactly), its total summed in double.
class AssignmentSolver {
 public:
  AssignmentSolver();
  ~AssignmentSolver();
  AssignmentSolver(AssignmentSolver&&) noexcept;
  AssignmentSolver& operator=(AssignmentSolver&&) noexcept;
  AssignmentSolver(const AssignmentSolver&) = delete;
  AssignmentSolver& operator=(const AssignmentSolver&) = delete;

  AssignmentResult solve(const double* cost, int64_t n_rows, int64_t n_cols, bool maximize = false);
  AssignmentResult solve(const float* cost, int64_t n_rows, int64_t n_cols, bool maximize = false);

 private:
  struct State;
  template <typename T>
  AssignmentResult solve_impl(const T* cost, int64_t n_rows, int64_t n_cols, bool maximize);
  std::unique_ptr<State> state_;
};

}  // namespace husai
