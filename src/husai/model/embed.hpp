#pragma once

// Token + learned positional embedding.
// Shapes: B = batch rows, T = positions computed (the first T of each row's n_ctx tokens),
// D = d_model, V = d_vocab. Activations are row-major [B*T, D], row = b*T + t.

#include <cstdint>

namespace husai {

// out[b*T+t] = W_E[tokens[b*n_ctx+t]] + W_pos[t]
template <typename T>
void embed_forward(T* out, const int64_t* tokens, int64_t n_ctx, const T* W_E, const T* W_pos, int64_t B,
                   int64_t n_pos, int64_t D);

// dW_E[tokens] += dout, dW_pos[t] += sum_b dout[b*T+t]; rows are accumulated in order (deterministic).
template <typename T>
void embed_backward(T* dW_E, T* dW_pos, const T* dout, const int64_t* tokens, int64_t n_ctx, int64_t B,
                    int64_t n_pos, int64_t D);

}  // namespace husai
