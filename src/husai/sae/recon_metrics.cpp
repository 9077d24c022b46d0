#include "husai/sae/recon_metrics.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace husai {

ReconMetrics reconstruction_metrics(const SaeModel& sae, const float* x, int64_t n_rows, int64_t batch_rows) {
  const int64_t D = sae.d_in;
  const int64_t L = sae.d_sae;
  ReconMetrics m;
  m.n_rows = n_rows;
  if (n_rows <= 0) return m;
  std::vector<double> sum_x(static_cast<size_t>(D), 0), sum_x2(static_cast<size_t>(D), 0);
  std::vector<double> sum_r(static_cast<size_t>(D), 0), sum_r2(static_cast<size_t>(D), 0);
  std::vector<int64_t> fires(static_cast<size_t>(L), 0);
  double err = 0, norm_x2 = 0, nnz = 0, l1 = 0, cos = 0, ratio = 0, xhat2 = 0, dot = 0;
  for (int64_t start = 0; start < n_rows; start += batch_rows) {
    const int64_t n = std::min(batch_rows, n_rows - start);
    const float* xb = x + start * D;
    const std::vector<float> f = sae.encode(xb, n);
    const std::vector<float> xh = sae.decode(f.data(), n);
    for (int64_t r = 0; r < n; ++r) {
      double e2 = 0, x2 = 0, h2 = 0, xh_dot = 0;
      for (int64_t d = 0; d < D; ++d) {
        const double xv = xb[r * D + d];
        const double hv = xh[static_cast<size_t>(r * D + d)];
        const double res = xv - hv;
        e2 += res * res;
        x2 += xv * xv;
        h2 += hv * hv;
        xh_dot += xv * hv;
        sum_x[static_cast<size_t>(d)] += xv;
        sum_x2[static_cast<size_t>(d)] += xv * xv;
        sum_r[static_cast<size_t>(d)] += res;
        sum_r2[static_cast<size_t>(d)] += res * res;
      }
      for (int64_t i = 0; i < L; ++i) {
        const float fv = f[static_cast<size_t>(r * L + i)];
        if (fv != 0.0f) {
          nnz += 1;
          l1 += std::abs(static_cast<double>(fv));
          ++fires[static_cast<size_t>(i)];
        }
      }
      err += e2;
      norm_x2 += x2;
      xhat2 += h2;
      dot += xh_dot;
      const double denom = std::sqrt(x2) * std::sqrt(h2);
      cos += denom > 0 ? xh_dot / denom : 0.0;
      ratio += x2 > 0 ? std::sqrt(h2) / std::sqrt(x2) : 0.0;
    }
  }
  const auto N = static_cast<double>(n_rows);
  double centred = 0, var_x = 0, var_r = 0;
  for (int64_t d = 0; d < D; ++d) {
    const double mx = sum_x[static_cast<size_t>(d)] / N;
    const double mr = sum_r[static_cast<size_t>(d)] / N;
    centred += sum_x2[static_cast<size_t>(d)] - N * mx * mx;
    var_x += sum_x2[static_cast<size_t>(d)] / N - mx * mx;
    var_r += sum_r2[static_cast<size_t>(d)] / N - mr * mr;
  }
  m.mse = err / (N * static_cast<double>(D));
  m.explained_variance = centred > 0 ? 1.0 - err / centred : 0.0;
  m.explained_variance_per_dim = var_x > 0 ? 1.0 - var_r / var_x : 0.0;
  m.explained_variance_uncentred = norm_x2 > 0 ? 1.0 - err / norm_x2 : 0.0;
  m.l0 = nnz / N;
  m.l1 = l1 / N;
  m.cossim = cos / N;
  m.l2_ratio = ratio / N;
  m.relative_reconstruction_bias = dot != 0 ? xhat2 / dot : 0.0;
  int64_t dead = 0, dense = 0;
  for (int64_t c : fires) {
    dead += c == 0 ? 1 : 0;
    dense += static_cast<double>(c) > 0.1 * N ? 1 : 0;
  }
  m.frac_dead = static_cast<double>(dead) / static_cast<double>(L);
  m.frac_dense = static_cast<double>(dense) / static_cast<double>(L);
  return m;
}

nlohmann::json to_json(const ReconMetrics& m) {
  return {{"n_rows", m.n_rows},
          {"mse", m.mse},
          {"explained_variance", m.explained_variance},
          {"explained_variance_per_dim", m.explained_variance_per_dim},
          {"explained_variance_uncentred", m.explained_variance_uncentred},
          {"l0", m.l0},
          {"l1", m.l1},
          {"cossim", m.cossim},
          {"l2_ratio", m.l2_ratio},
          {"relative_reconstruction_bias", m.relative_reconstruction_bias},
          {"frac_dead", m.frac_dead},
          {"frac_dense", m.frac_dense}};
}

}  // namespace husai
