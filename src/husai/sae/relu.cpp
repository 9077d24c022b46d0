// ReLU SAE with an L1 penalty weighted by decoder row norms (SAELens "standard"; Anthropic, April 2024):
//   xc = x - b_dec (apply_b_dec_to_input)     z = xc W_enc + b_enc        f = ReLU(z)
//   x_hat = f W_dec + b_dec
//   loss = (1/B) sum_b ||x_hat_b - x_b||^2 + lambda_t (1/B) sum_b sum_i f_bi ||W_dec,i||
// lambda_t = l1_coefficient * min(1, step / l1_warmup_steps): the warm-up keeps early training from killing
// latents before the reconstruction has organised them.
//
// Backward: g = (2/B)(x_hat - x);  df = g W_dec^T + (lambda_t / B) ||W_dec,i||;  dz = df * [z > 0];
//   dW_dec = f^T g + (lambda_t / B) (sum_b f_bi) W_dec,i / ||W_dec,i||;  dW_enc = xc^T dz;  db_enc = sum_b
//   dz; db_dec = sum_b g - W_enc db_enc.

#include <algorithm>
#include <cmath>

#include "husai/io/config.hpp"
#include "husai/sae/architecture.hpp"
#include "husai/sae/dense_path.hpp"
#include "husai/sae/sparse_path.hpp"

namespace husai {

namespace sae_detail {

double l1_coefficient_at(const SaeConfig& cfg, int64_t step) {
  const double warm =
      cfg.l1_warmup_steps > 0
          ? std::min(1.0, static_cast<double>(step) / static_cast<double>(cfg.l1_warmup_steps))
          : 1.0;
  return cfg.l1_coefficient * warm;
}

std::vector<SaeKey> l1_penalty_keys() {
  return {
      {"sae.l1_coefficient",
       [](ConfigSchema& s) -> FieldSpec& {
         return s
             .add_float("sae.l1_coefficient", SaeConfig{}.l1_coefficient, "L1 weight (decoder-norm weighted)")
             .min(0.0);
       },
       [](const Config& c, SaeConfig& m) { m.l1_coefficient = c.get_double("sae.l1_coefficient"); }},
      {"sae.l1_warmup_steps",
       [](ConfigSchema& s) -> FieldSpec& {
         return s
             .add_int("sae.l1_warmup_steps", SaeConfig{}.l1_warmup_steps,
                      "steps over which the L1 weight ramps up from 0")
             .min(0);
       },
       [](const Config& c, SaeConfig& m) { m.l1_warmup_steps = c.get_int("sae.l1_warmup_steps"); }},
  };
}

}  // namespace sae_detail

template <typename T>
SaeLossParts sae_detail::relu_loss_backward_dense(const SaeConfig& cfg, const SaeView<const T>& p,
                                                  const SaeView<T>* g, const SaeBatch<T>& batch,
                                                  SaeWorkspace<T>& ws) {
  using namespace sae_detail;
  const int64_t B = batch.n_rows;
  const int64_t D = cfg.d_in;
  const int64_t L = cfg.d_sae;
  encoder_pre(cfg, p, batch.x, B, ws);
  ws.f.resize(static_cast<size_t>(B * L));
  parallel_chunks(B, 256, [&](int64_t r0, int64_t r1) {
    const T* __restrict z = ws.z.data() + r0 * L;
    T* __restrict f = ws.f.data() + r0 * L;
    for (int64_t j = 0; j < (r1 - r0) * L; ++j) f[j] = std::max(z[j], T(0));
  });
  ws.x_hat.resize(static_cast<size_t>(B * D));
  decoder_dense(cfg, p, ws.f.data(), B, ws.x_hat.data());

  const std::vector<T> dec_norm = decoder_row_norms(cfg, p);
  const double lambda = l1_coefficient_at(cfg, batch.step);

  SaeLossParts out;
  if (g != nullptr) ws.grad_out.resize(static_cast<size_t>(B * D));
  out.mse = mse_and_grad(batch.y(), ws.x_hat.data(), B, D, g != nullptr ? ws.grad_out.data() : nullptr);
  const RowSparsity rows = row_sparsity(ws.f.data(), ws.f.data(), dec_norm.data(), B, L);
  const std::vector<T> f_sum = mark_fired(ws.f.data(), B, L, ws);
  out.sparsity = lambda * rows.weighted_l1 / static_cast<double>(B);
  out.loss = out.mse + out.sparsity;
  out.l0 = static_cast<double>(rows.active) / static_cast<double>(B);
  out.explained_variance = batch_explained_variance(batch.y(), ws.x_hat.data(), B, D);
  if (g == nullptr) return out;

  const auto coef = static_cast<T>(lambda / static_cast<double>(B));
  std::vector<T> l1_grad(static_cast<size_t>(L));  // d penalty / d f_bi = (lambda_t / B) ||W_dec,i||
  for (int64_t i = 0; i < L; ++i) l1_grad[static_cast<size_t>(i)] = coef * dec_norm[static_cast<size_t>(i)];
  ws.dz.resize(static_cast<size_t>(B * L));
  gemm<T>(false, true, B, L, D, T(1), ws.grad_out.data(), D, p.W_dec, D, T(0), ws.dz.data(), L);
  parallel_chunks(B, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* __restrict dz = ws.dz.data() + r * L;
      const T* __restrict z = ws.z.data() + r * L;
      const T* __restrict add = l1_grad.data();
      for (int64_t i = 0; i < L; ++i) dz[i] = z[i] > T(0) ? dz[i] + add[i] : T(0);
    }
  });
  dense_param_grads(cfg, p, *g, ws.xc.data(), ws.f.data(), ws.grad_out.data(), ws.dz.data(), B);
  for (int64_t i = 0; i < L; ++i) {
    const T n = dec_norm[static_cast<size_t>(i)];
    if (n <= T(0)) continue;
    const T c = coef * f_sum[static_cast<size_t>(i)] / n;
    for (int64_t d = 0; d < D; ++d) g->W_dec[i * D + d] += c * p.W_dec[i * D + d];
  }
  return out;
}

// The training path: the encoder product is dense (every pre-activation decides whether its latent fires);
// after it only the active entries (z > 0; an L0 of tens out of thousands) are touched, by the TopK family's
// sparse path (sparse_path.hpp): decoding, the L1 term's gradient (added to each active entry's d loss / d
// z), and every weight gradient. The same loss and gradients as relu_loss_backward_dense up to rounding
// order.
template <typename T>
SaeLossParts relu_loss_backward(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>* g,
                                const SaeBatch<T>& batch, SaeWorkspace<T>& ws) {
  using namespace sae_detail;
  const int64_t B = batch.n_rows;
  const int64_t D = cfg.d_in;
  const int64_t L = cfg.d_sae;
  encode_select_above<T>(cfg, p, batch.x, B, ws, nullptr);
  const std::vector<T> dec_norm = decoder_row_norms(cfg, p);
  const double lambda = l1_coefficient_at(cfg, batch.step);
  const auto coef = static_cast<T>(lambda / static_cast<double>(B));
  SaeLossParts out = sparse_forward_no_aux(cfg, p, g != nullptr, batch, ws);
  // sum_b sum_i f_bi ||W_dec,i|| and, per latent, sum_b f_bi: the entries in row order.
  double weighted_l1 = 0;
  std::vector<T> f_sum(static_cast<size_t>(L), T(0));
  const int64_t nnz = ws.row_ptr[static_cast<size_t>(B)];
  for (int64_t e = 0; e < nnz; ++e) {
    const int32_t i = ws.idx[static_cast<size_t>(e)];
    const T a = ws.act[static_cast<size_t>(e)];
    weighted_l1 += static_cast<double>(a * dec_norm[static_cast<size_t>(i)]);
    f_sum[static_cast<size_t>(i)] += a;
  }
  out.sparsity = lambda * weighted_l1 / static_cast<double>(B);
  out.loss += out.sparsity;
  if (g == nullptr) return out;
  // d penalty / d f_bi = (lambda_t / B) ||W_dec,i||, added to each active entry's d loss / d z.
  for (int64_t e = 0; e < nnz; ++e)
    ws.dz_entry[static_cast<size_t>(e)] +=
        coef * dec_norm[static_cast<size_t>(ws.idx[static_cast<size_t>(e)])];
  sparse_backward_no_aux(cfg, p, *g, B, ws);
  // The penalty through the decoder norms: (lambda_t / B) (sum_b f_bi) W_dec,i / ||W_dec,i||.
  for (int64_t i = 0; i < L; ++i) {
    const T n = dec_norm[static_cast<size_t>(i)];
    if (n <= T(0) || f_sum[static_cast<size_t>(i)] == T(0)) continue;
    const T c = coef * f_sum[static_cast<size_t>(i)] / n;
    for (int64_t d = 0; d < D; ++d) g->W_dec[i * D + d] += c * p.W_dec[i * D + d];
  }
  return out;
}

template SaeLossParts sae_detail::relu_loss_backward_dense<float>(const SaeConfig&,
                                                                  const SaeView<const float>&,
                                                                  const SaeView<float>*,
                                                                  const SaeBatch<float>&,
                                                                  SaeWorkspace<float>&);
template SaeLossParts sae_detail::relu_loss_backward_dense<double>(const SaeConfig&,
                                                                   const SaeView<const double>&,
                                                                   const SaeView<double>*,
                                                                   const SaeBatch<double>&,
                                                                   SaeWorkspace<double>&);

namespace {

// SAELens "standard": f = ReLU(xc W_enc + b_enc).
void standard_activate(const SaeModel& sae, float* z, int64_t n_rows) {
  const int64_t L = sae.d_sae;
  for (int64_t r = 0; r < n_rows; ++r) {
    float* zr = z + r * L;
    for (int64_t i = 0; i < L; ++i) zr[i] = std::max(zr[i] + sae.b_enc[static_cast<size_t>(i)], 0.0f);
  }
}

const SaeInferenceKind kStandard = [] {
  SaeInferenceKind k;
  k.name = "standard";
  k.transcoder_name = "transcoder";
  k.activate = standard_activate;
  return k;
}();

}  // namespace

const SaeArchitecture& relu_architecture() {
  static const SaeArchitecture arch = [] {
    SaeArchitecture a;
    a.name = "relu";
    a.summary = "ReLU + L1 on decoder-norm-weighted latents (SAELens standard; Anthropic, April 2024)";
    a.inference = &kStandard,
    // ReLU + L1 trains best with a smaller step than the other architectures' 1e-3.;
        a.default_lr = 5e-4;
    a.keys = sae_detail::l1_penalty_keys();
    a.loss_backward_f32 = relu_loss_backward<float>;
    a.loss_backward_f64 = relu_loss_backward<double>;
    return a;
  }();
  return arch;
}

}  // namespace husai
