#include "husai/sae/sae.hpp"

#include "husai/sae/architecture.hpp"

#include <cmath>
#include <numeric>

#include "husai/core/error.hpp"
#include "husai/core/lanes.hpp"
#include "husai/core/rng.hpp"
#include "husai/core/threading.hpp"

namespace husai {

void SaeConfig::validate() const {
  if (d_in <= 0 || d_sae <= 0) throw Error("d_in and d_sae must be positive");
  if (d_sae > (int64_t{1} << 31) - 1) throw Error("d_sae too large");
  if (arch == nullptr) throw Error("internal: SaeConfig without an architecture");
  if (arch->validate != nullptr) arch->validate(*this);
}

SaeLayout make_sae_layout(const SaeConfig& cfg) {
  SaeLayout l;
  const int64_t D = cfg.d_in;
  const int64_t L = cfg.d_sae;
  l.W_enc = 0;
  l.W_dec = D * L;
  l.b_enc = 2 * D * L;
  l.b_dec = l.b_enc + L;
  l.extra = l.b_dec + D;
  l.n_extra = static_cast<int64_t>(cfg.arch->extra_tensors.size()) * L;
  l.total = l.extra + l.n_extra;
  return l;
}

template <typename T>
SaeLossParts sae_loss_backward(const SaeConfig& cfg, const SaeLayout& layout, const T* params, T* grads,
                               const SaeBatch<T>& batch, SaeWorkspace<T>& ws) {
  const SaeView<const T> p = make_sae_view(layout, params);
  SaeView<T> g;
  if (grads != nullptr) {
    // The sparse path writes every gradient entry itself (no pass over the whole buffer first).
    if (!cfg.arch->writes_all_grads) std::fill(grads, grads + layout.total, T(0));
    g = make_sae_view(layout, grads);
  }
  const SaeView<T>* gp = grads != nullptr ? &g : nullptr;
  return cfg.arch->loss_backward<T>()(cfg, p, gp, batch, ws);
}

void init_sae_params(const SaeConfig& cfg, const SaeLayout& layout, float* params, uint64_t seed,
                     const std::vector<float>& b_dec) {
  const int64_t D = cfg.d_in;
  const int64_t L = cfg.d_sae;
  std::fill(params, params + layout.total, 0.0f);
  const Philox rng(seed, stream_id("sae.W_dec"));
  float* W_dec = params + layout.W_dec;
  float* W_enc = params + layout.W_enc;
  for (int64_t i = 0; i < L; ++i) {
    double norm2 = 0;
    std::vector<double> row(static_cast<size_t>(D));
    for (int64_t d = 0; d < D; ++d) {
      row[static_cast<size_t>(d)] = rng.normal(static_cast<uint64_t>(i * D + d));
      norm2 += row[static_cast<size_t>(d)] * row[static_cast<size_t>(d)];
    }
    const double inv = 1.0 / std::sqrt(std::max(norm2, 1e-30));
    for (int64_t d = 0; d < D; ++d) {
      const auto w = static_cast<float>(row[static_cast<size_t>(d)] * inv);
      W_dec[i * D + d] = w;
      W_enc[d * L + i] = w;
    }
  }
  std::copy(b_dec.begin(), b_dec.end(), params + layout.b_dec);
  if (cfg.arch->init != nullptr) cfg.arch->init(cfg, layout, params);
}

void remove_parallel_decoder_grad(const SaeConfig& cfg, const SaeLayout& layout, const float* params,
                                  float* grads) {
  const int64_t D = cfg.d_in;
  const float* W = params + layout.W_dec;
  float* G = grads + layout.W_dec;
  parallel_chunks(cfg.d_sae, 64, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float dot = dot_lanes(G + i * D, W + i * D, D);
      const float nn = dot_lanes(W + i * D, W + i * D, D);
      if (nn <= 0) continue;
      const float c = dot / nn;
      for (int64_t d = 0; d < D; ++d) G[i * D + d] -= c * W[i * D + d];
    }
  });
}

void normalize_decoder_rows(const SaeConfig& cfg, const SaeLayout& layout, float* params) {
  const int64_t D = cfg.d_in;
  float* W = params + layout.W_dec;
  parallel_chunks(cfg.d_sae, 64, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float nn = dot_lanes(W + i * D, W + i * D, D);
      if (nn <= 0) continue;
      const float inv = 1.0f / std::sqrt(nn);
      for (int64_t d = 0; d < D; ++d) W[i * D + d] *= inv;
    }
  });
}

std::vector<float> rows_mean(const float* x, int64_t n_rows, int64_t d) {
  std::vector<double> acc(static_cast<size_t>(d), 0.0);
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int64_t j = 0; j < d; ++j) acc[static_cast<size_t>(j)] += static_cast<double>(x[r * d + j]);
  }
  std::vector<float> out(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) {
    out[static_cast<size_t>(j)] =
        static_cast<float>(acc[static_cast<size_t>(j)] / static_cast<double>(n_rows));
  }
  return out;
}

std::vector<float> geometric_median(const float* x, int64_t n_rows, int64_t d, int max_iter, double tol) {
  std::vector<float> mean = rows_mean(x, n_rows, d);
  std::vector<double> y(mean.begin(), mean.end());
  std::vector<double> num(static_cast<size_t>(d));
  for (int it = 0; it < max_iter; ++it) {
    std::fill(num.begin(), num.end(), 0.0);
    double den = 0;
    for (int64_t r = 0; r < n_rows; ++r) {
      double dist2 = 0;
      for (int64_t j = 0; j < d; ++j) {
        const double diff = static_cast<double>(x[r * d + j]) - y[static_cast<size_t>(j)];
        dist2 += diff * diff;
      }
      // Floor the distance so a data point sitting on the estimate does not divide by zero.
      const double w = 1.0 / std::max(std::sqrt(dist2), 1e-8);
      den += w;
      for (int64_t j = 0; j < d; ++j) num[static_cast<size_t>(j)] += w * static_cast<double>(x[r * d + j]);
    }
    double shift2 = 0;
    double norm2 = 0;
    for (int64_t j = 0; j < d; ++j) {
      const double next = num[static_cast<size_t>(j)] / den;
      shift2 += (next - y[static_cast<size_t>(j)]) * (next - y[static_cast<size_t>(j)]);
      norm2 += next * next;
      y[static_cast<size_t>(j)] = next;
    }
    if (std::sqrt(shift2) <= tol * std::max(1.0, std::sqrt(norm2))) break;
  }
  return std::vector<float>(y.begin(), y.end());
}

template <typename T>
double batch_explained_variance(const T* x, const T* x_hat, int64_t n_rows, int64_t d) {
  if (n_rows <= 0) return 0.0;
  // Fixed row chunks, each summed single-threaded (per column for the mean, in kLanes partial sums for the
  // errors), then combined in chunk order: independent of the thread count.
  constexpr int64_t kChunk = 256;
  const int64_t n_chunks = (n_rows + kChunk - 1) / kChunk;
  std::vector<double> col(static_cast<size_t>(n_chunks * d), 0.0);
  parallel_chunks(n_rows, kChunk, [&](int64_t r0, int64_t r1) {
    double* cs = col.data() + (r0 / kChunk) * d;
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < d; ++j) cs[j] += static_cast<double>(x[r * d + j]);
    }
  });
  std::vector<double> mean(static_cast<size_t>(d), 0.0);
  for (int64_t c = 0; c < n_chunks; ++c) {
    for (int64_t j = 0; j < d; ++j) mean[static_cast<size_t>(j)] += col[static_cast<size_t>(c * d + j)];
  }
  for (double& m : mean) m /= static_cast<double>(n_rows);
  std::vector<double> part(static_cast<size_t>(2 * n_chunks), 0.0);
  parallel_chunks(n_rows, kChunk, [&](int64_t r0, int64_t r1) {
    double pe[kLanes] = {};
    double pv[kLanes] = {};
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * d;
      const T* hr = x_hat + r * d;
      int64_t j = 0;
      for (; j + kLanes <= d; j += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
          const auto xv = static_cast<double>(xr[j + l]);
          const double e = xv - static_cast<double>(hr[j + l]);
          const double cv = xv - mean[static_cast<size_t>(j + l)];
          pe[l] += e * e;
          pv[l] += cv * cv;
        }
      }
      for (int l = 0; j < d; ++j, ++l) {
        const auto xv = static_cast<double>(xr[j]);
        const double e = xv - static_cast<double>(hr[j]);
        const double cv = xv - mean[static_cast<size_t>(j)];
        pe[l] += e * e;
        pv[l] += cv * cv;
      }
    }
    double err = 0;
    double var = 0;
    for (int l = 0; l < kLanes; ++l) {
      err += pe[l];
      var += pv[l];
    }
    const int64_t c = r0 / kChunk;
    part[static_cast<size_t>(2 * c)] = err;
    part[static_cast<size_t>(2 * c + 1)] = var;
  });
  double err = 0;
  double var = 0;
  for (int64_t c = 0; c < n_chunks; ++c) {
    err += part[static_cast<size_t>(2 * c)];
    var += part[static_cast<size_t>(2 * c + 1)];
  }
  return var > 0 ? 1.0 - err / var : 0.0;
}

template SaeLossParts sae_loss_backward<float>(const SaeConfig&, const SaeLayout&, const float*, float*,
                                               const SaeBatch<float>&, SaeWorkspace<float>&);
template SaeLossParts sae_loss_backward<double>(const SaeConfig&, const SaeLayout&, const double*, double*,
                                                const SaeBatch<double>&, SaeWorkspace<double>&);
template double batch_explained_variance<float>(const float*, const float*, int64_t, int64_t);
template double batch_explained_variance<double>(const double*, const double*, int64_t, int64_t);

}  // namespace husai
