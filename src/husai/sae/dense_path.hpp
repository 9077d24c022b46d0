#pragma once

// Pieces shared by the dense architectures (ReLU, JumpReLU): every latent of every row is computed, so the
// encoder, decoder and all their gradients are husai's deterministic tiled GEMMs. Internal to src/husai/sae.
//
// B = batch rows, D = d_in, L = d_sae.

#include <vector>

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

// ws.xc = x - b_dec (or x), ws.z = xc W_enc + b_enc  [B, L].
template <typename T>
void encoder_pre(const SaeConfig& cfg, const SaeView<const T>& p, const T* x, int64_t B,
                 SaeWorkspace<T>& ws) {
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
      for (int64_t i = 0; i < L; ++i) ws.z[static_cast<size_t>(r * L + i)] = p.b_enc[i];
    }
  });
  gemm<T>(false, false, B, L, D, T(1), ws.xc.data(), D, p.W_enc, L, T(1), ws.z.data(), L);
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
