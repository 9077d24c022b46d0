#pragma once

// Pieces shared by the dense architectures (ReLU, JumpReLU): every latent of every row is computed, so the
// encoder, decoder and all their gradients are husai's deterministic tiled GEMMs. Internal to src/husai/sae.
//
// B = batch rows, D = d_in, L = d_sae.

#include <cmath>
#include <vector>

#include "husai/core/lanes.hpp"

#include "husai/core/gemm.hpp"
#include "husai/core/threading.hpp"
#include "husai/sae/sae.hpp"

namespace husai {
struct SaeKey;
}

namespace husai::sae_detail {

// The L1 penalty's keys (sae.l1_coefficient, sae.l1_warmup_steps), shared by every architecture with an L1
// penalty on its latents (relu.cpp).
std::vector<SaeKey> l1_penalty_keys();
// lambda_t = l1_coefficient * min(1, step / l1_warmup_steps).
double l1_coefficient_at(const SaeConfig& cfg, int64_t step);

// relu's loss and gradients computed densely over [B, d_sae] (the path relu trained with before its sparse
// one, relu.cpp): kept as the reference the sparse path is tested and benchmarked against.
template <typename T>
SaeLossParts relu_loss_backward_dense(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>* g,
                                      const SaeBatch<T>& batch, SaeWorkspace<T>& ws);

// jumprelu's loss and gradients computed densely over [B, d_sae] (the path jumprelu trained with before its
// sparse one, jumprelu.cpp): the reference the sparse path is tested and benchmarked against.
template <typename T>
SaeLossParts jumprelu_loss_backward_dense(const SaeConfig& cfg, const SaeView<const T>& p,
                                          const SaeView<T>* g, const SaeBatch<T>& batch, SaeWorkspace<T>& ws);

// ws.xc = x - b_dec (or x), ws.z = xc W_enc + b_enc  [B, L]; without b_enc when add_b_enc is false (for an
// architecture that adds its own per-path biases to xc W_enc).
template <typename T>
void encoder_pre(const SaeConfig& cfg, const SaeView<const T>& p, const T* x, int64_t B, SaeWorkspace<T>& ws,
                 bool add_b_enc = true) {
  const int64_t D = cfg.d_in;
  const int64_t L = cfg.d_sae;
  ws.xc.resize(static_cast<size_t>(B * D));
  ws.z.resize(static_cast<size_t>(B * L));
  parallel_chunks(B, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t d = 0; d < D; ++d) {
        ws.xc[static_cast<size_t>(r * D + d)] =
            cfg.apply_b_dec_to_input ? x[r * D + d] - p.b_dec[d] : x[r * D + d];
      }
      for (int64_t i = 0; i < L; ++i) ws.z[static_cast<size_t>(r * L + i)] = add_b_enc ? p.b_enc[i] : T(0);
    }
  });
  gemm<T>(false, false, B, L, D, T(1), ws.xc.data(), D, p.W_enc, L, T(1), ws.z.data(), L);
}

// ||W_dec,i|| per latent (each a sum over d in order).
template <typename T>
std::vector<T> decoder_row_norms(const SaeConfig& cfg, const SaeView<const T>& p) {
  const int64_t D = cfg.d_in;
  std::vector<T> norm(static_cast<size_t>(cfg.d_sae));
  for (int64_t i = 0; i < cfg.d_sae; ++i) {
    T s = T(0);
    for (int64_t d = 0; d < D; ++d) s += p.W_dec[i * D + d] * p.W_dec[i * D + d];
    norm[static_cast<size_t>(i)] = std::sqrt(s);
  }
  return norm;
}

// Per latent the sum of f [B, L] over rows (column_sums, fixed order), returned; ws.fired[i] = 1 when latent
// i is active in some row. f >= 0, so a sum is positive exactly when one of its entries is.
template <typename T>
std::vector<T> mark_fired(const T* f, int64_t B, int64_t L, SaeWorkspace<T>& ws) {
  std::vector<T> f_sum(static_cast<size_t>(L));
  column_sums<T>(f, B, L, L, f_sum.data(), false);
  ws.fired.resize(static_cast<size_t>(L));
  for (int64_t i = 0; i < L; ++i)
    ws.fired[static_cast<size_t>(i)] = f_sum[static_cast<size_t>(i)] > T(0) ? 1 : 0;
  return f_sum;
}

// The latents active in f (f > 0) and the norm-weighted L1 sum_b sum_i w_bi norm_i, over a batch [B, L]: per
// row first (branch-free: which latents fire is data-dependent, so branches would mispredict), then the rows
// added in row order.
struct RowSparsity {
  double weighted_l1 = 0;
  int64_t active = 0;
};
template <typename T>
RowSparsity row_sparsity(const T* f, const T* w, const T* norm, int64_t B, int64_t L) {
  std::vector<double> row_l1(static_cast<size_t>(B));
  std::vector<int64_t> row_nnz(static_cast<size_t>(B));
  parallel_chunks(B, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* fr = f + r * L;
      int32_t count = 0;
      for (int64_t i = 0; i < L; ++i) count += static_cast<int32_t>(fr[i] > T(0));
      row_l1[static_cast<size_t>(r)] = static_cast<double>(dot_lanes(w + r * L, norm, L));
      row_nnz[static_cast<size_t>(r)] = count;
    }
  });
  RowSparsity out;
  for (int64_t r = 0; r < B; ++r) {
    out.weighted_l1 += row_l1[static_cast<size_t>(r)];
    out.active += row_nnz[static_cast<size_t>(r)];
  }
  return out;
}

// x_hat = f W_dec + b_dec  [B, D].
template <typename T>
void decoder_dense(const SaeConfig& cfg, const SaeView<const T>& p, const T* f, int64_t B, T* x_hat) {
  const int64_t D = cfg.d_in;
  for (int64_t r = 0; r < B; ++r) {
    for (int64_t d = 0; d < D; ++d) x_hat[r * D + d] = p.b_dec[d];
  }
  gemm<T>(false, false, B, D, cfg.d_sae, T(1), f, cfg.d_sae, p.W_dec, D, T(1), x_hat, D);
}

// Returns mse = (1/B) sum_b ||x_hat_b - x_b||^2 (per-row sums added in row order) and, when grad_out is
// non-null, writes d mse / d x_hat = (2/B)(x_hat - x).
template <typename T>
double mse_and_grad(const T* x, const T* x_hat, int64_t B, int64_t D, T* grad_out) {
  std::vector<double> row_err(static_cast<size_t>(B));
  const T scale = T(2) / static_cast<T>(B);
  parallel_chunks(B, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      double s = 0;
      for (int64_t d = 0; d < D; ++d) {
        const T e = x_hat[r * D + d] - x[r * D + d];
        s += static_cast<double>(e) * static_cast<double>(e);
        if (grad_out != nullptr) grad_out[r * D + d] = scale * e;
      }
      row_err[static_cast<size_t>(r)] = s;
    }
  });
  double total = 0;
  for (double v : row_err) total += v;
  return total / static_cast<double>(B);
}

// Given d loss / d x_hat (grad_out [B,D]), d loss / d z (dz [B,L]) and the latents f [B,L], accumulates the
// gradients of W_dec, b_dec, W_enc, b_enc. b_dec enters twice: in x_hat, and (apply_b_dec_to_input) with a
// minus sign in the encoder input, whose gradient is -W_enc db_enc.
template <typename T>
void dense_param_grads(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>& g, const T* xc,
                       const T* f, const T* grad_out, const T* dz, int64_t B) {
  const int64_t D = cfg.d_in;
  const int64_t L = cfg.d_sae;
  gemm<T>(true, false, L, D, B, T(1), f, L, grad_out, D, T(1), g.W_dec, D);
  gemm<T>(true, false, D, L, B, T(1), xc, D, dz, L, T(1), g.W_enc, L);
  column_sums<T>(grad_out, B, D, D, g.b_dec, true);
  column_sums<T>(dz, B, L, L, g.b_enc, true);
  if (cfg.apply_b_dec_to_input) {
    for (int64_t d = 0; d < D; ++d) {
      T s = T(0);
      for (int64_t i = 0; i < L; ++i) s += p.W_enc[d * L + i] * g.b_enc[i];
      g.b_dec[d] -= s;
    }
  }
}

}  // namespace husai::sae_detail
