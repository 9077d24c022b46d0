#include "husai/model/mlp.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "husai/core/gemm.hpp"
#include "husai/core/threading.hpp"

namespace husai {
namespace {

// gelu_new uses sqrt(2/pi); gelu_fast hard-codes 0.7978845608 (TransformerLens / HF), the same number.
constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kGeluCubic = 0.044715;

}  // namespace

template <typename T>
T activation(ActFn act, T x) {
  switch (act) {
    case ActFn::Relu:
      return x > T(0) ? x : T(0);
    case ActFn::Gelu:
      return T(0.5) * x * (T(1) + std::erf(x / std::sqrt(T(2))));
    case ActFn::GeluNew:
    case ActFn::GeluFast: {
      const T u = static_cast<T>(kSqrt2OverPi) * (x + static_cast<T>(kGeluCubic) * x * x * x);
      return T(0.5) * x * (T(1) + std::tanh(u));
    }
    case ActFn::Silu:
      return x / (T(1) + std::exp(-x));
  }
  return x;
}

template <typename T>
T activation_grad(ActFn act, T x) {
  switch (act) {
    case ActFn::Relu:
      return x > T(0) ? T(1) : T(0);
    case ActFn::Gelu: {
      const T cdf = T(0.5) * (T(1) + std::erf(x / std::sqrt(T(2))));
      const T pdf = std::exp(T(-0.5) * x * x) / std::sqrt(T(2) * static_cast<T>(std::numbers::pi));
      return cdf + x * pdf;
    }
    case ActFn::GeluNew:
    case ActFn::GeluFast: {
      const T c = static_cast<T>(kSqrt2OverPi);
      const T a = static_cast<T>(kGeluCubic);
      const T th = std::tanh(c * (x + a * x * x * x));
      return T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * c * (T(1) + T(3) * a * x * x);
    }
    case ActFn::Silu: {
      const T s = T(1) / (T(1) + std::exp(-x));
      return s * (T(1) + x * (T(1) - s));
    }
  }
  return T(1);
}

template <typename T>
void mlp_forward(T* out, T* pre, T* post, const T* in, const MlpWeights<T>& w, ActFn act, int64_t N,
                 int64_t D, int64_t M) {
  parallel_chunks(N, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) std::copy_n(w.b_in, M, pre + r * M);
  });
  gemm<T>(false, false, N, M, D, T(1), in, D, w.W_in, M, T(1), pre, M);
  parallel_chunks(N * M, 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) post[i] = activation(act, pre[i]);
  });
  parallel_chunks(N, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) std::copy_n(w.b_out, D, out + r * D);
  });
  gemm<T>(false, false, N, D, M, T(1), post, M, w.W_out, D, T(1), out, D);
}

template <typename T>
void mlp_backward(T* din, const MlpGrads<T>& grads, T* dpre, const T* dout, const T* in, const T* pre,
                  const T* post, const MlpWeights<T>& w, ActFn act, int64_t N, int64_t D, int64_t M) {
  gemm<T>(true, false, M, D, N, T(1), post, M, dout, D, T(1), grads.W_out, D);
  column_sums(dout, N, D, D, grads.b_out, true);
  gemm<T>(false, true, N, M, D, T(1), dout, D, w.W_out, D, T(0), dpre, M);
  parallel_chunks(N * M, 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) dpre[i] *= activation_grad(act, pre[i]);
  });
  gemm<T>(true, false, D, M, N, T(1), in, D, dpre, M, T(1), grads.W_in, M);
  column_sums(dpre, N, M, M, grads.b_in, true);
  gemm<T>(false, true, N, D, M, T(1), dpre, M, w.W_in, M, T(1), din, D);
}

template float activation<float>(ActFn, float);
template double activation<double>(ActFn, double);
template float activation_grad<float>(ActFn, float);
template double activation_grad<double>(ActFn, double);
template void mlp_forward<float>(float*, float*, float*, const float*, const MlpWeights<float>&, ActFn,
                                 int64_t, int64_t, int64_t);
template void mlp_forward<double>(double*, double*, double*, const double*, const MlpWeights<double>&, ActFn,
                                  int64_t, int64_t, int64_t);
template void mlp_backward<float>(float*, const MlpGrads<float>&, float*, const float*, const float*,
                                  const float*, const float*, const MlpWeights<float>&, ActFn, int64_t,
                                  int64_t, int64_t);
template void mlp_backward<double>(double*, const MlpGrads<double>&, double*, const double*, const double*,
                                   const double*, const double*, const MlpWeights<double>&, ActFn, int64_t,
                                   int64_t, int64_t);

}  // namespace husai
