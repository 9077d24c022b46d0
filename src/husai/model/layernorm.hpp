#pragma once

// LayerNorm over the last dimension, TransformerLens semantics:
// y = (x - mean) / sqrt(var + eps) * w + b with the biased variance.
// Shapes: N rows, D = d_model; row-major [N, D].

#include <cstdint>

namespace husai {

// Saves mean[N] and rstd[N] = 1/sqrt(var + eps) for the backward pass.
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* in, const T* w, const T* b, int64_t N, int64_t D,
                       double eps);

// din += dL/dx, dw += sum_rows dy * xhat, db += sum_rows dy (accumulating, as llm.c does, so residual
// branches add into one buffer).
template <typename T>
void layernorm_backward(T* din, T* dw, T* db, const T* dout, const T* in, const T* mean, const T* rstd,
                        const T* w, int64_t N, int64_t D);

}  // namespace husai
