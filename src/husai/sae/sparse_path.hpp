#pragma once

// The fused sparse path of the TopK family (topk, batchtopk, matryoshka). Internal to src/husai/sae.
//
// The encoder is one dense product (every pre-activation is needed to choose the active latents; topk runs it
// with its own kernel, encoder_kernel.hpp, fused with the selection); everything after it touches only the
// active latents: decoding, AuxK, and every gradient. Determinism: rows are processed in parallel chunks
// (each row by one thread), which also compute each entry's d loss / d z; the weight gradients are then
// accumulated row-major by tasks that each own a fixed range of latents and stream the rows in order, so
// every latent sums its entries in row order. No result depends on the thread count.

#include <vector>

#include "husai/sae/sae.hpp"

namespace husai::sae_detail {

// Given the active latents of each row in ws.row_ptr / ws.idx (ascending within a row) / ws.act (> 0) and
// ws.xc, computes the reconstruction of every nested prefix [0, prefix_ends[j]) of the dictionary with weight
// prefix_weights[j] (one prefix = the whole dictionary for topk and batchtopk), AuxK, the loss and, when
// g != null, all gradients. Fills ws.x_hat with the full reconstruction, ws.fired and ws.min_active.
template <typename T>
SaeLossParts sparse_loss_backward(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>* g,
                                  const SaeBatch<T>& batch, SaeWorkspace<T>& ws,
                                  const std::vector<int64_t>& prefix_ends,
                                  const std::vector<double>& prefix_weights);

// Per-row top-k of z (ties to the lower latent index), ReLU after selection: fills ws.row_ptr/idx/act.
template <typename T>
void select_topk_per_row(const T* z, int64_t B, int64_t L, int64_t k, SaeWorkspace<T>& ws);

// Top k*B of ReLU(z) over the flattened batch (ties to the lower flat index): fills ws.row_ptr/idx/act.
template <typename T>
void select_topk_batch(const T* z, int64_t B, int64_t L, int64_t k, SaeWorkspace<T>& ws);

}  // namespace husai::sae_detail
