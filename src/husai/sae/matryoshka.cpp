// Matryoshka BatchTopK SAE (Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka SAEs"):
// the latents are split into nested groups of sizes g_1..g_m (summing to d_sae); the BatchTopK latents
// reconstruct x from every prefix [0, g_1 + .. + g_j) of the dictionary, and the loss is the mean of those
// reconstruction losses (uniform weights 1/m, as dictionary_learning's default), plus AuxK on the full one:
//   loss = (1/m) sum_j (1/B) sum_b ||b_dec + sum_{i < e_j} f_bi W_dec,i - x_b||^2 + aux_coefficient * AuxK
// Early latents must reconstruct on their own, so they learn general features. Saved like batchtopk, with the
// running threshold as a JumpReLU threshold.

#include <algorithm>

#include "husai/core/error.hpp"
#include "husai/io/config.hpp"
#include "husai/sae/architecture.hpp"
#include "husai/sae/dense_path.hpp"
#include "husai/sae/sparse_path.hpp"

namespace husai {
namespace {

template <typename T>
SaeLossParts matryoshka_loss_backward(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>* g,
                                      const SaeBatch<T>& batch, SaeWorkspace<T>& ws) {
  std::vector<int64_t> ends;
  int64_t end = 0;
  for (int64_t size : cfg.group_sizes) {
    end += size;
    ends.push_back(end);
  }
  const std::vector<double> weights(ends.size(), 1.0 / static_cast<double>(ends.size()));
  sae_detail::encoder_pre(cfg, p, batch.x, batch.n_rows, ws);
  sae_detail::select_topk_batch(ws.z.data(), batch.n_rows, cfg.d_sae, cfg.k, ws);
  sae_detail::select_auxk(cfg, batch, ws.z.data(), ws);
  return sae_detail::sparse_loss_backward(cfg, p, g, batch, ws, ends, weights);
}

SaeKey groups_key() {
  return {"sae.matryoshka_groups",
          [](ConfigSchema& s) -> FieldSpec& {
            return s
                .add_int_list("sae.matryoshka_groups", nullptr,
                              "nested group sizes summing to d_sae; null = d_sae/16, /16, /8, /4, rest")
                .nullable()
                .min(1);
          },
          [](const Config& c, SaeConfig& m) {
            if (m.arch->name != "matryoshka") return;
            if (!c.is_null("sae.matryoshka_groups")) {
              m.group_sizes = c.get_int_list("sae.matryoshka_groups");
              return;
            }
            // Default: doubling groups d_sae/16, /16, /8, /4, /2 (the rest), as in Bussmann et al.
            int64_t left = m.d_sae;
            std::vector<int64_t> g;
            for (int64_t part : {16, 16, 8, 4}) {
              const int64_t size = std::max<int64_t>(1, m.d_sae / part);
              if (size < left) {
                g.push_back(size);
                left -= size;
              }
            }
            g.push_back(left);
            m.group_sizes = g;
          }};
}

void validate_matryoshka(const SaeConfig& cfg) {
  sae_detail::validate_topk_family(cfg);
  if (cfg.group_sizes.empty())
    throw Error("matryoshka needs at least one group size").key("sae.matryoshka_groups");
  int64_t sum = 0;
  for (int64_t g : cfg.group_sizes) {
    if (g < 1) throw Error("matryoshka group sizes must be >= 1").key("sae.matryoshka_groups");
    sum += g;
  }
  if (sum != cfg.d_sae) {
    throw Error("matryoshka group sizes sum to " + std::to_string(sum) + ", but d_sae is " +
                std::to_string(cfg.d_sae))
        .key("sae.matryoshka_groups");
  }
}

void matryoshka_metadata(const SaeConfig& cfg, const SaeRunningState& state, nlohmann::json& meta) {
  sae_detail::running_threshold_metadata(cfg, state, meta);
  meta["matryoshka_groups"] = cfg.group_sizes;
}

}  // namespace

const SaeArchitecture& matryoshka_architecture() {
  static const SaeArchitecture arch = [] {
    SaeArchitecture a;
    a.name = "matryoshka";
    a.summary = "BatchTopK whose nested prefixes of the dictionary each reconstruct (Bussmann et al. 2025)";
    a.inference = &sae_detail::jumprelu_inference_kind();
    a.writes_all_grads = true;
    a.running_threshold = true;
    a.keys = sae_detail::topk_family_keys();
    a.keys.push_back(sae_detail::threshold_lr_key());
    a.keys.push_back(groups_key());

    a.loss_backward_f32 = matryoshka_loss_backward<float>;
    a.loss_backward_f64 = matryoshka_loss_backward<double>;
    a.validate = validate_matryoshka;
    a.after_step = sae_detail::update_running_threshold;
    a.export_tensors = sae_detail::export_running_threshold;
    a.export_metadata = matryoshka_metadata;
    return a;
  }();
  return arch;
}

}  // namespace husai
