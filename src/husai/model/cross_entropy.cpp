#include "husai/model/cross_entropy.hpp"

#include <cmath>

#include "husai/core/threading.hpp"

namespace husai {

template <typename T>
void cross_entropy_forward_backward(T* losses, uint8_t* correct, T* dlogits, const T* logits,
                                    const int64_t* labels, int64_t N, int64_t V, T grad_scale) {
  parallel_chunks(N, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* z = logits + r * V;
      int64_t arg = 0;
      for (int64_t v = 1; v < V; ++v) {
        if (z[v] > z[arg]) arg = v;
      }
      const T max_z = z[arg];
      T sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(z[v] - max_z);
      const T log_sum = std::log(sum) + max_z;
      const int64_t y = labels[r];
      if (losses) losses[r] = log_sum - z[y];
      if (correct) correct[r] = arg == y ? 1 : 0;
      if (dlogits) {
        T* g = dlogits + r * V;
        for (int64_t v = 0; v < V; ++v) g[v] = std::exp(z[v] - log_sum) * grad_scale;
        g[y] -= grad_scale;
      }
    }
  });
}

template void cross_entropy_forward_backward<float>(float*, uint8_t*, float*, const float*, const int64_t*,
                                                    int64_t, int64_t, float);
template void cross_entropy_forward_backward<double>(double*, uint8_t*, double*, const double*,
                                                     const int64_t*, int64_t, int64_t, double);

}  // namespace husai
