#pragma once

// Causal multi-head self-attention, TransformerLens semantics (attn_scale = sqrt(d_head), biases on
// Q, K, V and O, learned nothing else).
// Shapes: B = batch rows, T = positions in the input, Q = query positions computed (the last Q of the
// T; Q < T lets the last layer compute only the scored position), D = d_model, H = n_heads,
// E = d_head. Row-major activations, row = b*T + t (input) or b*Q + i (queries, position T-Q+i).

#include <cstdint>

namespace husai {

struct AttentionDims {
  int64_t B, T, Q, D, H, E;
};

template <typename T>
struct AttentionWeights {
  const T* W_Q;  // [H, D, E]
  const T* W_K;
  const T* W_V;
  const T* W_O;  // [H, E, D] == [H*E, D] row-major
  const T* b_Q;  // [H, E]
  const T* b_K;
  const T* b_V;
  const T* b_O;  // [D]
};

template <typename T>
struct AttentionGrads {
  T* W_Q;
  T* W_K;
  T* W_V;
  T* W_O;
  T* b_Q;
  T* b_K;
  T* b_V;
  T* b_O;
};

// What the forward pass keeps for the backward pass (all owned by the caller's workspace).
template <typename T>
struct AttentionActs {
  T* w_q;      // [D, H*E]   W_Q repacked so all heads are one GEMM
  T* w_kv;     // [D, 2*H*E] W_K then W_V, repacked
  T* x_q;      // [B*Q, D]   input rows of the query positions
  T* q;        // [B*Q, H*E]
  T* kv;       // [B*T, 2*H*E] keys (first H*E columns) and values
  T* pattern;  // [B, H, Q, T] softmax probabilities (0 where masked)
  T* z;        // [B*Q, H*E]  pattern @ v, heads side by side
};

// Scratch for the backward pass.
template <typename T>
struct AttentionScratch {
  T* dz;     // [B*Q, H*E]
  T* dq;     // [B*Q, H*E]
  T* dkv;    // [B*T, 2*H*E]
  T* dx_q;   // [B*Q, D]
  T* dw_q;   // [D, H*E]
  T* dw_kv;  // [D, 2*H*E]
};

// out [B*Q, D] = attention output (hook_attn_out) for the query positions.
template <typename T>
void attention_forward(T* out, AttentionActs<T>& acts, const T* in, const AttentionWeights<T>& w,
                       const AttentionDims& dims);

// din [B*T, D] += dL/din; grads += dL/dweights.
template <typename T>
void attention_backward(T* din, const AttentionGrads<T>& grads, AttentionScratch<T>& scratch, const T* dout,
                        const AttentionActs<T>& acts, const T* in, const AttentionWeights<T>& w,
                        const AttentionDims& dims);

}  // namespace husai
