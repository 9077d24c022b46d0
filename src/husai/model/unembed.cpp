#include "husai/model/unembed.hpp"

#include <algorithm>

#include "husai/core/gemm.hpp"
#include "husai/core/threading.hpp"

namespace husai {

template <typename T>
void unembed_forward(T* logits, const T* in, const T* W_U, const T* b_U, int64_t N, int64_t D, int64_t V) {
  parallel_chunks(N, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) std::copy_n(b_U, V, logits + r * V);
  });
  gemm<T>(false, false, N, V, D, T(1), in, D, W_U, V, T(1), logits, V);
}

template <typename T>
void unembed_backward(T* din, T* dW_U, T* db_U, const T* dlogits, const T* in, const T* W_U, int64_t N,
                      int64_t D, int64_t V) {
  gemm<T>(true, false, D, V, N, T(1), in, D, dlogits, V, T(1), dW_U, V);
  column_sums(dlogits, N, V, V, db_U, true);
  gemm<T>(false, true, N, D, V, T(1), dlogits, V, W_U, V, T(1), din, D);
}

template void unembed_forward<float>(float*, const float*, const float*, const float*, int64_t, int64_t,
                                     int64_t);
template void unembed_forward<double>(double*, const double*, const double*, const double*, int64_t, int64_t,
                                      int64_t);
template void unembed_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                      int64_t, int64_t, int64_t);
template void unembed_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                       int64_t, int64_t, int64_t);

}  // namespace husai
