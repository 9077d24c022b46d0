#include "husai/metrics/activation_similarity.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "husai/core/error.hpp"
#include "husai/core/parallel_tasks.hpp"
#include "husai/core/threading.hpp"

namespace husai {

namespace {

// Column means and centred sums of squares from the CSR entries, each summed in row order.
void finish_statistics(LatentActivations& z) {
  const auto F = static_cast<size_t>(z.n_latents);
  std::vector<double> sum(F, 0.0);
  std::vector<int64_t> nnz(F, 0);
  for (size_t e = 0; e < z.latent.size(); ++e) {
    sum[static_cast<size_t>(z.latent[e])] += z.value[e];
    ++nnz[static_cast<size_t>(z.latent[e])];
  }
  const auto N = static_cast<double>(z.n_rows);
  z.mean.resize(F);
  for (size_t f = 0; f < F; ++f) z.mean[f] = sum[f] / N;
  // Two-pass: the deviations from the mean, so a constant column gives exactly 0 (a latent firing on every
  // row with the same value is as uninformative as a dead one).
  z.centred_ss.assign(F, 0.0);
  for (size_t e = 0; e < z.latent.size(); ++e) {
    const auto f = static_cast<size_t>(z.latent[e]);
    const double d = z.value[e] - z.mean[f];
    z.centred_ss[f] += d * d;
  }
  for (size_t f = 0; f < F; ++f) {
    z.centred_ss[f] += static_cast<double>(z.n_rows - nnz[f]) * z.mean[f] * z.mean[f];
  }
}

void append_dense_rows(LatentActivations& z, const float* rows, int64_t n, int64_t row0) {
  for (int64_t r = 0; r < n; ++r) {
    const float* zr = rows + r * z.n_latents;
    for (int64_t f = 0; f < z.n_latents; ++f) {
      if (!std::isfinite(zr[f])) {
        throw Error("latent activation of row " + std::to_string(row0 + r) + ", latent " + std::to_string(f) +
                    " is not finite");
      }
      if (zr[f] == 0.0f) continue;
      z.latent.push_back(static_cast<int32_t>(f));
      z.value.push_back(static_cast<double>(zr[f]));
    }
    z.row_ptr.push_back(static_cast<int64_t>(z.latent.size()));
  }
}

LatentActivations empty_latents(int64_t n_rows, int64_t n_latents) {
  if (n_rows < 2) throw Error("latent correlations need at least two rows");
  if (n_latents < 1 || n_latents > INT32_MAX) throw Error("latent count out of range");
  LatentActivations z;
  z.n_rows = n_rows;
  z.n_latents = n_latents;
  z.row_ptr.reserve(static_cast<size_t>(n_rows + 1));
  z.row_ptr.push_back(0);
  return z;
}

}  // namespace

int64_t LatentActivations::n_zero_variance() const {
  return std::count_if(centred_ss.begin(), centred_ss.end(), [](double s) { return !(s > 0); });
}

LatentActivations latent_activations_from_dense(const float* z, int64_t n_rows, int64_t n_latents) {
  LatentActivations out = empty_latents(n_rows, n_latents);
  append_dense_rows(out, z, n_rows, 0);
  finish_statistics(out);
  return out;
}

LatentActivations sae_latent_activations(const SaeModel& sae, const float* x, int64_t n_rows,
                                         int64_t batch_rows) {
  if (batch_rows < 1) throw Error("batch_rows must be positive");
  LatentActivations out = empty_latents(n_rows, sae.d_sae);
  std::vector<float> latents;
  for (int64_t r0 = 0; r0 < n_rows; r0 += batch_rows) {
    const int64_t n = std::min(batch_rows, n_rows - r0);
    latents.resize(static_cast<size_t>(n * sae.d_sae));
    sae.encode(x + r0 * sae.d_in, n, latents.data());
    append_dense_rows(out, latents.data(), n, r0);
  }
  finish_statistics(out);
  return out;
}

LatentActivations permute_rows(const LatentActivations& z, const std::vector<int64_t>& order) {
  if (static_cast<int64_t>(order.size()) != z.n_rows) throw Error("permute_rows: order has the wrong length");
  std::vector<uint8_t> seen(order.size(), 0);
  LatentActivations out = empty_latents(z.n_rows, z.n_latents);
  out.latent.reserve(z.latent.size());
  out.value.reserve(z.value.size());
  for (const int64_t src : order) {
    if (src < 0 || src >= z.n_rows || seen[static_cast<size_t>(src)]++ != 0) {
      throw Error("permute_rows: order is not a permutation of the rows");
    }
    const auto b = static_cast<size_t>(z.row_ptr[static_cast<size_t>(src)]);
    const auto e = static_cast<size_t>(z.row_ptr[static_cast<size_t>(src) + 1]);
    out.latent.insert(out.latent.end(), z.latent.begin() + static_cast<std::ptrdiff_t>(b),
                      z.latent.begin() + static_cast<std::ptrdiff_t>(e));
    out.value.insert(out.value.end(), z.value.begin() + static_cast<std::ptrdiff_t>(b),
                     z.value.begin() + static_cast<std::ptrdiff_t>(e));
    out.row_ptr.push_back(static_cast<int64_t>(out.latent.size()));
  }
  finish_statistics(out);
  return out;
}

namespace {

void check_same_rows(const LatentActivations& a, const LatentActivations& b) {
  if (a.n_rows != b.n_rows) {
    throw Error("cannot correlate latents over different rows (" + std::to_string(a.n_rows) + " vs " +
                std::to_string(b.n_rows) + ")");
  }
}

// |R| from S (in place) for rows [i0, i1) of a: out holds S_ij = sum_n z_ni z'_nj for those rows.
void finish_abs_correlation(const LatentActivations& a, const LatentActivations& b, int64_t i0, int64_t i1,
                            double* out) {
  const int64_t Fb = b.n_latents;
  const auto N = static_cast<double>(a.n_rows);
  std::vector<double> inv_b(static_cast<size_t>(Fb), 0.0);
  for (int64_t j = 0; j < Fb; ++j) {
    const double ss = b.centred_ss[static_cast<size_t>(j)];
    inv_b[static_cast<size_t>(j)] = ss > 0 ? 1.0 / std::sqrt(ss) : 0.0;
  }
  for (int64_t i = i0; i < i1; ++i) {
    double* row = out + (i - i0) * Fb;
    const double ss = a.centred_ss[static_cast<size_t>(i)];
    if (!(ss > 0)) {
      std::fill(row, row + Fb, 0.0);
      continue;
    }
    const double inv_a = 1.0 / std::sqrt(ss);
    const double n_mean_a = N * a.mean[static_cast<size_t>(i)];
    for (int64_t j = 0; j < Fb; ++j) {
      const double cov = row[j] - n_mean_a * b.mean[static_cast<size_t>(j)];
      // Rounding can put a perfect correlation a hair beyond 1.
      row[j] = std::min(1.0, std::fabs(cov * inv_a * inv_b[static_cast<size_t>(j)]));
    }
  }
}

}  // namespace

void abs_correlation_matrix(const LatentActivations& a, const LatentActivations& b, double* out) {
  check_same_rows(a, b);
  const int64_t Fa = a.n_latents, Fb = b.n_latents;
  std::fill(out, out + Fa * Fb, 0.0);
  // S_ij = sum_n z_ni z'_nj over the rows where both fire, rows in ascending order.
  for (int64_t n = 0; n < a.n_rows; ++n) {
    const auto a0 = static_cast<size_t>(a.row_ptr[static_cast<size_t>(n)]);
    const auto a1 = static_cast<size_t>(a.row_ptr[static_cast<size_t>(n) + 1]);
    const auto b0 = static_cast<size_t>(b.row_ptr[static_cast<size_t>(n)]);
    const auto b1 = static_cast<size_t>(b.row_ptr[static_cast<size_t>(n) + 1]);
    for (size_t ea = a0; ea < a1; ++ea) {
      double* row = out + static_cast<int64_t>(a.latent[ea]) * Fb;
      const double va = a.value[ea];
      for (size_t eb = b0; eb < b1; ++eb) row[b.latent[eb]] += va * b.value[eb];
    }
  }
  finish_abs_correlation(a, b, 0, Fa, out);
}

ActivationPairSimilarity large_activation_pair_similarity(const LatentActivations& a_in,
                                                          const LatentActivations& b_in,
                                                          LargeMatchingInfo* info) {
  check_same_rows(a_in, b_in);
  // The matching needs n_a <= n_b: swap, and swap the one-sided scores back.
  const bool swapped = a_in.n_latents > b_in.n_latents;
  const LatentActivations& a = swapped ? b_in : a_in;
  const LatentActivations& b = swapped ? a_in : b_in;
  const int64_t Fa = a.n_latents, Fb = b.n_latents;
  // a by column: latent i's (row, value) entries in row order, so each S_ij sums in row order as above.
  std::vector<int64_t> col_ptr(static_cast<size_t>(Fa + 1), 0);
  for (const int32_t i : a.latent) ++col_ptr[static_cast<size_t>(i) + 1];
  for (int64_t i = 0; i < Fa; ++i) col_ptr[static_cast<size_t>(i + 1)] += col_ptr[static_cast<size_t>(i)];
  std::vector<int64_t> col_row(a.latent.size());
  std::vector<double> col_val(a.latent.size());
  {
    std::vector<int64_t> at(col_ptr.begin(), col_ptr.end() - 1);
    for (int64_t n = 0; n < a.n_rows; ++n) {
      for (int64_t e = a.row_ptr[static_cast<size_t>(n)]; e < a.row_ptr[static_cast<size_t>(n + 1)]; ++e) {
        const auto slot = static_cast<size_t>(at[static_cast<size_t>(a.latent[static_cast<size_t>(e)])]++);
        col_row[slot] = n;
        col_val[slot] = a.value[static_cast<size_t>(e)];
      }
    }
  }
  std::vector<double> S;
  const SimilarityRowsFn fill = [&](int64_t i0, int64_t i1, std::vector<float>& block) {
    S.assign(static_cast<size_t>((i1 - i0) * Fb), 0.0);
    parallel_chunks(i1 - i0, 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        double* row = S.data() + r * Fb;
        const auto i = static_cast<size_t>(i0 + r);
        for (int64_t e = col_ptr[i]; e < col_ptr[i + 1]; ++e) {
          const int64_t n = col_row[static_cast<size_t>(e)];
          const double va = col_val[static_cast<size_t>(e)];
          for (int64_t eb = b.row_ptr[static_cast<size_t>(n)]; eb < b.row_ptr[static_cast<size_t>(n + 1)];
               ++eb)
            row[b.latent[static_cast<size_t>(eb)]] += va * b.value[static_cast<size_t>(eb)];
        }
      }
    });
    finish_abs_correlation(a, b, i0, i1, S.data());
    block.resize(S.size());
    for (size_t t = 0; t < S.size(); ++t) block[t] = static_cast<float>(S[t]);
  };
  const PairStability p = large_pair_similarity(Fa, Fb, fill, false, info);
  ActivationPairSimilarity r;
  r.zero_variance_a = a_in.n_zero_variance();
  r.zero_variance_b = b_in.n_zero_variance();
  r.act_pwmcc = p.pwmcc;
  r.act_pwmcc_ab = swapped ? p.pwmcc_ba : p.pwmcc_ab;
  r.act_pwmcc_ba = swapped ? p.pwmcc_ab : p.pwmcc_ba;
  r.act_matched_mean_corr = p.matched_mean_cos;
  r.act_shared_frac = p.shared_frac;
  return r;
}

ActivationPairSimilarity activation_pair_similarity(const LatentActivations& a, const LatentActivations& b,
                                                    ActivationSimilarityWorkspace& ws) {
  const int64_t na = a.n_latents, nb = b.n_latents;
  ws.corr.resize(static_cast<size_t>(na * nb));
  abs_correlation_matrix(a, b, ws.corr.data());
  const double* C = ws.corr.data();
  ActivationPairSimilarity r;
  r.zero_variance_a = a.n_zero_variance();
  r.zero_variance_b = b.n_zero_variance();
  ws.col_max.assign(static_cast<size_t>(nb), 0.0);
  double* col_max = ws.col_max.data();
  double sum_ab = 0;
  for (int64_t i = 0; i < na; ++i) {
    const double* ci = C + i * nb;
    double row_max = 0;
    for (int64_t j = 0; j < nb; ++j) {
      row_max = std::max(row_max, ci[j]);
      col_max[j] = std::max(col_max[j], ci[j]);
    }
    sum_ab += row_max;
  }
  double sum_ba = 0;
  for (int64_t j = 0; j < nb; ++j) sum_ba += col_max[j];
  r.act_pwmcc_ab = sum_ab / static_cast<double>(na);
  r.act_pwmcc_ba = sum_ba / static_cast<double>(nb);
  r.act_pwmcc = 0.5 * (r.act_pwmcc_ab + r.act_pwmcc_ba);

  const AssignmentResult match = ws.solver.solve(C, na, nb, true);
  const auto n_matched = static_cast<double>(match.rows.size());
  std::array<int64_t, 3> shared{};
  for (size_t k = 0; k < match.rows.size(); ++k) {
    const double c = C[match.rows[k] * nb + match.cols[k]];
    for (size_t t = 0; t < kSharedThresholds.size(); ++t) shared[t] += c >= kSharedThresholds[t] ? 1 : 0;
  }
  r.act_matched_mean_corr = match.total / n_matched;
  for (size_t t = 0; t < shared.size(); ++t)
    r.act_shared_frac[t] = static_cast<double>(shared[t]) / n_matched;
  return r;
}

ActivationPairSimilarity activation_pair_similarity(const LatentActivations& a, const LatentActivations& b) {
  ActivationSimilarityWorkspace ws;
  return activation_pair_similarity(a, b, ws);
}

std::vector<ActivationPairSimilarity> activation_pair_similarities(
    const std::vector<const LatentActivations*>& sets,
    const std::vector<std::pair<int64_t, int64_t>>& pairs) {
  const auto n = static_cast<int64_t>(sets.size());
  for (const auto& [i, j] : pairs) {
    if (i < 0 || j < 0 || i >= n || j >= n) throw Error("pair index out of range");
    if (sets[static_cast<size_t>(i)]->n_rows != sets[static_cast<size_t>(j)]->n_rows) {
      throw Error("cannot correlate latents over different rows (" +
                  std::to_string(sets[static_cast<size_t>(i)]->n_rows) + " vs " +
                  std::to_string(sets[static_cast<size_t>(j)]->n_rows) + ")");
    }
  }
  std::vector<ActivationPairSimilarity> out(pairs.size());
  parallel_for_with_workspace<ActivationSimilarityWorkspace>(
      static_cast<int64_t>(pairs.size()),
      [&](int64_t p, ActivationSimilarityWorkspace& ws) {
        const auto [i, j] = pairs[static_cast<size_t>(p)];
        out[static_cast<size_t>(p)] =
            activation_pair_similarity(*sets[static_cast<size_t>(i)], *sets[static_cast<size_t>(j)], ws);
      },
      [&](int64_t p) {
        return "pair (" + std::to_string(pairs[static_cast<size_t>(p)].first) + ", " +
               std::to_string(pairs[static_cast<size_t>(p)].second) + ")";
      });
  return out;
}

}  // namespace husai
