// Matryoshka BatchTopK SAE (Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka SAEs"):
// the latents are split into nested groups of sizes g_1..g_m (summing to d_sae); the BatchTopK latents
// reconstruct x from every prefix [0, g_1 + .. + g_j) of the dictionary, and the loss is the mean of those
// reconstruction losses (uniform weights 1/m, as dictionary_learning's default), plus AuxK on the full one:
//   loss = (1/m) sum_j (1/B) sum_b ||b_dec + sum_{i < e_j} f_bi W_dec,i - x_b||^2 + aux_coefficient * AuxK
// Early latents must reconstruct on their own, so they learn general features. Saved like batchtopk, with the
// running threshold as a JumpReLU threshold.

#include "husai/sae/dense_path.hpp"
#include "husai/sae/sparse_path.hpp"

namespace husai {

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
  return sae_detail::sparse_loss_backward(cfg, p, g, batch, ws, ends, weights);
}

template SaeLossParts matryoshka_loss_backward<float>(const SaeConfig&, const SaeView<const float>&,
                                                      const SaeView<float>*, const SaeBatch<float>&,
                                                      SaeWorkspace<float>&);
template SaeLossParts matryoshka_loss_backward<double>(const SaeConfig&, const SaeView<const double>&,
                                                       const SaeView<double>*, const SaeBatch<double>&,
                                                       SaeWorkspace<double>&);

}  // namespace husai
