#include "husai/metrics/large_matching.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <queue>
#include <string>

#include "husai/core/error.hpp"
#include "husai/core/gemm.hpp"
#include "husai/core/threading.hpp"

namespace husai {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kTolerance = 1e-9;
constexpr int64_t kMaxCandidates = 512;  // per row; beyond this the candidate graph is not worth it
constexpr int64_t kMaxRounds = 32;

// |a[i0:i1] b^T| into block [(i1 - i0), n_b].
void abs_cos_block(const FeatureSet& a, const FeatureSet& b, int64_t i0, int64_t i1,
                   std::vector<float>& block) {
  const int64_t nb = b.n_features, dim = a.dim;
  block.resize(static_cast<size_t>((i1 - i0) * nb));
  gemm<float>(false, true, i1 - i0, nb, dim, 1.0f, a.rows.data() + i0 * dim, dim, b.rows.data(), dim, 0.0f,
              block.data(), nb);
  for (float& c : block) c = std::abs(c);
}

// Inserts (j, c) into the descending top-k list (vals, idx) of length <= k; earlier j wins ties.
void keep_top(float c, int32_t j, int64_t k, float* vals, int32_t* idx, int64_t& n) {
  if (n == k && c <= vals[k - 1]) return;
  int64_t pos = n < k ? n++ : k - 1;
  while (pos > 0 && vals[pos - 1] < c) {
    vals[pos] = vals[pos - 1];
    idx[pos] = idx[pos - 1];
    --pos;
  }
  vals[pos] = c;
  idx[pos] = j;
}

// Pass 1 over all blocks: row maxima, column maxima with their (lowest) row, each row's top-k columns.
struct FirstPass {
  std::vector<float> row_max, col_max;
  std::vector<int64_t> col_best_row;
  std::vector<int32_t> top_idx;  // [n_a, k]
  std::vector<float> top_val;
  std::vector<int64_t> top_n;
};

FirstPass first_pass(const SimilarityRowsFn& fill, int64_t na, int64_t nb, int64_t k) {
  FirstPass p;
  p.row_max.assign(static_cast<size_t>(na), 0.0f);
  p.col_max.assign(static_cast<size_t>(nb), -1.0f);
  p.col_best_row.assign(static_cast<size_t>(nb), -1);
  p.top_idx.assign(static_cast<size_t>(na * k), -1);
  p.top_val.assign(static_cast<size_t>(na * k), 0.0f);
  p.top_n.assign(static_cast<size_t>(na), 0);
  std::vector<float> block;
  for (int64_t i0 = 0; i0 < na; i0 += kLargeBlockRows) {
    const int64_t i1 = std::min(na, i0 + kLargeBlockRows);
    fill(i0, i1, block);
    parallel_chunks(i1 - i0, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t i = i0 + r;
        const float* row = block.data() + r * nb;
        float m = 0.0f;
        int64_t n = 0;
        for (int64_t j = 0; j < nb; ++j) {
          m = std::max(m, row[j]);
          keep_top(row[j], static_cast<int32_t>(j), k, p.top_val.data() + i * k, p.top_idx.data() + i * k, n);
        }
        p.row_max[static_cast<size_t>(i)] = m;
        p.top_n[static_cast<size_t>(i)] = n;
      }
    });
    // Columns scan the block's rows in order, so ties keep the lowest row whatever the thread count.
    parallel_chunks(nb, 4096, [&](int64_t j0, int64_t j1) {
      for (int64_t r = 0; r < i1 - i0; ++r) {
        const float* row = block.data() + r * nb;
        for (int64_t j = j0; j < j1; ++j) {
          if (row[j] > p.col_max[static_cast<size_t>(j)]) {
            p.col_max[static_cast<size_t>(j)] = row[j];
            p.col_best_row[static_cast<size_t>(j)] = i0 + r;
          }
        }
      }
    });
  }
  for (float& c : p.col_max) c = std::max(c, 0.0f);
  return p;
}

// The candidate graph in CSR form, columns ascending within a row: `extra` edges (violations found by the
// certificate) are merged into each row's top-k and every column's best row.
struct Graph {
  std::vector<int64_t> row_ptr;
  std::vector<int32_t> cols;
  std::vector<double> costs;  // -|cos|
};

Graph build_graph(const FirstPass& p, int64_t na, int64_t k,
                  const std::vector<std::vector<std::pair<int32_t, float>>>& extra) {
  std::vector<std::vector<std::pair<int32_t, float>>> rows(static_cast<size_t>(na));
  for (int64_t i = 0; i < na; ++i) {
    auto& r = rows[static_cast<size_t>(i)];
    for (int64_t t = 0; t < p.top_n[static_cast<size_t>(i)]; ++t)
      r.emplace_back(p.top_idx[static_cast<size_t>(i * k + t)], p.top_val[static_cast<size_t>(i * k + t)]);
    const auto& e = extra[static_cast<size_t>(i)];
    r.insert(r.end(), e.begin(), e.end());
  }
  for (size_t j = 0; j < p.col_best_row.size(); ++j) {
    const int64_t i = p.col_best_row[j];
    if (i >= 0) rows[static_cast<size_t>(i)].emplace_back(static_cast<int32_t>(j), p.col_max[j]);
  }
  Graph g;
  g.row_ptr.push_back(0);
  for (auto& r : rows) {
    std::sort(r.begin(), r.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    r.erase(std::unique(r.begin(), r.end(), [](const auto& x, const auto& y) { return x.first == y.first; }),
            r.end());
    for (const auto& [j, c] : r) {
      g.cols.push_back(j);
      g.costs.push_back(-static_cast<double>(c));
    }
    g.row_ptr.push_back(static_cast<int64_t>(g.cols.size()));
  }
  return g;
}

// Pass 2: every pair whose reduced cost -|cos| - u_i - v_j is below -kTolerance (at most `cap` per row, the
// most violating), or an empty list when the certificate holds.
std::vector<std::vector<std::pair<int32_t, float>>> violations(const SimilarityRowsFn& fill, int64_t na,
                                                               int64_t nb, const SparseAssignment& s,
                                                               int64_t cap, int64_t& count) {
  std::vector<std::vector<std::pair<int32_t, float>>> out(static_cast<size_t>(na));
  std::vector<int64_t> per_row(static_cast<size_t>(na), 0);
  std::vector<float> block;
  for (int64_t i0 = 0; i0 < na; i0 += kLargeBlockRows) {
    const int64_t i1 = std::min(na, i0 + kLargeBlockRows);
    fill(i0, i1, block);
    parallel_chunks(i1 - i0, 16, [&](int64_t r0, int64_t r1) {
      std::vector<std::pair<double, int32_t>> found;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t i = i0 + r;
        const float* row = block.data() + r * nb;
        const double ui = s.u[static_cast<size_t>(i)];
        found.clear();
        for (int64_t j = 0; j < nb; ++j) {
          const double reduced = -static_cast<double>(row[j]) - ui - s.v[static_cast<size_t>(j)];
          if (reduced < -kTolerance) found.emplace_back(reduced, static_cast<int32_t>(j));
        }
        std::sort(found.begin(), found.end());
        if (static_cast<int64_t>(found.size()) > cap) found.resize(static_cast<size_t>(cap));
        per_row[static_cast<size_t>(i)] = static_cast<int64_t>(found.size());
        for (const auto& [reduced, j] : found) out[static_cast<size_t>(i)].emplace_back(j, row[j]);
      }
    });
  }
  count = 0;
  for (const int64_t n : per_row) count += n;
  return out;
}

}  // namespace

bool solve_sparse_assignment(int64_t n_rows, int64_t n_cols, const std::vector<int64_t>& row_ptr,
                             const std::vector<int32_t>& cols, const std::vector<double>& costs,
                             SparseAssignment& out) {
  if (n_rows > n_cols) throw Error("sparse assignment needs n_rows <= n_cols");
  out.col_of_row.assign(static_cast<size_t>(n_rows), -1);
  out.u.assign(static_cast<size_t>(n_rows), 0.0);
  out.v.assign(static_cast<size_t>(n_cols), 0.0);
  std::vector<int64_t> row_of_col(static_cast<size_t>(n_cols), -1);
  std::vector<double>& u = out.u;
  std::vector<double>& v = out.v;
  // Greedy start with v = 0: a row whose cheapest column is free takes it (its reduced costs are then >= 0
  // with equality on the match); the others are matched by the searches below.
  for (int64_t i = 0; i < n_rows; ++i) {
    int64_t best = -1;
    for (int64_t e = row_ptr[static_cast<size_t>(i)]; e < row_ptr[static_cast<size_t>(i + 1)]; ++e) {
      if (best < 0 || costs[static_cast<size_t>(e)] < costs[static_cast<size_t>(best)]) best = e;
    }
    if (best < 0) return false;
    const int32_t j = cols[static_cast<size_t>(best)];
    u[static_cast<size_t>(i)] = costs[static_cast<size_t>(best)];
    if (row_of_col[static_cast<size_t>(j)] < 0) {
      row_of_col[static_cast<size_t>(j)] = i;
      out.col_of_row[static_cast<size_t>(i)] = j;
    }
  }
  // Dijkstra on reduced costs from each free row, in row order.
  std::vector<double> d(static_cast<size_t>(n_cols), kInf);
  std::vector<int64_t> pred(static_cast<size_t>(n_cols), -1);
  std::vector<char> done(static_cast<size_t>(n_cols), 0);
  std::vector<int64_t> touched, finalized;
  using Item = std::pair<double, int64_t>;
  std::priority_queue<Item, std::vector<Item>, std::greater<>> heap;
  const auto relax = [&](int64_t i, double base) {
    const double ui = u[static_cast<size_t>(i)];
    for (int64_t e = row_ptr[static_cast<size_t>(i)]; e < row_ptr[static_cast<size_t>(i + 1)]; ++e) {
      const int64_t j = cols[static_cast<size_t>(e)];
      if (done[static_cast<size_t>(j)]) continue;
      const double nd = base + costs[static_cast<size_t>(e)] - ui - v[static_cast<size_t>(j)];
      if (nd < d[static_cast<size_t>(j)]) {
        if (d[static_cast<size_t>(j)] == kInf) touched.push_back(j);
        d[static_cast<size_t>(j)] = nd;
        pred[static_cast<size_t>(j)] = i;
        heap.emplace(nd, j);
      }
    }
  };
  for (int64_t s = 0; s < n_rows; ++s) {
    if (out.col_of_row[static_cast<size_t>(s)] >= 0) continue;
    double us = kInf;
    for (int64_t e = row_ptr[static_cast<size_t>(s)]; e < row_ptr[static_cast<size_t>(s + 1)]; ++e)
      us = std::min(us, costs[static_cast<size_t>(e)] - v[static_cast<size_t>(cols[static_cast<size_t>(e)])]);
    u[static_cast<size_t>(s)] = us;
    heap = {};
    relax(s, 0.0);
    int64_t t = -1;
    double D = 0;
    while (!heap.empty()) {
      const auto [dj, j] = heap.top();
      heap.pop();
      if (done[static_cast<size_t>(j)] || dj > d[static_cast<size_t>(j)]) continue;
      done[static_cast<size_t>(j)] = 1;
      finalized.push_back(j);
      if (row_of_col[static_cast<size_t>(j)] < 0) {
        t = j;
        D = dj;
        break;
      }
      relax(row_of_col[static_cast<size_t>(j)], dj);
    }
    if (t < 0) return false;  // no augmenting path: the graph has no matching of every row
    // Potentials: the tree's rows and finalized columns move so that reduced costs stay >= 0 and the new
    // path's edges have reduced cost 0 (see large_matching.hpp).
    u[static_cast<size_t>(s)] += D;
    for (const int64_t j : finalized) {
      if (j != t) u[static_cast<size_t>(row_of_col[static_cast<size_t>(j)])] += D - d[static_cast<size_t>(j)];
      v[static_cast<size_t>(j)] += d[static_cast<size_t>(j)] - D;
    }
    for (int64_t j = t;;) {
      const int64_t i = pred[static_cast<size_t>(j)];
      const int64_t prev = out.col_of_row[static_cast<size_t>(i)];
      out.col_of_row[static_cast<size_t>(i)] = j;
      row_of_col[static_cast<size_t>(j)] = i;
      if (i == s) break;
      j = prev;
    }
    for (const int64_t j : touched) {
      d[static_cast<size_t>(j)] = kInf;
      pred[static_cast<size_t>(j)] = -1;
      done[static_cast<size_t>(j)] = 0;
    }
    touched.clear();
    finalized.clear();
  }
  return true;
}

PairStability large_pair_stability(const FeatureSet& a, const FeatureSet& b, bool keep_best,
                                   LargeMatchingInfo* info, std::vector<int64_t>* matched,
                                   int64_t candidates) {
  if (a.n_features == 0 || b.n_features == 0) throw Error("cannot compare an empty dictionary");
  if (a.dim != b.dim) {
    throw Error("cannot compare dictionaries of different dimension (" + std::to_string(a.dim) + " vs " +
                std::to_string(b.dim) + ")");
  }
  return large_pair_similarity(
      a.n_features, b.n_features,
      [&](int64_t i0, int64_t i1, std::vector<float>& block) { abs_cos_block(a, b, i0, i1, block); },
      keep_best, info, matched, candidates);
}

PairStability large_pair_similarity(int64_t na, int64_t nb, const SimilarityRowsFn& fill, bool keep_best,
                                    LargeMatchingInfo* info, std::vector<int64_t>* matched,
                                    int64_t candidates) {
  if (na == 0 || nb == 0) throw Error("cannot compare an empty dictionary");
  if (na > nb) throw Error("the large-dictionary matching needs n_a <= n_b (swap the dictionaries)");
  if (candidates < 1) throw Error("large matching: candidates must be >= 1");
  int64_t k = std::min<int64_t>(candidates, nb);
  FirstPass p = first_pass(fill, na, nb, k);
  PairStability r;
  double sum_ab = 0, sum_ba = 0;
  for (const float m : p.row_max) sum_ab += static_cast<double>(m);
  for (const float m : p.col_max) sum_ba += static_cast<double>(m);
  r.pwmcc_ab = sum_ab / static_cast<double>(na);
  r.pwmcc_ba = sum_ba / static_cast<double>(nb);
  r.pwmcc = 0.5 * (r.pwmcc_ab + r.pwmcc_ba);
  if (keep_best) {
    r.best_ab = p.row_max;
    r.best_ba = p.col_max;
  }

  LargeMatchingInfo inf;
  std::vector<std::vector<std::pair<int32_t, float>>> extra(static_cast<size_t>(na));
  SparseAssignment s;
  Graph g;
  while (true) {
    g = build_graph(p, na, k, extra);
    ++inf.rounds;
    if (!solve_sparse_assignment(na, nb, g.row_ptr, g.cols, g.costs, s)) {
      // The candidates admit no matching of every row: widen every row's candidate list and start over.
      if (k >= std::min(kMaxCandidates, nb)) throw Error("large matching: no complete matching found");
      k = std::min({2 * k, kMaxCandidates, nb});
      p = first_pass(fill, na, nb, k);
      continue;
    }
    int64_t found = 0;
    const auto more = violations(fill, na, nb, s, std::max<int64_t>(candidates, kLargeCandidates), found);
    if (found == 0) {
      inf.certified = true;
      break;
    }
    inf.violations_added += found;
    if (inf.rounds >= kMaxRounds) break;
    for (int64_t i = 0; i < na; ++i) {
      auto& e = extra[static_cast<size_t>(i)];
      e.insert(e.end(), more[static_cast<size_t>(i)].begin(), more[static_cast<size_t>(i)].end());
    }
  }
  inf.edges = static_cast<int64_t>(g.cols.size());
  if (!inf.certified) {
    throw Error("large matching: the optimality certificate still fails after " + std::to_string(inf.rounds) +
                " rounds");
  }
  // Matched |cos| from the graph (every matched edge is in it), summed in row order.
  double total = 0;
  std::array<int64_t, 3> shared{};
  for (int64_t i = 0; i < na; ++i) {
    const int64_t j = s.col_of_row[static_cast<size_t>(i)];
    double c = 0;
    for (int64_t e = g.row_ptr[static_cast<size_t>(i)]; e < g.row_ptr[static_cast<size_t>(i + 1)]; ++e) {
      if (g.cols[static_cast<size_t>(e)] == j) c = -g.costs[static_cast<size_t>(e)];
    }
    total += c;
    for (size_t t = 0; t < kSharedThresholds.size(); ++t) shared[t] += c >= kSharedThresholds[t] ? 1 : 0;
    if (keep_best) {
      r.matching.emplace_back(static_cast<int32_t>(i), static_cast<int32_t>(j));
      r.matched_cos.push_back(static_cast<float>(c));
    }
  }
  r.matched_mean_cos = total / static_cast<double>(na);
  for (size_t t = 0; t < shared.size(); ++t)
    r.shared_frac[t] = static_cast<double>(shared[t]) / static_cast<double>(na);
  r.matching_rounds = inf.rounds;
  r.matching_edges = inf.edges;
  if (info != nullptr) *info = inf;
  if (matched != nullptr) *matched = s.col_of_row;
  return r;
}

}  // namespace husai
