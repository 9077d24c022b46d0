// BatchTopK SAE (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders"):
//   z = (x - b_dec) W_enc + b_enc     f = the k*B largest entries of ReLU(z) over the whole batch, others 0
//   loss = (1/B) sum_b ||x_hat_b - x_b||^2 + aux_coefficient * AuxK        (AuxK as in topk.cpp)
// Rows may get more or fewer than k latents; the mean is k. The selection does not exist at inference, so a
// running threshold theta tracks the smallest kept activation (theta += threshold_lr * (min kept - theta),
// set directly on the first step: update_running_threshold, the after-step hook) and is saved as a JumpReLU
// threshold: at inference f = z * [z > theta].

#include <algorithm>

#include "husai/core/threading.hpp"
#include "husai/io/config.hpp"
#include "husai/sae/architecture.hpp"
#include "husai/sae/dense_path.hpp"
#include "husai/sae/sparse_path.hpp"

namespace husai {
namespace sae_detail {

template <typename T>
void select_topk_batch(const T* z, int64_t B, int64_t L, int64_t k, SaeWorkspace<T>& ws) {
  const int64_t target = k * B;
  std::vector<T> positive;
  positive.reserve(static_cast<size_t>(B * L / 2));
  for (int64_t j = 0; j < B * L; ++j) {
    if (z[j] > T(0)) positive.push_back(z[j]);
  }
  // tau = the target-th largest positive value; entries > tau are kept, entries == tau in flat-index order
  // until the target is reached (a unique answer, whatever the algorithm).
  T tau = T(0);
  int64_t ties_needed = 0;
  const bool all_positive = static_cast<int64_t>(positive.size()) <= target;
  if (!all_positive) {
    std::nth_element(positive.begin(), positive.begin() + (target - 1), positive.end(), std::greater<T>());
    tau = positive[static_cast<size_t>(target - 1)];
    int64_t n_greater = 0;
    for (const T v : positive) n_greater += v > tau ? 1 : 0;
    ties_needed = target - n_greater;
  }
  std::vector<int64_t> count(static_cast<size_t>(B));
  std::vector<int64_t> ties(static_cast<size_t>(B), 0);
  parallel_chunks(B, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t c = 0;
      int64_t t = 0;
      for (int64_t i = 0; i < L; ++i) {
        const T v = z[r * L + i];
        if (all_positive ? v > T(0) : v > tau) ++c;
        if (!all_positive && v == tau) ++t;
      }
      count[static_cast<size_t>(r)] = c;
      ties[static_cast<size_t>(r)] = t;
    }
  });
  std::vector<int64_t> tie_quota(static_cast<size_t>(B), 0);
  for (int64_t r = 0; r < B && ties_needed > 0; ++r) {
    tie_quota[static_cast<size_t>(r)] = std::min(ties[static_cast<size_t>(r)], ties_needed);
    ties_needed -= tie_quota[static_cast<size_t>(r)];
  }
  ws.row_ptr.assign(static_cast<size_t>(B + 1), 0);
  for (int64_t r = 0; r < B; ++r) {
    ws.row_ptr[static_cast<size_t>(r + 1)] = ws.row_ptr[static_cast<size_t>(r)] +
                                             count[static_cast<size_t>(r)] +
                                             tie_quota[static_cast<size_t>(r)];
  }
  const int64_t nnz = ws.row_ptr[static_cast<size_t>(B)];
  ws.idx.resize(static_cast<size_t>(nnz));
  ws.act.resize(static_cast<size_t>(nnz));
  parallel_chunks(B, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t e = ws.row_ptr[static_cast<size_t>(r)];
      int64_t quota = tie_quota[static_cast<size_t>(r)];
      for (int64_t i = 0; i < L; ++i) {
        const T v = z[r * L + i];
        bool keep = all_positive ? v > T(0) : v > tau;
        if (!keep && !all_positive && v == tau && quota > 0) {
          keep = true;
          --quota;
        }
        if (keep) {
          ws.idx[static_cast<size_t>(e)] = static_cast<int32_t>(i);
          ws.act[static_cast<size_t>(e)] = v;
          ++e;
        }
      }
    }
  });
}

}  // namespace sae_detail

template <typename T>
SaeLossParts batchtopk_loss_backward(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>* g,
                                     const SaeBatch<T>& batch, SaeWorkspace<T>& ws) {
  sae_detail::encoder_pre(cfg, p, batch.x, batch.n_rows, ws);
  sae_detail::select_topk_batch(ws.z.data(), batch.n_rows, cfg.d_sae, cfg.k, ws);
  sae_detail::select_auxk(cfg, batch, ws.z.data(), ws);
  return sae_detail::sparse_loss_backward(cfg, p, g, batch, ws, {cfg.d_sae}, {1.0});
}

#define HUSAI_INSTANTIATE(T) \
  template void sae_detail::select_topk_batch<T>(const T*, int64_t, int64_t, int64_t, SaeWorkspace<T>&);
HUSAI_INSTANTIATE(float)
HUSAI_INSTANTIATE(double)
#undef HUSAI_INSTANTIATE

namespace sae_detail {

SaeKey threshold_lr_key() {
  return {"sae.threshold_lr",
          [](ConfigSchema& s) -> FieldSpec& {
            return s.add_float("sae.threshold_lr", SaeConfig{}.threshold_lr, "running-threshold update rate")
                .greater_than(0.0)
                .max(1.0);
          },
          [](const Config& c, SaeConfig& m) { m.threshold_lr = c.get_double("sae.threshold_lr"); }};
}

void update_running_threshold(const SaeConfig& cfg, const SaeLossParts& parts, const SaeWorkspace<float>& ws,
                              SaeRunningState& state) {
  if (parts.l0 <= 0) return;  // nothing kept: no smallest kept activation to track
  if (!state.threshold_set) {
    state.threshold = ws.min_active;
    state.threshold_set = true;
  } else {
    state.threshold += cfg.threshold_lr * (ws.min_active - state.threshold);
  }
}

void export_running_threshold(const SaeConfig& cfg, const SaeLayout& /*layout*/, const float* /*params*/,
                              const SaeRunningState& state, SaeModel& sae) {
  sae.extra["threshold"].assign(static_cast<size_t>(cfg.d_sae), static_cast<float>(state.threshold));
}

void running_threshold_metadata(const SaeConfig& /*cfg*/, const SaeRunningState& state,
                                nlohmann::json& meta) {
  meta["running_threshold"] = state.threshold;
}

}  // namespace sae_detail

const SaeArchitecture& batchtopk_architecture() {
  static const SaeArchitecture arch = [] {
    SaeArchitecture a;
    a.name = "batchtopk";
    a.summary =
        "the k * B largest activations of the batch, running threshold at inference (Bussmann et al. 2024)";
    a.inference = &sae_detail::jumprelu_inference_kind();
    a.writes_all_grads = true;
    a.running_threshold = true;
    a.keys = sae_detail::topk_family_keys();
    a.keys.push_back(sae_detail::threshold_lr_key());

    a.loss_backward_f32 = batchtopk_loss_backward<float>;
    a.loss_backward_f64 = batchtopk_loss_backward<double>;
    a.validate = sae_detail::validate_topk_family;
    a.after_step = sae_detail::update_running_threshold;
    a.export_tensors = sae_detail::export_running_threshold;
    a.export_metadata = sae_detail::running_threshold_metadata;
    return a;
  }();
  return arch;
}

}  // namespace husai
