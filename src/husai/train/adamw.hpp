#pragma once

// AdamW (Loshchilov & Hutter), exactly as torch.optim.AdamW (PyTorch 1.13, single-tensor path) computes
// it, so husai and a PyTorch run agree step for step:
//   p *= 1 - lr * wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Weight decay applies to every parameter, as in the reference (AdamW over model.parameters()).

#include <cmath>
#include <cstdint>

namespace husai {

struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

// One step over a flat buffer; `step` counts from 1; `lr` is this step's (scheduled) learning rate.
template <typename T>
void adamw_step(T* params, const T* grads, T* m, T* v, int64_t n, int64_t step, double lr,
                const AdamWConfig& cfg);

// adamw_step's per-step scalars and its per-element update, for callers that fuse the update into a pass of
// their own (same arithmetic, so the same bits).
template <typename T>
struct AdamWScalars {
  T decay, b1, b2, one_minus_b1, one_minus_b2, step_size, bc2_sqrt, eps;
};
template <typename T>
AdamWScalars<T> adamw_scalars(int64_t step, double lr, const AdamWConfig& cfg);

template <typename T>
inline void adamw_update(T* params, const T* grads, T* m, T* v, int64_t i0, int64_t i1,
                         const AdamWScalars<T>& s) {
  for (int64_t i = i0; i < i1; ++i) {
    params[i] *= s.decay;
    m[i] = m[i] * s.b1 + grads[i] * s.one_minus_b1;
    v[i] = v[i] * s.b2 + grads[i] * grads[i] * s.one_minus_b2;
    const T denom = std::sqrt(v[i]) / s.bc2_sqrt + s.eps;
    params[i] -= s.step_size * (m[i] / denom);
  }
}

enum class LrSchedule { Constant, Cosine };

// Learning rate of step `step` (1-based): linear warm-up over the first warmup_steps steps, then either
// constant or a cosine decay from lr to lr * min_lr_ratio at total_steps.
double scheduled_lr(double lr, int64_t step, int64_t warmup_steps, LrSchedule schedule, int64_t total_steps,
                    double min_lr_ratio);

}  // namespace husai
