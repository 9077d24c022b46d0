#include "husai/train/adamw.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "husai/core/threading.hpp"

namespace husai {

template <typename T>
AdamWScalars<T> adamw_scalars(int64_t step, double lr, const AdamWConfig& cfg) {
  // Scalars in double, as PyTorch computes them in Python floats, then applied in T.
  AdamWScalars<T> s;
  s.decay = static_cast<T>(1.0 - lr * cfg.weight_decay);
  s.b1 = static_cast<T>(cfg.beta1);
  s.b2 = static_cast<T>(cfg.beta2);
  s.one_minus_b1 = static_cast<T>(1.0 - cfg.beta1);
  s.one_minus_b2 = static_cast<T>(1.0 - cfg.beta2);
  const double bias_correction1 = 1.0 - std::pow(cfg.beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(cfg.beta2, static_cast<double>(step));
  s.step_size = static_cast<T>(lr / bias_correction1);
  s.bc2_sqrt = static_cast<T>(std::sqrt(bias_correction2));
  s.eps = static_cast<T>(cfg.eps);
  return s;
}

template <typename T>
void adamw_step(T* params, const T* grads, T* m, T* v, int64_t n, int64_t step, double lr,
                const AdamWConfig& cfg) {
  const AdamWScalars<T> s = adamw_scalars<T>(step, lr, cfg);
  parallel_chunks(n, 16384, [&](int64_t i0, int64_t i1) { adamw_update(params, grads, m, v, i0, i1, s); });
}

double scheduled_lr(double lr, int64_t step, int64_t warmup_steps, LrSchedule schedule, int64_t total_steps,
                    double min_lr_ratio) {
  if (warmup_steps > 0 && step < warmup_steps) {
    return lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  }
  if (schedule == LrSchedule::Constant || total_steps <= warmup_steps) return lr;
  const double progress = std::min(
      1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps));
  const double min_lr = lr * min_lr_ratio;
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

template AdamWScalars<float> adamw_scalars<float>(int64_t, double, const AdamWConfig&);
template AdamWScalars<double> adamw_scalars<double>(int64_t, double, const AdamWConfig&);
template void adamw_step<float>(float*, const float*, float*, float*, int64_t, int64_t, double,
                                const AdamWConfig&);
template void adamw_step<double>(double*, const double*, double*, double*, int64_t, int64_t, double,
                                 const AdamWConfig&);

}  // namespace husai
