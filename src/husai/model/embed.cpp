#include "husai/model/embed.hpp"

#include "husai/core/threading.hpp"

namespace husai {

template <typename T>
void embed_forward(T* out, const int64_t* tokens, int64_t n_ctx, const T* W_E, const T* W_pos, int64_t B,
                   int64_t n_pos, int64_t D) {
  parallel_chunks(B, 256, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t t = 0; t < n_pos; ++t) {
        const T* we = W_E + tokens[b * n_ctx + t] * D;
        const T* wp = W_pos + t * D;
        T* o = out + (b * n_pos + t) * D;
        for (int64_t d = 0; d < D; ++d) o[d] = we[d] + wp[d];
      }
    }
  });
}

template <typename T>
void embed_backward(T* dW_E, T* dW_pos, const T* dout, const int64_t* tokens, int64_t n_ctx, int64_t B,
                    int64_t n_pos, int64_t D) {
  // Split over channels, not rows: each task owns a slice of D for every row, so the scatter-add into
  // W_E needs no atomics and sums in row order.
  parallel_chunks(D, 32, [&](int64_t d0, int64_t d1) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < n_pos; ++t) {
        const T* g = dout + (b * n_pos + t) * D;
        T* we = dW_E + tokens[b * n_ctx + t] * D;
        T* wp = dW_pos + t * D;
        for (int64_t d = d0; d < d1; ++d) {
          we[d] += g[d];
          wp[d] += g[d];
        }
      }
    }
  });
}

template void embed_forward<float>(float*, const int64_t*, int64_t, const float*, const float*, int64_t,
                                   int64_t, int64_t);
template void embed_forward<double>(double*, const int64_t*, int64_t, const double*, const double*, int64_t,
                                    int64_t, int64_t);
template void embed_backward<float>(float*, float*, const float*, const int64_t*, int64_t, int64_t, int64_t,
                                    int64_t);
template void embed_backward<double>(double*, double*, const double*, const int64_t*, int64_t, int64_t,
                                     int64_t, int64_t);

}  // namespace husai
