// JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"; SAELens jumprelu):
//   z = (x - b_dec) W_enc + b_enc     theta = exp(log_threshold)     f = z * H(z - theta)
//   x_hat = f W_dec + b_dec
//   loss = (1/B) sum_b ||x_hat_b - x_b||^2 + l0_coefficient * P
//   P = (1/B) sum_b sum_i H(z_bi - theta_i)                          (step / L0 penalty, default)
//   P = (1/B) sum_b sum_i tanh(c f_bi ||W_dec,i||)                   (tanh_penalty; Anthropic, Jan 2025)
//
// Straight-through estimator with a rectangle kernel K(u) = [|u| < 1/2] of bandwidth eps:
//   df/dz = H(z - theta)                 df/dtheta = -(theta / eps) K((z - theta) / eps)
//   dH(z - theta)/dz = 0                 dH(z - theta)/dtheta = -(1 / eps) K((z - theta) / eps)
// Documented surrogate (what the gradient check differentiates): the theta-gradient is the exact gradient of
//   S(theta) = sum_bi G_bi * stop(theta_i) * H_eps(z_bi - theta_i) + l0_coefficient/B * sum_bi H_eps(z_bi -
//   theta_i)
// (second term only for the step penalty), H_eps(u) = clamp(u / eps + 1/2, 0, 1) the kernel-smoothed step
// and G = d loss / d f at the current point; every other gradient is the exact gradient of the loss.
// log_threshold's gradient is theta * d/dtheta.

#include <cmath>

#include "husai/core/error.hpp"
#include "husai/io/config.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/sae/architecture.hpp"
#include "husai/sae/dense_path.hpp"
#include "husai/sae/sparse_path.hpp"

namespace husai {

// The dense reference (dense_path.hpp): forward, loss and backward over every [B, L] entry in one function
// (a little over 100 lines): the passes share the batch's [B, L] buffers in the workspace, and the header
// comment above lists them in the order they run.
template <typename T>
SaeLossParts sae_detail::jumprelu_loss_backward_dense(const SaeConfig& cfg, const SaeView<const T>& p,
                                                      const SaeView<T>* g, const SaeBatch<T>& batch,
                                                      SaeWorkspace<T>& ws) {
  using namespace sae_detail;
  const int64_t B = batch.n_rows;
  const int64_t D = cfg.d_in;
  const int64_t L = cfg.d_sae;
  encoder_pre(cfg, p, batch.x, B, ws);
  std::vector<T> theta(static_cast<size_t>(L));
  for (int64_t i = 0; i < L; ++i) theta[static_cast<size_t>(i)] = std::exp(p.extra[i]);
  ws.f.resize(static_cast<size_t>(B * L));
  parallel_chunks(B, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t i = 0; i < L; ++i) {
        const T zv = ws.z[static_cast<size_t>(r * L + i)];
        ws.f[static_cast<size_t>(r * L + i)] = zv > theta[static_cast<size_t>(i)] ? zv : T(0);
      }
    }
  });
  ws.x_hat.resize(static_cast<size_t>(B * D));
  decoder_dense(cfg, p, ws.f.data(), B, ws.x_hat.data());
  const std::vector<T> dec_norm = decoder_row_norms(cfg, p);

  SaeLossParts out;
  if (g != nullptr) ws.grad_out.resize(static_cast<size_t>(B * D));
  out.mse = mse_and_grad(batch.y(), ws.x_hat.data(), B, D, g != nullptr ? ws.grad_out.data() : nullptr);
  const auto c = static_cast<T>(cfg.tanh_scale);
  // Per row, branch-free (which latents fire is data-dependent): the active count and the tanh penalty
  // (tanh(0) = 0, so inactive entries add nothing); rows are then added in row order.
  std::vector<double> row_penalty(static_cast<size_t>(B));
  std::vector<int64_t> row_nnz(static_cast<size_t>(B));
  parallel_chunks(B, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* f = ws.f.data() + r * L;
      int32_t count = 0;
      for (int64_t i = 0; i < L; ++i) count += static_cast<int32_t>(f[i] != T(0));
      double pen = static_cast<double>(count);
      if (cfg.tanh_penalty) {
        pen = 0;
        for (int64_t i = 0; i < L; ++i) {
          pen += static_cast<double>(std::tanh(c * f[i] * dec_norm[static_cast<size_t>(i)]));
        }
      }
      row_penalty[static_cast<size_t>(r)] = pen;
      row_nnz[static_cast<size_t>(r)] = count;
    }
  });
  double penalty = 0;
  int64_t nnz = 0;
  for (int64_t r = 0; r < B; ++r) {
    penalty += row_penalty[static_cast<size_t>(r)];
    nnz += row_nnz[static_cast<size_t>(r)];
  }
  // Active latents have f = z > theta > 0.
  mark_fired(ws.f.data(), B, L, ws);
  out.sparsity = cfg.l0_coefficient * penalty / static_cast<double>(B);
  out.loss = out.mse + out.sparsity;
  out.l0 = static_cast<double>(nnz) / static_cast<double>(B);
  out.explained_variance = batch_explained_variance(batch.y(), ws.x_hat.data(), B, D);
  if (g == nullptr) return out;

  // df = dL/df for every entry (inactive ones too: the threshold's straight-through gradient needs them).
  const auto coef = static_cast<T>(cfg.l0_coefficient / static_cast<double>(B));
  const auto inv_eps = static_cast<T>(1.0 / cfg.bandwidth);
  ws.df.resize(static_cast<size_t>(B * L));
  gemm<T>(false, true, B, L, D, T(1), ws.grad_out.data(), D, p.W_dec, D, T(0), ws.df.data(), L);
  ws.dz.resize(static_cast<size_t>(B * L));
  // Per-row theta contributions, reduced over rows in row order below.
  std::vector<T> dtheta_rows(static_cast<size_t>(B * L));
  std::vector<T> tanh_dec(static_cast<size_t>(B * L), T(0));  // d P / d ||W_dec,i|| per entry (tanh)
  parallel_chunks(B, 256, [&](int64_t r0, int64_t r1) {
    // Local restrict pointers: the buffers never overlap, and saying so lets the compiler vectorise.
    const T* __restrict th = theta.data();
    const T* __restrict norm = dec_norm.data();
    for (int64_t r = r0; r < r1; ++r) {
      const T* __restrict z = ws.z.data() + r * L;
      const T* __restrict f = ws.f.data() + r * L;
      T* __restrict df = ws.df.data() + r * L;
      T* __restrict dz = ws.dz.data() + r * L;
      T* __restrict dth = dtheta_rows.data() + r * L;
      T* __restrict tdec = tanh_dec.data() + r * L;
      if (cfg.tanh_penalty) {
        for (int64_t i = 0; i < L; ++i) {
          const T t = std::tanh(c * f[i] * norm[i]);
          const T dt = coef * (T(1) - t * t) * c;
          df[i] += dt * norm[i];
          tdec[i] = dt * f[i];
        }
      }
      const T step_term = cfg.tanh_penalty ? T(0) : coef * inv_eps;
      for (int64_t i = 0; i < L; ++i) {
        dz[i] = z[i] > th[i] ? df[i] : T(0);
        const T u = (z[i] - th[i]) * inv_eps;
        const bool in_kernel = u > T(-0.5) && u < T(0.5);
        dth[i] = in_kernel ? -th[i] * inv_eps * df[i] - step_term : T(0);
      }
    }
  });
  dense_param_grads(cfg, p, *g, ws.xc.data(), ws.f.data(), ws.grad_out.data(), ws.dz.data(), B);
  parallel_chunks(L, 64, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T dth = T(0);
      T dn = T(0);
      for (int64_t r = 0; r < B; ++r) {
        dth += dtheta_rows[static_cast<size_t>(r * L + i)];
        dn += tanh_dec[static_cast<size_t>(r * L + i)];
      }
      g->extra[i] = dth * theta[static_cast<size_t>(i)];
      const T n = dec_norm[static_cast<size_t>(i)];
      if (cfg.tanh_penalty && n > T(0)) {
        for (int64_t d = 0; d < D; ++d) g->W_dec[i * D + d] += dn * p.W_dec[i * D + d] / n;
      }
    }
  });
  return out;
}

// The training path. The encoder product is dense; after it only two sets of entries are touched: the active
// ones (z > theta; an L0 of tens out of thousands) by the sparse path (sparse_path.hpp): decoding, the
// penalty's gradient and every weight gradient; and the band entries (|z - theta| < eps / 2, active or not,
// found among z > theta - eps), whose d loss / d f (u_b . W_dec,i, plus the tanh term) is all the threshold
// gradient needs. The same loss and gradients as jumprelu_loss_backward_dense up to rounding order; every
// per-latent sum runs over rows in row order.
template <typename T>
SaeLossParts jumprelu_loss_backward(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>* g,
                                    const SaeBatch<T>& batch, SaeWorkspace<T>& ws) {
  using namespace sae_detail;
  const int64_t B = batch.n_rows;
  const int64_t D = cfg.d_in;
  const int64_t L = cfg.d_sae;
  const auto eps = static_cast<T>(cfg.bandwidth);
  const auto inv_eps = static_cast<T>(1.0 / cfg.bandwidth);
  std::vector<T> theta(static_cast<size_t>(L)), floor(static_cast<size_t>(L));
  for (int64_t i = 0; i < L; ++i) {
    theta[static_cast<size_t>(i)] = std::exp(p.extra[i]);
    // A superset of the band: z > theta - eps / 2 up to rounding of (z - theta) / eps.
    floor[static_cast<size_t>(i)] = theta[static_cast<size_t>(i)] - eps;
  }
  // The candidates (z > theta - eps) become the band list; the active entries (z > theta) are taken from it.
  encode_select_above<T>(cfg, p, batch.x, B, ws, floor.data());
  ws.band_row_ptr.swap(ws.row_ptr);
  ws.band_idx.swap(ws.idx);
  ws.band_z.swap(ws.act);
  ws.row_ptr.resize(static_cast<size_t>(B + 1));
  ws.row_ptr[0] = 0;
  ws.idx.clear();
  ws.act.clear();
  for (int64_t r = 0; r < B; ++r) {
    for (int64_t e = ws.band_row_ptr[static_cast<size_t>(r)]; e < ws.band_row_ptr[static_cast<size_t>(r + 1)];
         ++e) {
      const int32_t i = ws.band_idx[static_cast<size_t>(e)];
      const T zv = ws.band_z[static_cast<size_t>(e)];
      if (zv > theta[static_cast<size_t>(i)]) {
        ws.idx.push_back(i);
        ws.act.push_back(zv);
      }
    }
    ws.row_ptr[static_cast<size_t>(r + 1)] = static_cast<int64_t>(ws.idx.size());
  }
  const int64_t nnz = ws.row_ptr[static_cast<size_t>(B)];

  SaeLossParts out = sparse_forward_no_aux(cfg, p, g != nullptr, batch, ws);
  const std::vector<T> dec_norm = decoder_row_norms(cfg, p);
  const auto c = static_cast<T>(cfg.tanh_scale);
  // The penalty: the active count, or sum tanh(c f ||W_dec,i||) over active entries in row order (inactive
  // entries add tanh(0) = 0).
  double penalty = static_cast<double>(nnz);
  if (cfg.tanh_penalty) {
    penalty = 0;
    for (int64_t e = 0; e < nnz; ++e) {
      const T f = ws.act[static_cast<size_t>(e)];
      penalty += static_cast<double>(
          std::tanh(c * f * dec_norm[static_cast<size_t>(ws.idx[static_cast<size_t>(e)])]));
    }
  }
  out.sparsity = cfg.l0_coefficient * penalty / static_cast<double>(B);
  out.loss += out.sparsity;
  if (g == nullptr) return out;

  const auto coef = static_cast<T>(cfg.l0_coefficient / static_cast<double>(B));
  // tanh: d P / d f of an entry is coef (1 - t^2) c ||W_dec,i|| (t = tanh(c f ||W_dec,i||)), added to its
  // d loss / d z when active; d P / d ||W_dec,i|| sums coef (1 - t^2) c f over the active entries.
  std::vector<T> norm_grad(static_cast<size_t>(L), T(0));
  if (cfg.tanh_penalty) {
    for (int64_t e = 0; e < nnz; ++e) {
      const auto i = static_cast<size_t>(ws.idx[static_cast<size_t>(e)]);
      const T f = ws.act[static_cast<size_t>(e)];
      const T t = std::tanh(c * f * dec_norm[i]);
      const T dt = coef * (T(1) - t * t) * c;
      ws.dz_entry[static_cast<size_t>(e)] += dt * dec_norm[i];
      norm_grad[i] += dt * f;
    }
  }
  // Each band entry's threshold-gradient term -(theta / eps) d loss / d f - (step penalty) coef / eps, in
  // parallel over rows (u_b = d loss / d x_hat of row b, ws.up), then summed per latent in row order.
  const int64_t n_band = ws.band_row_ptr[static_cast<size_t>(B)];
  ws.band_term.assign(static_cast<size_t>(n_band), T(0));
  const T step_term = cfg.tanh_penalty ? T(0) : coef * inv_eps;
  parallel_chunks(B, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* u = ws.up.data() + r * D;
      for (int64_t e = ws.band_row_ptr[static_cast<size_t>(r)];
           e < ws.band_row_ptr[static_cast<size_t>(r + 1)]; ++e) {
        const auto i = static_cast<size_t>(ws.band_idx[static_cast<size_t>(e)]);
        const T zv = ws.band_z[static_cast<size_t>(e)];
        const T th = theta[i];
        const T uk = (zv - th) * inv_eps;
        if (!(uk > T(-0.5) && uk < T(0.5))) continue;
        T df = dot_lanes(u, p.W_dec + static_cast<int64_t>(i) * D, D);
        if (cfg.tanh_penalty) {
          const T f = zv > th ? zv : T(0);
          const T t = std::tanh(c * f * dec_norm[i]);
          df += coef * (T(1) - t * t) * c * dec_norm[i];
        }
        ws.band_term[static_cast<size_t>(e)] = -th * inv_eps * df - step_term;
      }
    }
  });
  sparse_backward_no_aux(cfg, p, *g, B, ws);
  std::vector<T> dtheta(static_cast<size_t>(L), T(0));
  for (int64_t e = 0; e < n_band; ++e)
    dtheta[static_cast<size_t>(ws.band_idx[static_cast<size_t>(e)])] += ws.band_term[static_cast<size_t>(e)];
  for (int64_t i = 0; i < L; ++i) {
    g->extra[i] = dtheta[static_cast<size_t>(i)] * theta[static_cast<size_t>(i)];
    const T n = dec_norm[static_cast<size_t>(i)];
    const T dn = norm_grad[static_cast<size_t>(i)];
    if (cfg.tanh_penalty && n > T(0) && dn != T(0)) {
      for (int64_t d = 0; d < D; ++d) g->W_dec[i * D + d] += dn * p.W_dec[i * D + d] / n;
    }
  }
  return out;
}

template SaeLossParts sae_detail::jumprelu_loss_backward_dense<float>(const SaeConfig&,
                                                                      const SaeView<const float>&,
                                                                      const SaeView<float>*,
                                                                      const SaeBatch<float>&,
                                                                      SaeWorkspace<float>&);
template SaeLossParts sae_detail::jumprelu_loss_backward_dense<double>(const SaeConfig&,
                                                                       const SaeView<const double>&,
                                                                       const SaeView<double>*,
                                                                       const SaeBatch<double>&,
                                                                       SaeWorkspace<double>&);

namespace {

// SAELens jumprelu: f = z * [z > threshold] (and z > 0), z = xc W_enc + b_enc.
void jumprelu_activate(const SaeModel& sae, float* z, int64_t n_rows) {
  const int64_t L = sae.d_sae;
  const std::vector<float>& threshold = sae.extra.at("threshold");
  for (int64_t r = 0; r < n_rows; ++r) {
    float* zr = z + r * L;
    for (int64_t i = 0; i < L; ++i) {
      const float v = zr[i] + sae.b_enc[static_cast<size_t>(i)];
      zr[i] = v > threshold[static_cast<size_t>(i)] && v > 0.0f ? v : 0.0f;
    }
  }
}

// threshold [d_sae], or log_threshold (older SAELens training checkpoints).
void jumprelu_read(const nlohmann::json& /*cfg*/, const std::string& /*cfg_path*/, const SafetensorsFile& f,
                   SaeModel& sae) {
  std::vector<float>& threshold = sae.extra["threshold"];
  if (f.has("threshold")) {
    threshold = saelens_tensor(f, "threshold", {sae.d_sae});
  } else if (f.has("log_threshold")) {
    threshold = saelens_tensor(f, "log_threshold", {sae.d_sae});
    for (float& t : threshold) t = std::exp(t);
  } else {
    f.get("threshold");  // throws, naming the available tensors
  }
}

const SaeInferenceKind kJumpReLU = [] {
  SaeInferenceKind k;
  k.name = "jumprelu";
  k.transcoder_name = "jumprelu_transcoder";
  k.tensors = {"threshold"};
  k.read = jumprelu_read;
  k.activate = jumprelu_activate;
  return k;
}();

std::vector<SaeKey> jumprelu_keys() {
  return {
      {"sae.l0_coefficient",
       [](ConfigSchema& s) -> FieldSpec& {
         return s.add_float("sae.l0_coefficient", SaeConfig{}.l0_coefficient, "sparsity penalty weight")
             .min(0.0);
       },
       [](const Config& c, SaeConfig& m) { m.l0_coefficient = c.get_double("sae.l0_coefficient"); }},
      {"sae.jumprelu_penalty",
       [](ConfigSchema& s) -> FieldSpec& {
         return s.add_enum("sae.jumprelu_penalty", SaeConfig{}.tanh_penalty ? "tanh" : "step",
                           {"step", "tanh"}, "L0 step penalty or tanh penalty");
       },
       [](const Config& c, SaeConfig& m) {
         m.tanh_penalty = c.get_string("sae.jumprelu_penalty") == "tanh";
       }},
      {"sae.jumprelu_tanh_scale",
       [](ConfigSchema& s) -> FieldSpec& {
         return s
             .add_float("sae.jumprelu_tanh_scale", SaeConfig{}.tanh_scale,
                        "tanh penalty: c in tanh(c |f| ||W_dec,i||)")
             .greater_than(0.0);
       },
       [](const Config& c, SaeConfig& m) { m.tanh_scale = c.get_double("sae.jumprelu_tanh_scale"); }},
      {"sae.jumprelu_bandwidth",
       [](ConfigSchema& s) -> FieldSpec& {
         return s
             .add_float("sae.jumprelu_bandwidth", SaeConfig{}.bandwidth, "straight-through kernel bandwidth")
             .greater_than(0.0);
       },
       [](const Config& c, SaeConfig& m) { m.bandwidth = c.get_double("sae.jumprelu_bandwidth"); }},
      {"sae.jumprelu_init_threshold",
       [](ConfigSchema& s) -> FieldSpec& {
         return s.add_float("sae.jumprelu_init_threshold", SaeConfig{}.init_threshold, "threshold at init")
             .greater_than(0.0);
       },
       [](const Config& c, SaeConfig& m) { m.init_threshold = c.get_double("sae.jumprelu_init_threshold"); }},
  };
}

void validate_jumprelu(const SaeConfig& cfg) {
  if (cfg.bandwidth <= 0 || cfg.init_threshold <= 0)
    throw Error("jumprelu bandwidth and init_threshold must be > 0");
}

void init_jumprelu(const SaeConfig& cfg, const SaeLayout& layout, float* params) {
  for (int64_t i = 0; i < layout.n_extra; ++i)
    params[layout.extra + i] = static_cast<float>(std::log(cfg.init_threshold));
}

void export_jumprelu(const SaeConfig& cfg, const SaeLayout& layout, const float* params,
                     const SaeRunningState& /*state*/, SaeModel& sae) {
  std::vector<float>& threshold = sae.extra["threshold"];
  threshold.resize(static_cast<size_t>(cfg.d_sae));
  for (int64_t i = 0; i < cfg.d_sae; ++i)
    threshold[static_cast<size_t>(i)] = std::exp(params[layout.extra + i]);
}

}  // namespace

const SaeInferenceKind& sae_detail::jumprelu_inference_kind() {
  return kJumpReLU;
}

const SaeArchitecture& jumprelu_architecture() {
  static const SaeArchitecture arch = [] {
    SaeArchitecture a;
    a.name = "jumprelu";
    a.summary = "ReLU with a learned per-latent threshold, L0 or tanh penalty (Rajamanoharan et al. 2024)";
    a.inference = &kJumpReLU;
    a.extra_tensors = {"log_threshold"};
    a.keys = jumprelu_keys();
    a.loss_backward_f32 = jumprelu_loss_backward<float>;
    a.loss_backward_f64 = jumprelu_loss_backward<double>;
    a.validate = validate_jumprelu;
    a.init = init_jumprelu;
    a.export_tensors = export_jumprelu;
    return a;
  }();
  return arch;
}

}  // namespace husai
