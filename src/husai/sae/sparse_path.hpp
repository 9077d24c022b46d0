#pragma once

// The fused sparse path of the TopK family (topk, batchtopk, matryoshka) and of relu. Internal to
// src/husai/sae.
//
// The encoder is one dense product (every pre-activation is needed to choose the active latents; topk runs it
// with its own kernel, encoder_kernel.hpp, fused with the selection); everything after it touches only the
// active latents: decoding, AuxK, and every gradient. Determinism: rows are processed in parallel chunks
// (each row by one thread), which also compute each entry's d loss / d z; the weight gradients are then
// accumulated row-major by tasks that each own a fixed range of latents and stream the rows in order, so
// every latent sums its entries in row order. No result depends on the thread count.

#include <vector>

#include <nlohmann/json.hpp>

#include "husai/sae/sae.hpp"
#include "husai/sae/saelens_io.hpp"

namespace husai {
struct SaeKey;
struct SaeInferenceKind;
struct SaeRunningState;
}  // namespace husai

namespace husai::sae_detail {

// What the TopK family (topk, batchtopk, matryoshka) shares besides the sparse path: the keys sae.k,
// sae.k_aux, sae.aux_coefficient, sae.dead_window (topk.cpp), the check 1 <= k <= d_sae (topk.cpp), and for
// the batch-level selections the running threshold: its key sae.threshold_lr, update, export as a JumpReLU
// threshold and cfg.json entry (batchtopk.cpp).
std::vector<SaeKey> topk_family_keys();
void validate_topk_family(const SaeConfig& cfg);
SaeKey threshold_lr_key();
void update_running_threshold(const SaeConfig& cfg, const SaeLossParts& parts, const SaeWorkspace<float>& ws,
                              SaeRunningState& state);
void export_running_threshold(const SaeConfig& cfg, const SaeLayout& layout, const float* params,
                              const SaeRunningState& state, SaeModel& sae);
void running_threshold_metadata(const SaeConfig& cfg, const SaeRunningState& state, nlohmann::json& meta);
// The inference kind batch-level selections export to (jumprelu.cpp).
const SaeInferenceKind& jumprelu_inference_kind();

// Given the active latents of each row in ws.row_ptr / ws.idx (ascending within a row) / ws.act (> 0), AuxK's
// selection in ws.aux_sel_* (select_auxk) and ws.xc, computes the reconstruction of every nested prefix [0,
// prefix_ends[j]) of the dictionary with weight prefix_weights[j] (one prefix = the whole dictionary for topk
// and batchtopk), AuxK, the loss and, when g != null, all gradients. Fills ws.x_hat with the full
// reconstruction, ws.fired and ws.min_active.
template <typename T>
SaeLossParts sparse_loss_backward(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>* g,
                                  const SaeBatch<T>& batch, SaeWorkspace<T>& ws,
                                  const std::vector<int64_t>& prefix_ends,
                                  const std::vector<double>& prefix_weights);

// The same path for a threshold-selected activation (relu, jumprelu): one prefix, no AuxK. Forward: the
// reconstruction, its loss terms and ws.fired; with_grads also fills ws.dz_entry (d loss / d z of each active
// entry through the decoder), which the caller may add its penalty's gradient to before the backward pass
// writes every weight gradient (W_dec, W_enc, b_enc, b_dec; not an architecture's extra tensors).
template <typename T>
SaeLossParts sparse_forward_no_aux(const SaeConfig& cfg, const SaeView<const T>& p, bool with_grads,
                                   const SaeBatch<T>& batch, SaeWorkspace<T>& ws);
template <typename T>
void sparse_backward_no_aux(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>& g, int64_t B,
                            SaeWorkspace<T>& ws);

// ws.xc, and z = xc W_enc + b_enc by the encoder kernel (encoder_kernel.hpp) in blocks of rows, each block in
// a per-thread scratch (ws.z holds num_threads() blocks, never [B, d_sae]); the entries with z_i > floor[i]
// (floor null: z_i > 0), ascending within a row, into ws.row_ptr/idx/act.
template <typename T>
void encode_select_above(const SaeConfig& cfg, const SaeView<const T>& p, const T* x, int64_t B,
                         SaeWorkspace<T>& ws, const T* floor);

// Per-row top-k of z (ties to the lower latent index), ReLU after selection: fills ws.row_ptr/idx/act.
template <typename T>
void select_topk_per_row(const T* z, int64_t B, int64_t L, int64_t k, SaeWorkspace<T>& ws);

// AuxK's selection from a [B, d_sae] z (the batch-level selections, which keep z whole): per row, the top
// min(k_aux, n_dead) pre-activations among the dead latents (batch.dead; none when aux_coefficient is 0).
// topk fuses the same selection into its encoder blocks.
template <typename T>
void select_auxk(const SaeConfig& cfg, const SaeBatch<T>& batch, const T* z, SaeWorkspace<T>& ws);

// Top k*B of ReLU(z) over the flattened batch (ties to the lower flat index): fills ws.row_ptr/idx/act.
template <typename T>
void select_topk_batch(const T* z, int64_t B, int64_t L, int64_t k, SaeWorkspace<T>& ws);

}  // namespace husai::sae_detail
