#pragma once

// Unembedding: logits = in @ W_U + b_U. Shapes: N rows, D = d_model, V = d_vocab_out (= d_vocab).

#include <cstdint>

namespace husai {

template <typename T>
void unembed_forward(T* logits, const T* in, const T* W_U, const T* b_U, int64_t N, int64_t D, int64_t V);

// din += dlogits @ W_U^T, dW_U += in^T @ dlogits, db_U += column sums of dlogits.
template <typename T>
void unembed_backward(T* din, T* dW_U, T* db_U, const T* dlogits, const T* in, const T* W_U, int64_t N,
                      int64_t D, int64_t V);

}  // namespace husai
