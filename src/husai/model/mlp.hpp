#pragma once

// The MLP block: out = act(in @ W_in + b_in) @ W_out + b_out, TransformerLens semantics.
// Shapes: N rows, D = d_model, M = d_mlp. Row-major [N, D] and [N, M].

#include <cstdint>

#include "husai/model/config.hpp"

namespace husai {

// Elementwise activation and its derivative (TransformerLens' relu, gelu (erf), gelu_new and
// gelu_fast (tanh approximations), silu).
template <typename T>
T activation(ActFn act, T x);
template <typename T>
T activation_grad(ActFn act, T x);

template <typename T>
struct MlpWeights {
  const T* W_in;   // [D, M]
  const T* b_in;   // [M]
  const T* W_out;  // [M, D]
  const T* b_out;  // [D]
};

template <typename T>
struct MlpGrads {
  T* W_in;
  T* b_in;
  T* W_out;
  T* b_out;
};

// pre [N, M] (hook_pre) and post [N, M] (hook_post) are kept for the backward pass.
template <typename T>
void mlp_forward(T* out, T* pre, T* post, const T* in, const MlpWeights<T>& w, ActFn act, int64_t N,
                 int64_t D, int64_t M);

// din += dL/din, grads += dL/dweights; dpre [N, M] is scratch.
template <typename T>
void mlp_backward(T* din, const MlpGrads<T>& grads, T* dpre, const T* dout, const T* in, const T* pre,
                  const T* post, const MlpWeights<T>& w, ActFn act, int64_t N, int64_t D, int64_t M);

}  // namespace husai
