// Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse Autoencoders";
// SAELens gated). One encoder direction per latent serves two paths:
//   xc = x - b_dec (apply_b_dec_to_input)      u = xc W_enc
//   pi_gate = u + b_gate                       gate = [pi_gate > 0]           (which latents fire)
//   pi_mag = u * exp(r_mag) + b_mag            f = gate * ReLU(pi_mag)        (how strongly)
//   x_hat = f W_dec + b_dec
//   loss = (1/B) sum_b ||x_hat_b - x_b||^2                                       reconstruction
//        + lambda_t (1/B) sum_b sum_i ReLU(pi_gate)_bi ||W_dec,i||               L1 on the gate path
//        + (1/B) sum_b ||ReLU(pi_gate)_b stop(W_dec) + stop(b_dec) - x_b||^2     auxiliary gate loss
// The gate's step has no gradient, so the gate path learns only from the L1 term and the auxiliary loss,
// which decodes ReLU(pi_gate) through the frozen decoder: the gate must itself reconstruct, and the L1
// penalty shrinks only the gate, not the magnitudes (the point of the architecture). lambda_t ramps up as
// relu's (sae.l1_coefficient, sae.l1_warmup_steps).
//
// Parameters in the flat layout: W_enc, W_dec, b_enc (holding b_gate), b_dec, then r_mag, b_mag. Exported in
// SAELens' gated layout: W_enc, b_gate, r_mag, b_mag, W_dec, b_dec (no b_enc).
//
// Backward, with g = (2/B)(x_hat - x) and g_aux = (2/B)(x_aux - x):
//   d pi_mag = (g W_dec^T) * gate * [pi_mag > 0]
//   d pi_gate = [pi_gate > 0] * (g_aux W_dec^T + (lambda_t / B) ||W_dec,i||)
//   d u = d pi_gate + d pi_mag * exp(r_mag)      dW_enc = xc^T d u      db_dec = sum_b g - W_enc sum_b d u
//   db_gate = sum_b d pi_gate    db_mag = sum_b d pi_mag    dr_mag = exp(r_mag) sum_b d pi_mag * u
//   dW_dec = f^T g + (lambda_t / B)(sum_b ReLU(pi_gate)_bi) W_dec,i / ||W_dec,i||   (the aux loss: none)

#include <algorithm>
#include <cmath>

#include "husai/core/gemm.hpp"
#include "husai/core/threading.hpp"
#include "husai/sae/architecture.hpp"
#include "husai/sae/dense_path.hpp"

namespace husai {
namespace {

// Forward, loss and backward in one function (a hot kernel, a little over 100 lines): the passes share the
// batch's [B, L] buffers in the workspace, and the header comment above lists them in the order they run.
template <typename T>
SaeLossParts gated_loss_backward(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>* g,
                                 const SaeBatch<T>& batch, SaeWorkspace<T>& ws) {
  using namespace sae_detail;
  const int64_t B = batch.n_rows;
  const int64_t D = cfg.d_in;
  const int64_t L = cfg.d_sae;
  const T* b_gate = p.b_enc;
  const T* r_mag = p.extra;
  const T* b_mag = p.extra + L;
  std::vector<T> exp_r(static_cast<size_t>(L));
  for (int64_t i = 0; i < L; ++i) exp_r[static_cast<size_t>(i)] = std::exp(r_mag[i]);

  // u = xc W_enc into ws.z; ws.df = ReLU(pi_gate); ws.f = f.
  encoder_pre(cfg, p, batch.x, B, ws, /*add_b_enc=*/false);
  ws.f.resize(static_cast<size_t>(B * L));
  ws.df.resize(static_cast<size_t>(B * L));
  parallel_chunks(B, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t j = r0 * L; j < r1 * L; ++j) {
      const auto i = static_cast<size_t>(j % L);
      const T u = ws.z[static_cast<size_t>(j)];
      const T gate = u + b_gate[i];
      const T mag = u * exp_r[i] + b_mag[i];
      ws.df[static_cast<size_t>(j)] = std::max(gate, T(0));
      ws.f[static_cast<size_t>(j)] = gate > T(0) ? std::max(mag, T(0)) : T(0);
    }
  });
  ws.x_hat.resize(static_cast<size_t>(B * D));
  decoder_dense(cfg, p, ws.f.data(), B, ws.x_hat.data());
  // x_aux: the gate path through a frozen copy of the decoder (a stop-gradient input), refreshed every call
  // except under the test hook freeze_aux_residual, which keeps the previous call's copy so that finite
  // differences see the same function the backward differentiates.
  if (!ws.freeze_aux_residual || ws.aux_act.size() != static_cast<size_t>(L * D + D)) {
    ws.aux_act.assign(p.W_dec, p.W_dec + L * D);
    ws.aux_act.insert(ws.aux_act.end(), p.b_dec, p.b_dec + D);
  }
  SaeView<const T> frozen = p;
  frozen.W_dec = ws.aux_act.data();
  frozen.b_dec = ws.aux_act.data() + L * D;
  ws.aux_residual.resize(static_cast<size_t>(B * D));
  decoder_dense(cfg, frozen, ws.df.data(), B, ws.aux_residual.data());

  const std::vector<T> dec_norm = decoder_row_norms(cfg, p);
  const double lambda = l1_coefficient_at(cfg, batch.step);

  SaeLossParts out;
  if (g != nullptr) {
    ws.grad_out.resize(static_cast<size_t>(B * D));
    ws.aux_grad.resize(static_cast<size_t>(B * D));
  }
  out.mse = mse_and_grad(batch.y(), ws.x_hat.data(), B, D, g != nullptr ? ws.grad_out.data() : nullptr);
  out.aux =
      mse_and_grad(batch.y(), ws.aux_residual.data(), B, D, g != nullptr ? ws.aux_grad.data() : nullptr);
  // L0 counts f; the L1 weighs the gate path ReLU(pi_gate).
  const RowSparsity rows = row_sparsity(ws.f.data(), ws.df.data(), dec_norm.data(), B, L);
  mark_fired(ws.f.data(), B, L, ws);
  out.sparsity = lambda * rows.weighted_l1 / static_cast<double>(B);
  out.loss = out.mse + out.sparsity + out.aux;
  out.l0 = static_cast<double>(rows.active) / static_cast<double>(B);
  out.explained_variance = batch_explained_variance(batch.y(), ws.x_hat.data(), B, D);
  if (g == nullptr) return out;

  const auto coef = static_cast<T>(lambda / static_cast<double>(B));
  // d pi_mag into ws.dz, d pi_gate into ws.dwenc_t; then ws.dz becomes d u = d pi_gate + d pi_mag exp(r_mag)
  // after d pi_mag * u is kept (ws.up) for r_mag's gradient.
  ws.dz.resize(static_cast<size_t>(B * L));
  ws.dwenc_t.resize(static_cast<size_t>(B * L));
  ws.up.resize(static_cast<size_t>(B * L));
  gemm<T>(false, true, B, L, D, T(1), ws.grad_out.data(), D, p.W_dec, D, T(0), ws.dz.data(), L);
  gemm<T>(false, true, B, L, D, T(1), ws.aux_grad.data(), D, frozen.W_dec, D, T(0), ws.dwenc_t.data(), L);
  std::vector<T> dpm_sum(static_cast<size_t>(L));
  parallel_chunks(B, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t j = r0 * L; j < r1 * L; ++j) {
      const auto i = static_cast<size_t>(j % L);
      const T u = ws.z[static_cast<size_t>(j)];
      const bool open = u + b_gate[i] > T(0);
      const bool mag_on = u * exp_r[i] + b_mag[i] > T(0);
      const T dpm = open && mag_on ? ws.dz[static_cast<size_t>(j)] : T(0);
      const T dpg = open ? ws.dwenc_t[static_cast<size_t>(j)] + coef * dec_norm[i] : T(0);
      ws.up[static_cast<size_t>(j)] = dpm * u;
      ws.dwenc_t[static_cast<size_t>(j)] = dpg;
      ws.dz[static_cast<size_t>(j)] = dpm;
    }
  });
  T* g_r = g->extra;
  T* g_bmag = g->extra + L;
  column_sums<T>(ws.dz.data(), B, L, L, g_bmag, false);
  column_sums<T>(ws.up.data(), B, L, L, g_r, false);
  for (int64_t i = 0; i < L; ++i) g_r[i] *= exp_r[static_cast<size_t>(i)];
  parallel_chunks(B, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t j = r0 * L; j < r1 * L; ++j) {
      const auto i = static_cast<size_t>(j % L);
      ws.dz[static_cast<size_t>(j)] =
          ws.dwenc_t[static_cast<size_t>(j)] + ws.dz[static_cast<size_t>(j)] * exp_r[i];
    }
  });
  // W_dec, W_enc and b_dec from d u; dense_param_grads leaves sum_b d u in b_enc's slot, which then takes
  // b_gate's own gradient.
  dense_param_grads(cfg, p, *g, ws.xc.data(), ws.f.data(), ws.grad_out.data(), ws.dz.data(), B);
  column_sums<T>(ws.dwenc_t.data(), B, L, L, g->b_enc, false);
  std::vector<T> gate_sum(static_cast<size_t>(L));
  column_sums<T>(ws.df.data(), B, L, L, gate_sum.data(), false);
  for (int64_t i = 0; i < L; ++i) {
    const T n = dec_norm[static_cast<size_t>(i)];
    if (n <= T(0)) continue;
    const T c = coef * gate_sum[static_cast<size_t>(i)] / n;
    for (int64_t d = 0; d < D; ++d) g->W_dec[i * D + d] += c * p.W_dec[i * D + d];
  }
  return out;
}

// SAELens gated inference: f = [u + b_gate > 0] * ReLU(u * exp(r_mag) + b_mag), u = xc W_enc.
void gated_activate(const SaeModel& sae, float* z, int64_t n_rows) {
  const int64_t L = sae.d_sae;
  const std::vector<float>& b_gate = sae.extra.at("b_gate");
  const std::vector<float>& r_mag = sae.extra.at("r_mag");
  const std::vector<float>& b_mag = sae.extra.at("b_mag");
  for (int64_t r = 0; r < n_rows; ++r) {
    float* zr = z + r * L;
    for (int64_t i = 0; i < L; ++i) {
      const auto ii = static_cast<size_t>(i);
      const float gate = zr[i] + b_gate[ii];
      const float mag = zr[i] * std::exp(r_mag[ii]) + b_mag[ii];
      zr[i] = gate > 0.0f ? std::max(mag, 0.0f) : 0.0f;
    }
  }
}

const SaeInferenceKind kGatedKind = [] {
  SaeInferenceKind k;
  k.name = "gated";
  k.tensors = {"b_gate", "r_mag", "b_mag"};
  k.has_b_enc = false;
  k.activate = gated_activate;
  return k;
}();

// b_enc's slot holds b_gate; r_mag and b_mag follow b_dec. The input scaling folded into W_enc, W_dec and
// b_dec leaves all three unchanged (both paths see the same u).
void export_gated(const SaeConfig& cfg, const SaeLayout& layout, const float* params,
                  const SaeRunningState& /*state*/, SaeModel& sae) {
  const auto L = static_cast<size_t>(cfg.d_sae);
  sae.extra["b_gate"].assign(params + layout.b_enc, params + layout.b_enc + L);
  sae.extra["r_mag"].assign(params + layout.extra, params + layout.extra + L);
  sae.extra["b_mag"].assign(params + layout.extra + L, params + layout.extra + 2 * L);
  sae.b_enc.assign(L, 0.0f);
}

}  // namespace

const SaeArchitecture& gated_architecture() {
  static const SaeArchitecture arch = [] {
    SaeArchitecture a;
    a.name = "gated";
    a.summary = "gate and magnitude paths sharing W_enc, L1 on the gate (Rajamanoharan et al. 2024)";
    a.inference = &kGatedKind;
    a.default_lr = 5e-4,  // as relu: the same L1 dynamics on the gate path;
        a.extra_tensors = {"r_mag", "b_mag"};
    a.keys = sae_detail::l1_penalty_keys();
    a.loss_backward_f32 = gated_loss_backward<float>;
    a.loss_backward_f64 = gated_loss_backward<double>;
    a.export_tensors = export_gated;
    return a;
  }();
  return arch;
}

}  // namespace husai
