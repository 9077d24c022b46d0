#include "husai/metrics/assignment.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <utility>

#include "husai/core/error.hpp"

namespace husai {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The solver's state for a minimisation problem with n_rows <= n_cols. Duals satisfy
// c[i][j] - u[i] - v[j] >= 0 for every row already matched and equality on its matched pair.
struct Lap {
  const double* c = nullptr;  // [nr, nc]
  int64_t nr = 0, nc = 0;
  std::vector<double> u, v;
  std::vector<int64_t> col4row, row4col;
  // Scratch of one search.
  std::vector<double> dist;      // shortest reduced path cost to each column
  std::vector<int64_t> path;     // row preceding each column on its shortest path
  std::vector<uint8_t> scanned;  // 1 once a column's distance is final
  std::vector<int64_t> scanned_rows, scanned_cols;

  void reset(const double* cost, int64_t rows, int64_t cols) {
    c = cost;
    nr = rows;
    nc = cols;
    u.assign(static_cast<size_t>(rows), 0.0);
    v.assign(static_cast<size_t>(cols), 0.0);
    col4row.assign(static_cast<size_t>(rows), -1);
    row4col.assign(static_cast<size_t>(cols), -1);
    dist.resize(static_cast<size_t>(cols));
    path.resize(static_cast<size_t>(cols));
    scanned.resize(static_cast<size_t>(cols));
  }

  // Jonker-Volgenant initialisation of a square finite matrix: column reduction, reduction transfer and two
  // rounds of augmenting row reduction. Leaves feasible duals and a partial matching in which every matched
  // row's column has the smallest reduced cost of its row. Returns the rows left unmatched.
  std::vector<int64_t> jv_init() {
    const int64_t n = nr;
    // Column reduction: v[j] = min_i c[i][j] (first row on ties), read row by row for the cache.
    std::vector<int64_t> argmin_row(static_cast<size_t>(n), 0);
    std::copy(c, c + n, v.begin());
    double* vv = v.data();
    int64_t* am = argmin_row.data();
    for (int64_t i = 1; i < n; ++i) {
      const double* ci = c + i * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const bool lower = ci[j] < vv[j];
        am[j] = lower ? i : am[j];
        vv[j] = lower ? ci[j] : vv[j];
      }
    }
    std::vector<int64_t> matches(static_cast<size_t>(n), 0);
    for (int64_t j = n - 1; j >= 0; --j) {
      const int64_t i = argmin_row[static_cast<size_t>(j)];
      if (++matches[static_cast<size_t>(i)] == 1) {
        col4row[static_cast<size_t>(i)] = j;
        row4col[static_cast<size_t>(j)] = i;
      }
    }
    // Reduction transfer: a row that is the minimum of exactly one column hands that column's slack over.
    std::vector<int64_t> free_rows;
    for (int64_t i = 0; i < n; ++i) {
      if (matches[static_cast<size_t>(i)] == 0) {
        free_rows.push_back(i);
      } else if (matches[static_cast<size_t>(i)] == 1) {
        const int64_t j1 = col4row[static_cast<size_t>(i)];
        const double* ci = c + i * n;
        double m = kInf;
        for (int64_t j = 0; j < n; ++j) {
          if (j != j1) m = std::min(m, ci[j] - v[static_cast<size_t>(j)]);
        }
        if (m < kInf) v[static_cast<size_t>(j1)] -= m;
      }
    }
    // Augmenting row reduction (two rounds): each free row takes its cheapest column, lowering that column's
    // dual to its second-cheapest reduced cost, and evicts the column's owner. The cap guards against long
    // chains of tiny decrements; rows still free go to the shortest-path phase, which is exact regardless.
    for (int round = 0; round < 2 && !free_rows.empty(); ++round) {
      std::vector<int64_t> next;
      size_t k = 0;
      int64_t budget = 8 * n + 64;
      while (k < free_rows.size()) {
        const int64_t i = free_rows[k++];
        if (--budget < 0) {
          next.push_back(i);
          continue;
        }
        // The two smallest reduced costs of row i (first index on ties), in vectorised passes.
        const double* ci = c + i * n;
        double* h = dist.data();
        double umin = kInf;
#pragma omp simd reduction(min : umin)
        for (int64_t j = 0; j < n; ++j) {
          h[j] = ci[j] - v[static_cast<size_t>(j)];
          umin = h[j] < umin ? h[j] : umin;
        }
        int64_t j1 = 0;
        while (h[j1] != umin) ++j1;
        h[j1] = kInf;
        double usubmin = kInf;
#pragma omp simd reduction(min : usubmin)
        for (int64_t j = 0; j < n; ++j) usubmin = h[j] < usubmin ? h[j] : usubmin;
        int64_t j2 = -1;
        if (usubmin < kInf) {
          j2 = 0;
          while (h[j2] != usubmin) ++j2;
        }
        int64_t i0 = row4col[static_cast<size_t>(j1)];
        const bool strict = umin < usubmin;
        if (strict) {
          if (usubmin < kInf) v[static_cast<size_t>(j1)] -= usubmin - umin;
        } else if (i0 >= 0 && j2 >= 0) {
          j1 = j2;
          i0 = row4col[static_cast<size_t>(j1)];
        }
        col4row[static_cast<size_t>(i)] = j1;
        row4col[static_cast<size_t>(j1)] = i;
        if (i0 >= 0) {
          col4row[static_cast<size_t>(i0)] = -1;
          if (strict) {
            free_rows[--k] = i0;  // retry the evicted row at once
          } else {
            next.push_back(i0);
          }
        }
      }
      free_rows = std::move(next);
    }
    // Implicit row duals made explicit: u[i] = c[i][x_i] - v[x_i] for matched rows, 0 for free ones (the
    // search of a free row does not read its own dual's starting value).
    for (int64_t i = 0; i < n; ++i) {
      const int64_t j = col4row[static_cast<size_t>(i)];
      u[static_cast<size_t>(i)] = j >= 0 ? c[i * n + j] - v[static_cast<size_t>(j)] : 0.0;
    }
    return free_rows;
  }

  // Dijkstra from row `cur` over reduced costs to the nearest unmatched column, then the dual update and the
  // augmentation along the path (Crouse 2016, section III). Returns false when no unmatched column is
  // reachable through finite costs.
  bool augment(int64_t cur) {
    std::fill(dist.begin(), dist.end(), kInf);
    std::fill(scanned.begin(), scanned.end(), uint8_t{0});
    scanned_rows.clear();
    scanned_cols.clear();
    double min_val = 0;
    int64_t i = cur;
    int64_t sink = -1;
    double* d = dist.data();
    int64_t* p = path.data();
    const uint8_t* sc = scanned.data();
    const double* vv = v.data();
    while (sink < 0) {
      scanned_rows.push_back(i);
      const double* ci = c + i * nc;
      const double base = min_val - u[static_cast<size_t>(i)];
      double lowest = kInf;
      // One branch-free pass: relax every unscanned column through row i and take the smallest distance
      // (`omp simd` lets the min reduction vectorise without fast-math).
#pragma omp simd reduction(min : lowest)
      for (int64_t j = 0; j < nc; ++j) {
        const double r = base + ci[j] - vv[j];
        const bool open = sc[j] == 0;
        const bool better = open && r < d[j];
        d[j] = better ? r : d[j];
        p[j] = better ? i : p[j];
        const double cand = open ? d[j] : kInf;
        lowest = cand < lowest ? cand : lowest;
      }
      if (!(lowest < kInf)) return false;
      // The first unscanned column at the lowest distance, preferring an unmatched one (ends the search).
      int64_t pick = -1;
      for (int64_t j = 0; j < nc; ++j) {
        if (sc[j] == 0 && d[j] == lowest) {
          if (row4col[static_cast<size_t>(j)] < 0) {
            pick = j;
            break;
          }
          if (pick < 0) pick = j;
        }
      }
      min_val = lowest;
      scanned[static_cast<size_t>(pick)] = 1;
      scanned_cols.push_back(pick);
      if (row4col[static_cast<size_t>(pick)] < 0) {
        sink = pick;
      } else {
        i = row4col[static_cast<size_t>(pick)];
      }
    }
    u[static_cast<size_t>(cur)] += min_val;
    for (const int64_t r : scanned_rows) {
      if (r != cur) u[static_cast<size_t>(r)] += min_val - d[col4row[static_cast<size_t>(r)]];
    }
    for (const int64_t j : scanned_cols) v[static_cast<size_t>(j)] -= min_val - d[j];
    int64_t j = sink;
    while (true) {
      const int64_t r = p[j];
      row4col[static_cast<size_t>(j)] = r;
      std::swap(col4row[static_cast<size_t>(r)], j);
      if (r == cur) break;
    }
    return true;
  }
};

}  // namespace

struct AssignmentSolver::State {
  std::vector<double> c;
  Lap lap;
};

AssignmentSolver::AssignmentSolver() : state_(std::make_unique<State>()) {}
AssignmentSolver::~AssignmentSolver() = default;
AssignmentSolver::AssignmentSolver(AssignmentSolver&&) noexcept = default;
AssignmentSolver& AssignmentSolver::operator=(AssignmentSolver&&) noexcept = default;

template <typename T>
AssignmentResult AssignmentSolver::solve_impl(const T* cost, int64_t n_rows, int64_t n_cols, bool maximize) {
  if (n_rows < 0 || n_cols < 0) throw Error("linear_sum_assignment: negative matrix size");
  AssignmentResult result;
  if (n_rows == 0 || n_cols == 0) return result;
  const bool transpose = n_rows > n_cols;
  const int64_t nr = transpose ? n_cols : n_rows;
  const int64_t nc = transpose ? n_rows : n_cols;
  // The minimisation matrix with nr <= nc: negated to maximise, transposed when tall. The buffer is reused
  // across calls (no zeroing: every entry is written below).
  std::vector<double>& c = state_->c;
  if (c.size() < static_cast<size_t>(nr * nc)) c.resize(static_cast<size_t>(nr * nc));
  bool finite = true;
  const double forbidden_wrong_sign = maximize ? kInf : -kInf;
  for (int64_t i = 0; i < n_rows; ++i) {
    const T* row = cost + i * n_cols;
    for (int64_t j = 0; j < n_cols; ++j) {
      const auto x = static_cast<double>(row[j]);
      if (std::isnan(x) || x == forbidden_wrong_sign) {
        throw Error("linear_sum_assignment: cost matrix contains invalid numeric entries (NaN or " +
                    std::string(maximize ? "+inf when maximising)" : "-inf when minimising)"));
      }
      finite = finite && std::isfinite(x);
      c[static_cast<size_t>(transpose ? j * nc + i : i * nc + j)] = maximize ? -x : x;
    }
  }
  Lap& lap = state_->lap;
  lap.reset(c.data(), nr, nc);
  std::vector<int64_t> todo;
  if (nr == nc && finite) {
    todo = lap.jv_init();
  } else {
    todo.resize(static_cast<size_t>(nr));
    std::iota(todo.begin(), todo.end(), int64_t{0});
  }
  for (const int64_t r : todo) {
    if (!lap.augment(r)) throw Error("linear_sum_assignment: cost matrix is infeasible");
  }
  std::vector<std::pair<int64_t, int64_t>> pairs;
  pairs.reserve(static_cast<size_t>(nr));
  for (int64_t r = 0; r < nr; ++r) {
    const int64_t col = lap.col4row[static_cast<size_t>(r)];
    pairs.emplace_back(transpose ? col : r, transpose ? r : col);
  }
  std::sort(pairs.begin(), pairs.end());
  result.rows.reserve(pairs.size());
  result.cols.reserve(pairs.size());
  for (const auto& [r, col] : pairs) {
    result.rows.push_back(r);
    result.cols.push_back(col);
    result.total += static_cast<double>(cost[r * n_cols + col]);
  }
  return result;
}

AssignmentResult AssignmentSolver::solve(const double* cost, int64_t n_rows, int64_t n_cols, bool maximize) {
  return solve_impl(cost, n_rows, n_cols, maximize);
}

AssignmentResult AssignmentSolver::solve(const float* cost, int64_t n_rows, int64_t n_cols, bool maximize) {
  return solve_impl(cost, n_rows, n_cols, maximize);
}

AssignmentResult linear_sum_assignment(const double* cost, int64_t n_rows, int64_t n_cols, bool maximize) {
  AssignmentSolver solver;
  return solver.solve(cost, n_rows, n_cols, maximize);
}

}  // namespace husai
