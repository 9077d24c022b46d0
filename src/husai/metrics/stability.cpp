#include "husai/metrics/stability.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "husai/core/error.hpp"
#include "husai/core/gemm.hpp"
#include "husai/core/parallel_tasks.hpp"
#include "husai/core/threading.hpp"
#include "husai/metrics/large_matching.hpp"

namespace husai {

namespace {

void normalise_rows(FeatureSet& f) {
  for (int64_t i = 0; i < f.n_features; ++i) {
    float* r = f.rows.data() + i * f.dim;
    double norm2 = 0;
    for (int64_t d = 0; d < f.dim; ++d) norm2 += static_cast<double>(r[d]) * static_cast<double>(r[d]);
    if (!std::isfinite(norm2)) throw Error("feature " + std::to_string(i) + " has a non-finite entry");
    if (norm2 <= 0) continue;  // a zero vector: |cos| 0 with everything
    const double inv = 1.0 / std::sqrt(norm2);
    for (int64_t d = 0; d < f.dim; ++d) r[d] = static_cast<float>(static_cast<double>(r[d]) * inv);
  }
}

}  // namespace

FeatureSet features_from_rows(const float* rows, int64_t n, int64_t dim) {
  FeatureSet f;
  f.n_features = n;
  f.dim = dim;
  f.rows.assign(rows, rows + n * dim);
  normalise_rows(f);
  return f;
}

FeatureSet features_from_columns(const float* m, int64_t dim, int64_t n) {
  FeatureSet f;
  f.n_features = n;
  f.dim = dim;
  f.rows.resize(static_cast<size_t>(n * dim));
  for (int64_t d = 0; d < dim; ++d) {
    for (int64_t i = 0; i < n; ++i) f.rows[static_cast<size_t>(i * dim + d)] = m[d * n + i];
  }
  normalise_rows(f);
  return f;
}

FeatureSet decoder_features(const SaeModel& sae) {
  return features_from_rows(sae.W_dec.data(), sae.d_sae, sae.out_dim());  // a transcoder: its output site
}

FeatureSet encoder_features(const SaeModel& sae) {
  return features_from_columns(sae.W_enc.data(), sae.d_in, sae.d_sae);
}

void abs_cosine_matrix(const FeatureSet& a, const FeatureSet& b, float* out) {
  if (a.dim != b.dim) {
    throw Error("cannot compare dictionaries of different dimension (" + std::to_string(a.dim) + " vs " +
                std::to_string(b.dim) + ")");
  }
  const int64_t na = a.n_features, nb = b.n_features;
  if (na == 0 || nb == 0) return;
  gemm_serial<float>(false, true, na, nb, a.dim, 1.0f, a.rows.data(), a.dim, b.rows.data(), b.dim, 0.0f, out,
                     nb);
  for (int64_t k = 0; k < na * nb; ++k) out[k] = std::fabs(out[k]);
}

std::vector<float> nearest_neighbour_abs_cos(const FeatureSet& f) {
  const int64_t n = f.n_features;
  std::vector<float> best(static_cast<size_t>(n), 0.0f);
  if (n < 2) return best;
  const int64_t block = std::min(n, kNearestNeighbourBlock);
  std::vector<float> cos(static_cast<size_t>(block * n));
  for (int64_t i0 = 0; i0 < n; i0 += block) {
    const int64_t rows = std::min(block, n - i0);
    gemm<float>(false, true, rows, n, f.dim, 1.0f, f.rows.data() + i0 * f.dim, f.dim, f.rows.data(), f.dim,
                0.0f, cos.data(), n);
    for (int64_t r = 0; r < rows; ++r) {
      const float* c = cos.data() + r * n;
      float m = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        if (j != i0 + r) m = std::max(m, std::fabs(c[j]));
      }
      best[static_cast<size_t>(i0 + r)] = m;
    }
  }
  return best;
}

PairStability pair_stability(const FeatureSet& a, const FeatureSet& b, StabilityWorkspace& ws,
                             bool keep_best) {
  const int64_t na = a.n_features, nb = b.n_features;
  if (na == 0 || nb == 0) throw Error("cannot compare an empty dictionary");
  if (na * nb > kDenseStabilityLimit) {
    if (na <= nb) return large_pair_stability(a, b, keep_best);
    PairStability r = large_pair_stability(b, a, keep_best);  // it matches every feature of its first set
    std::swap(r.pwmcc_ab, r.pwmcc_ba);
    std::swap(r.best_ab, r.best_ba);
    // Back to (row of a, column of b), in a's row order.
    std::vector<size_t> order(r.matching.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::sort(order.begin(), order.end(),
              [&](size_t x, size_t y) { return r.matching[x].second < r.matching[y].second; });
    std::vector<std::pair<int32_t, int32_t>> m;
    std::vector<float> c;
    for (const size_t k : order) {
      m.emplace_back(r.matching[k].second, r.matching[k].first);
      c.push_back(r.matched_cos[k]);
    }
    r.matching = std::move(m);
    r.matched_cos = std::move(c);
    return r;
  }
  ws.cos.resize(static_cast<size_t>(na * nb));
  abs_cosine_matrix(a, b, ws.cos.data());
  const float* C = ws.cos.data();
  PairStability r;
  if (keep_best) {
    r.best_ab.resize(static_cast<size_t>(na));
    r.best_ba.resize(static_cast<size_t>(nb));
  }
  ws.col_max.assign(static_cast<size_t>(nb), 0.0f);
  float* col_max = ws.col_max.data();
  double sum_ab = 0;
  for (int64_t i = 0; i < na; ++i) {
    const float* ci = C + i * nb;
    float row_max = 0.0f;
    for (int64_t j = 0; j < nb; ++j) {
      row_max = std::max(row_max, ci[j]);
      col_max[j] = std::max(col_max[j], ci[j]);
    }
    sum_ab += static_cast<double>(row_max);
    if (keep_best) r.best_ab[static_cast<size_t>(i)] = row_max;
  }
  double sum_ba = 0;
  for (int64_t j = 0; j < nb; ++j) sum_ba += static_cast<double>(col_max[j]);
  if (keep_best) r.best_ba.assign(col_max, col_max + nb);
  r.pwmcc_ab = sum_ab / static_cast<double>(na);
  r.pwmcc_ba = sum_ba / static_cast<double>(nb);
  r.pwmcc = 0.5 * (r.pwmcc_ab + r.pwmcc_ba);

  const AssignmentResult match = ws.solver.solve(C, na, nb, true);
  const auto n_matched = static_cast<double>(match.rows.size());
  std::array<int64_t, 3> shared{};
  for (size_t k = 0; k < match.rows.size(); ++k) {
    const auto c = static_cast<double>(C[match.rows[k] * nb + match.cols[k]]);
    for (size_t t = 0; t < kSharedThresholds.size(); ++t) shared[t] += c >= kSharedThresholds[t] ? 1 : 0;
  }
  if (keep_best) {
    for (size_t k = 0; k < match.rows.size(); ++k) {
      r.matching.emplace_back(static_cast<int32_t>(match.rows[k]), static_cast<int32_t>(match.cols[k]));
      r.matched_cos.push_back(C[match.rows[k] * nb + match.cols[k]]);
    }
  }
  r.matched_mean_cos = match.total / n_matched;
  for (size_t t = 0; t < shared.size(); ++t) r.shared_frac[t] = static_cast<double>(shared[t]) / n_matched;
  return r;
}

PairStability pair_stability(const FeatureSet& a, const FeatureSet& b, bool keep_best) {
  StabilityWorkspace ws;
  return pair_stability(a, b, ws, keep_best);
}

std::vector<PairStability> pair_stabilities(const std::vector<const FeatureSet*>& sets,
                                            const std::vector<std::pair<int64_t, int64_t>>& pairs,
                                            bool keep_best) {
  for (const auto& [i, j] : pairs) {
    const auto n = static_cast<int64_t>(sets.size());
    if (i < 0 || j < 0 || i >= n || j >= n) throw Error("pair index out of range");
    if (sets[static_cast<size_t>(i)]->dim != sets[static_cast<size_t>(j)]->dim) {
      throw Error("cannot compare dictionaries of different dimension (" +
                  std::to_string(sets[static_cast<size_t>(i)]->dim) + " vs " +
                  std::to_string(sets[static_cast<size_t>(j)]->dim) + ")");
    }
  }
  std::vector<PairStability> out(pairs.size());
  parallel_for_with_workspace<StabilityWorkspace>(
      static_cast<int64_t>(pairs.size()),
      [&](int64_t p, StabilityWorkspace& ws) {
        const auto [i, j] = pairs[static_cast<size_t>(p)];
        out[static_cast<size_t>(p)] =
            pair_stability(*sets[static_cast<size_t>(i)], *sets[static_cast<size_t>(j)], ws, keep_best);
      },
      [&](int64_t p) {
        return "pair (" + std::to_string(pairs[static_cast<size_t>(p)].first) + ", " +
               std::to_string(pairs[static_cast<size_t>(p)].second) + ")";
      });
  return out;
}

std::vector<std::pair<int64_t, int64_t>> upper_pairs(int64_t n) {
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) pairs.emplace_back(i, j);
  }
  return pairs;
}

std::vector<std::vector<double>> per_feature_stability(int64_t n, const std::vector<PairStability>& pairs) {
  const std::vector<std::pair<int64_t, int64_t>> order = upper_pairs(n);
  if (pairs.size() != order.size())
    throw Error("per_feature_stability: expected every pair of the dictionaries");
  if (n < 2) throw Error("per-feature stability needs at least two dictionaries");
  std::vector<int64_t> index(static_cast<size_t>(n * n), -1);
  for (size_t p = 0; p < order.size(); ++p)
    index[static_cast<size_t>(order[p].first * n + order[p].second)] = static_cast<int64_t>(p);
  std::vector<std::vector<double>> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double>& acc = out[static_cast<size_t>(i)];
    for (int64_t j = 0; j < n; ++j) {
      if (j == i) continue;
      const PairStability& ps =
          pairs[static_cast<size_t>(index[static_cast<size_t>(i < j ? i * n + j : j * n + i)])];
      const std::vector<float>& best = i < j ? ps.best_ab : ps.best_ba;
      if (best.empty()) throw Error("per_feature_stability: pairs were computed without keep_best");
      if (acc.empty()) acc.assign(best.size(), 0.0);
      if (best.size() != acc.size()) throw Error("per_feature_stability: inconsistent feature counts");
      for (size_t f = 0; f < best.size(); ++f) acc[f] += static_cast<double>(best[f]);
    }
    for (double& v : acc) v /= static_cast<double>(n - 1);
  }
  return out;
}

}  // namespace husai
