#pragma once

// Sparse autoencoders for training: the small interface every architecture implements, and the shared
// pieces (parameter layout, initialisation, the decoder-norm constraint, input-scaling fold).
//
// Shape letters: B = batch rows, D = d_in, L = d_sae (latents), K = k active latents per row.
// Weight layout as SAELens: W_enc [D,L], W_dec [L,D], b_enc [L], b_dec [D], then each architecture's own
// [L] tensors (JumpReLU trains log_threshold, saved as threshold = exp(log_threshold)).
//
// Losses are per batch, SAELens v6 conventions: mse = (1/B) sum_b ||x_hat_b - y_b||^2 (summed over D, mean
// over rows), y = x for an SAE and the target site's row for a transcoder (SaeBatch::target); the sparsity /
// auxiliary terms are listed in each architecture's file. What differs between architectures is only what its
// file says (its SaeArchitecture entry, architecture.hpp); the trainer calls sae_loss_backward() and the
// entry's after_step.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace husai {

struct SaeArchitecture;  // architecture.hpp: the table every architecture registers in
const SaeArchitecture& default_sae_architecture();  // topk

// The defaults here are the only ones: the train-sae config schema (train/sae_run.cpp) reads them.
struct SaeConfig {
  const SaeArchitecture* arch = &default_sae_architecture();
  int64_t d_in = 0;
  int64_t d_sae = 0;
  bool apply_b_dec_to_input = true;
  // TopK family.
  int64_t k = 32;                     // per row (topk) or mean per row (batchtopk: k * B over the batch)
  int64_t k_aux = 0;                  // AuxK latents per row; 0 = d_in / 2
  double aux_coefficient = 1.0 / 32;  // 0 disables AuxK
  int64_t dead_window = 100000;       // samples without firing after which a latent counts as dead
  double threshold_lr = 0.01;        // batchtopk running threshold: theta += lr (min kept activation - theta)
  std::vector<int64_t> group_sizes;  // matryoshka: sizes of the nested groups, summing to d_sae
  // L1 penalty (every architecture whose keys include sae_detail::l1_penalty_keys()).
  double l1_coefficient = 2.0;
  int64_t l1_warmup_steps = 200;  // coefficient ramps linearly from 0 over these steps
  // JumpReLU.
  double bandwidth = 0.05;       // epsilon of the rectangle kernel
  double init_threshold = 0.05;  // theta at init
  double l0_coefficient = 0.05;  // weight of the sparsity penalty
  bool tanh_penalty = false;     // false: L0 = sum H(z - theta); true: sum tanh(c |f| ||W_dec,i||)
  double tanh_scale = 4.0;       // c

  int64_t resolved_k_aux() const { return k_aux > 0 ? k_aux : d_in / 2; }
  // Throws husai::Error when settings contradict each other (k > d_sae, groups not summing to d_sae, ...):
  // the common checks, then the architecture's own.
  void validate() const;
};

// Offsets of each tensor in the flat parameter buffer (and in its gradient and Adam moments): the common
// four, then the architecture's own [d_sae] tensors (SaeArchitecture::extra_tensors) one after another.
struct SaeLayout {
  int64_t W_enc = 0, W_dec = 0, b_enc = 0, b_dec = 0, extra = 0;
  int64_t n_extra = 0;  // d_sae * the number of extra tensors
  int64_t total = 0;
};
SaeLayout make_sae_layout(const SaeConfig& cfg);

template <typename T>
struct SaeView {
  T* W_enc = nullptr;
  T* W_dec = nullptr;
  T* b_enc = nullptr;
  T* b_dec = nullptr;
  T* extra = nullptr;  // the architecture's own tensors (jumprelu: log_threshold); null when none
};
template <typename T>
SaeView<T> make_sae_view(const SaeLayout& layout, T* flat) {
  SaeView<T> v;
  v.W_enc = flat + layout.W_enc;
  v.W_dec = flat + layout.W_dec;
  v.b_enc = flat + layout.b_enc;
  v.b_dec = flat + layout.b_dec;
  v.extra = layout.n_extra > 0 ? flat + layout.extra : nullptr;
  return v;
}

// One step's inputs beyond the parameters.
template <typename T>
struct SaeBatch {
  const T* x = nullptr;           // [B, D]
  int64_t n_rows = 0;             // B
  int64_t step = 1;               // 1-based optimizer step (L1 warm-up)
  const uint8_t* dead = nullptr;  // [L] 1 = dead (AuxK); null = none dead
  // What the decoder is trained to produce [B, D]: null = x itself (an SAE); a transcoder's target site
  // (train-sae --target-activations), the same width as x.
  const T* target = nullptr;
  const T* y() const { return target != nullptr ? target : x; }
};

struct SaeLossParts {
  double loss = 0;                // what the gradient is of
  double mse = 0;                 // (1/B) sum ||x_hat - x||^2 of the full reconstruction
  double aux = 0;                 // AuxK term before its coefficient (TopK family)
  double sparsity = 0;            // penalty after its coefficient (ReLU, JumpReLU)
  double l0 = 0;                  // mean active latents per row
  double explained_variance = 0;  // centred, over this batch
};

// Scratch buffers reused across steps (sized on first use; no allocation afterwards at a fixed B).
template <typename T>
struct SaeWorkspace {
  std::vector<T> xc, z, f, x_hat, grad_out, dz, df, dwenc_t, up;
  // Sparse path (TopK family): per row, the active latents (CSR, ascending latent index) and the AuxK ones.
  std::vector<int64_t> row_ptr, aux_row_ptr;
  std::vector<int32_t> idx, aux_idx;
  std::vector<T> act, aux_act;
  // d loss / d z of each main and AuxK entry, and per row the offsets where its main entries enter each
  // latent range of the gradient pass.
  std::vector<T> dz_entry, aux_dz;
  std::vector<int32_t> range_ptr;
  // The encoder weights packed in latent panels (encoder_kernel.hpp).
  std::vector<T> enc_panel_w, enc_panel_b;
  std::vector<T> aux_residual, aux_grad;
  // Sparse-path scratch, sized on first use: per-row selections at a fixed stride before compaction,
  // per-chunk selection buffers, per-row error sums, the dead-latent list and latent groups.
  std::vector<int32_t> sel_idx, sel_pos, dead_list, group;
  std::vector<T> sel_act, sel_val;
  std::vector<int64_t> sel_count;
  // AuxK's selection before compaction (stride aux_k_eff = min(k_aux, number of dead latents)) and its
  // per-thread scratch.
  std::vector<int32_t> aux_sel_idx, aux_sel_pos;
  std::vector<T> aux_sel_act, aux_sel_val;
  std::vector<int64_t> aux_sel_count;
  int64_t aux_k_eff = 0;
  std::vector<double> row_err, aux_err;
  // Threshold selections (relu, jumprelu): each row block's selected entries before compaction; jumprelu's
  // band entries (z within a bandwidth of the threshold, or above it: CSR, ascending latent index), their
  // pre-activations and their threshold-gradient terms.
  std::vector<std::vector<int32_t>> chunk_idx;
  std::vector<std::vector<T>> chunk_act;
  std::vector<int64_t> band_row_ptr;
  std::vector<int32_t> band_idx;
  std::vector<T> band_z, band_term;
  // Data-parallel training (topk): this process encodes and selects only its share of the batch's 64-row
  // blocks (blocks [n * rank / ranks, n * (rank + 1) / ranks)) and gathers the other shares' selections from
  // the other MPI ranks (husai/core/cluster.hpp); everything else runs on every row, so the results are the
  // bytes of one process.
  int share_rank = 0;
  int share_ranks = 1;
  // Test hook: keep aux_residual from the previous call (the residual is a stop-gradient input).
  bool freeze_aux_residual = false;
  // Outputs besides the loss: latents that fired in this batch, and the smallest kept activation
  // (batchtopk's running-threshold update).
  std::vector<uint8_t> fired;
  double min_active = 0;
};

// Loss of one batch and, when `grads` is non-null, its gradient (written, not accumulated) into the flat
// buffer `grads` laid out as `layout`: the architecture's loss_backward. Deterministic and independent of
// the thread count.
template <typename T>
SaeLossParts sae_loss_backward(const SaeConfig& cfg, const SaeLayout& layout, const T* params, T* grads,
                               const SaeBatch<T>& batch, SaeWorkspace<T>& ws);

// Initialisation: W_dec rows random unit vectors (Philox(seed)), W_enc = W_dec^T, b_enc = 0, b_dec = `b_dec`
// (geometric median or mean of the data, computed once and shared by all seeds); then the architecture's
// init (jumprelu: log_threshold = log(init_threshold)).
void init_sae_params(const SaeConfig& cfg, const SaeLayout& layout, float* params, uint64_t seed,
                     const std::vector<float>& b_dec);

// Decoder-norm constraint (SAELens): before the optimizer step remove from each W_dec row's gradient its
// component along the row; after the step rescale each row to unit norm. The trainer runs both fused with
// Adam (train/sae_trainer.hpp, fused_sae_optimizer_step); these plain versions are the reference it is
// tested against (tests/unit/train/test_sae_optimizer.cpp).
void remove_parallel_decoder_grad(const SaeConfig& cfg, const SaeLayout& layout, const float* params,
                                  float* grads);
void normalize_decoder_rows(const SaeConfig& cfg, const SaeLayout& layout, float* params);

// Mean of the rows, and their geometric median by Weiszfeld's iteration (started at the mean), both in double
// with sums in row order.
std::vector<float> rows_mean(const float* x, int64_t n_rows, int64_t d);
std::vector<float> geometric_median(const float* x, int64_t n_rows, int64_t d, int max_iter = 100,
                                    double tol = 1e-7);

// Centred explained variance of a batch: 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2.
template <typename T>
double batch_explained_variance(const T* x, const T* x_hat, int64_t n_rows, int64_t d);

}  // namespace husai
