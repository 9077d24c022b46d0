#include "husai/model/attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "husai/core/gemm.hpp"
#include "husai/core/threading.hpp"

namespace husai {
namespace {

// [H, D, E] -> columns [col0 + h*E, col0 + (h+1)*E) of a [D, ld] matrix.
template <typename T>
void pack_heads(T* dst, int64_t ld, int64_t col0, const T* src, int64_t H, int64_t D, int64_t E) {
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t d = 0; d < D; ++d) {
      std::copy_n(src + (h * D + d) * E, E, dst + d * ld + col0 + h * E);
    }
  }
}

// The inverse, accumulating: dst[H, D, E] += columns of src.
template <typename T>
void unpack_heads_add(T* dst, const T* src, int64_t ld, int64_t col0, int64_t H, int64_t D, int64_t E) {
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t d = 0; d < D; ++d) {
      const T* s = src + d * ld + col0 + h * E;
      T* o = dst + (h * D + d) * E;
      for (int64_t e = 0; e < E; ++e) o[e] += s[e];
    }
  }
}

template <typename T>
void fill_rows_with_bias(T* out, int64_t rows, int64_t cols, int64_t ld, int64_t col0, const T* bias) {
  parallel_chunks(rows, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) std::copy_n(bias, cols, out + r * ld + col0);
  });
}

}  // namespace

template <typename T>
void attention_forward(T* out, AttentionActs<T>& acts, const T* in, const AttentionWeights<T>& w,
                       const AttentionDims& dims) {
  // Plain copies, not a structured binding: lambdas below capture them (clang < 16 cannot).
  const int64_t B = dims.B, Tn = dims.T, Q = dims.Q, D = dims.D, H = dims.H, E = dims.E;
  const int64_t HE = H * E;
  pack_heads(acts.w_q, HE, 0, w.W_Q, H, D, E);
  pack_heads(acts.w_kv, 2 * HE, 0, w.W_K, H, D, E);
  pack_heads(acts.w_kv, 2 * HE, HE, w.W_V, H, D, E);

  parallel_chunks(B, 256, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      std::copy_n(in + (b * Tn + (Tn - Q)) * D, Q * D, acts.x_q + b * Q * D);
    }
  });
  fill_rows_with_bias(acts.q, B * Q, HE, HE, 0, w.b_Q);
  gemm<T>(false, false, B * Q, HE, D, T(1), acts.x_q, D, acts.w_q, HE, T(1), acts.q, HE);
  fill_rows_with_bias(acts.kv, B * Tn, HE, 2 * HE, 0, w.b_K);
  fill_rows_with_bias(acts.kv, B * Tn, HE, 2 * HE, HE, w.b_V);
  gemm<T>(false, false, B * Tn, 2 * HE, D, T(1), in, D, acts.w_kv, 2 * HE, T(1), acts.kv, 2 * HE);

  const T scale = T(1) / std::sqrt(static_cast<T>(E));
  parallel_chunks(B, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t i = 0; i < Q; ++i) {
          const int64_t t = Tn - Q + i;  // absolute position of this query
          const T* q = acts.q + (b * Q + i) * HE + h * E;
          T* p = acts.pattern + ((b * H + h) * Q + i) * Tn;
          T max_score = -std::numeric_limits<T>::infinity();
          for (int64_t j = 0; j <= t; ++j) {
            const T* k = acts.kv + (b * Tn + j) * 2 * HE + h * E;
            T s = 0;
            for (int64_t e = 0; e < E; ++e) s += q[e] * k[e];
            p[j] = s * scale;
            max_score = std::max(max_score, p[j]);
          }
          T sum = 0;
          for (int64_t j = 0; j <= t; ++j) {
            p[j] = std::exp(p[j] - max_score);
            sum += p[j];
          }
          const T inv = T(1) / sum;
          for (int64_t j = 0; j <= t; ++j) p[j] *= inv;
          for (int64_t j = t + 1; j < Tn; ++j) p[j] = 0;
          T* z = acts.z + (b * Q + i) * HE + h * E;
          std::fill_n(z, E, T(0));
          for (int64_t j = 0; j <= t; ++j) {
            const T* v = acts.kv + (b * Tn + j) * 2 * HE + HE + h * E;
            for (int64_t e = 0; e < E; ++e) z[e] += p[j] * v[e];
          }
        }
      }
    }
  });
  fill_rows_with_bias(out, B * Q, D, D, 0, w.b_O);
  gemm<T>(false, false, B * Q, D, HE, T(1), acts.z, HE, w.W_O, D, T(1), out, D);
}

template <typename T>
void attention_backward(T* din, const AttentionGrads<T>& grads, AttentionScratch<T>& scratch, const T* dout,
                        const AttentionActs<T>& acts, const T* in, const AttentionWeights<T>& w,
                        const AttentionDims& dims) {
  // Plain copies, not a structured binding: lambdas below capture them (clang < 16 cannot).
  const int64_t B = dims.B, Tn = dims.T, Q = dims.Q, D = dims.D, H = dims.H, E = dims.E;
  const int64_t HE = H * E;
  // Output projection.
  gemm<T>(true, false, HE, D, B * Q, T(1), acts.z, HE, dout, D, T(1), grads.W_O, D);
  column_sums(dout, B * Q, D, D, grads.b_O, true);
  gemm<T>(false, true, B * Q, HE, D, T(1), dout, D, w.W_O, D, T(0), scratch.dz, HE);

  // Softmax-attention core, one batch row per task: each writes only its own rows of dq and dkv.
  const T scale = T(1) / std::sqrt(static_cast<T>(E));
  parallel_chunks(B, 64, [&](int64_t b0, int64_t b1) {
    std::vector<T> dp(static_cast<size_t>(Tn));
    for (int64_t b = b0; b < b1; ++b) {
      std::fill_n(scratch.dkv + b * Tn * 2 * HE, Tn * 2 * HE, T(0));
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t i = 0; i < Q; ++i) {
          const int64_t t = Tn - Q + i;
          const T* p = acts.pattern + ((b * H + h) * Q + i) * Tn;
          const T* dz = scratch.dz + (b * Q + i) * HE + h * E;
          const T* q = acts.q + (b * Q + i) * HE + h * E;
          T dot = 0;  // sum_j p_j dp_j
          for (int64_t j = 0; j <= t; ++j) {
            const T* v = acts.kv + (b * Tn + j) * 2 * HE + HE + h * E;
            T* dv = scratch.dkv + (b * Tn + j) * 2 * HE + HE + h * E;
            T s = 0;
            for (int64_t e = 0; e < E; ++e) {
              s += dz[e] * v[e];
              dv[e] += p[j] * dz[e];
            }
            dp[static_cast<size_t>(j)] = s;
            dot += p[j] * s;
          }
          T* dq = scratch.dq + (b * Q + i) * HE + h * E;
          std::fill_n(dq, E, T(0));
          for (int64_t j = 0; j <= t; ++j) {
            const T ds = p[j] * (dp[static_cast<size_t>(j)] - dot) * scale;
            const T* k = acts.kv + (b * Tn + j) * 2 * HE + h * E;
            T* dk = scratch.dkv + (b * Tn + j) * 2 * HE + h * E;
            for (int64_t e = 0; e < E; ++e) {
              dq[e] += ds * k[e];
              dk[e] += ds * q[e];
            }
          }
        }
      }
    }
  });

  // Q projection (query rows only), then K/V projection (all rows).
  gemm<T>(true, false, D, HE, B * Q, T(1), acts.x_q, D, scratch.dq, HE, T(0), scratch.dw_q, HE);
  unpack_heads_add(grads.W_Q, scratch.dw_q, HE, 0, H, D, E);
  column_sums(scratch.dq, B * Q, HE, HE, grads.b_Q, true);
  gemm<T>(false, true, B * Q, D, HE, T(1), scratch.dq, HE, acts.w_q, HE, T(0), scratch.dx_q, D);
  parallel_chunks(B, 256, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* dst = din + (b * Tn + (Tn - Q)) * D;
      const T* src = scratch.dx_q + b * Q * D;
      for (int64_t k = 0; k < Q * D; ++k) dst[k] += src[k];
    }
  });

  gemm<T>(true, false, D, 2 * HE, B * Tn, T(1), in, D, scratch.dkv, 2 * HE, T(0), scratch.dw_kv, 2 * HE);
  unpack_heads_add(grads.W_K, scratch.dw_kv, 2 * HE, 0, H, D, E);
  unpack_heads_add(grads.W_V, scratch.dw_kv, 2 * HE, HE, H, D, E);
  column_sums(scratch.dkv, B * Tn, HE, 2 * HE, grads.b_K, true);
  column_sums(scratch.dkv + HE, B * Tn, HE, 2 * HE, grads.b_V, true);
  gemm<T>(false, true, B * Tn, D, 2 * HE, T(1), scratch.dkv, 2 * HE, acts.w_kv, 2 * HE, T(1), din, D);
}

template void attention_forward<float>(float*, AttentionActs<float>&, const float*,
                                       const AttentionWeights<float>&, const AttentionDims&);
template void attention_forward<double>(double*, AttentionActs<double>&, const double*,
                                        const AttentionWeights<double>&, const AttentionDims&);
template void attention_backward<float>(float*, const AttentionGrads<float>&, AttentionScratch<float>&,
                                        const float*, const AttentionActs<float>&, const float*,
                                        const AttentionWeights<float>&, const AttentionDims&);
template void attention_backward<double>(double*, const AttentionGrads<double>&, AttentionScratch<double>&,
                                         const double*, const AttentionActs<double>&, const double*,
                                         const AttentionWeights<double>&, const AttentionDims&);

}  // namespace husai
