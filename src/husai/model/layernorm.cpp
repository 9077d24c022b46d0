#include "husai/model/layernorm.hpp"

#include <cmath>

#include "husai/core/threading.hpp"

namespace husai {

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* in, const T* w, const T* b, int64_t N, int64_t D,
                       double eps) {
  parallel_chunks(N, 128, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* x = in + r * D;
      T m = 0;
      for (int64_t d = 0; d < D; ++d) m += x[d];
      m /= static_cast<T>(D);
      T v = 0;
      for (int64_t d = 0; d < D; ++d) v += (x[d] - m) * (x[d] - m);
      v /= static_cast<T>(D);
      const T s = T(1) / std::sqrt(v + static_cast<T>(eps));
      T* y = out + r * D;
      for (int64_t d = 0; d < D; ++d) y[d] = (x[d] - m) * s * w[d] + b[d];
      mean[r] = m;
      rstd[r] = s;
    }
  });
}

template <typename T>
void layernorm_backward(T* din, T* dw, T* db, const T* dout, const T* in, const T* mean, const T* rstd,
                        const T* w, int64_t N, int64_t D) {
  // Input gradient, row by row: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w.
  parallel_chunks(N, 128, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* x = in + r * D;
      const T* dy = dout + r * D;
      const T m = mean[r];
      const T s = rstd[r];
      T g_mean = 0;
      T gx_mean = 0;
      for (int64_t d = 0; d < D; ++d) {
        const T xhat = (x[d] - m) * s;
        const T g = dy[d] * w[d];
        g_mean += g;
        gx_mean += g * xhat;
      }
      g_mean /= static_cast<T>(D);
      gx_mean /= static_cast<T>(D);
      T* dx = din + r * D;
      for (int64_t d = 0; d < D; ++d) {
        const T xhat = (x[d] - m) * s;
        dx[d] += s * (dy[d] * w[d] - g_mean - xhat * gx_mean);
      }
    }
  });
  // Parameter gradients: a reduction over rows, split over channels so each sum runs in row order.
  parallel_chunks(D, 32, [&](int64_t d0, int64_t d1) {
    for (int64_t r = 0; r < N; ++r) {
      const T* x = in + r * D;
      const T* dy = dout + r * D;
      for (int64_t d = d0; d < d1; ++d) {
        dw[d] += dy[d] * (x[d] - mean[r]) * rstd[r];
        db[d] += dy[d];
      }
    }
  });
}

template void layernorm_forward<float>(float*, float*, float*, const float*, const float*, const float*,
                                       int64_t, int64_t, double);
template void layernorm_forward<double>(double*, double*, double*, const double*, const double*,
                                        const double*, int64_t, int64_t, double);
template void layernorm_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                        const float*, const float*, int64_t, int64_t);
template void layernorm_backward<double>(double*, double*, double*, const double*, const double*,
                                         const double*, const double*, const double*, int64_t, int64_t);

}  // namespace husai
