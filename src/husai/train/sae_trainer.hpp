#pragma once

// Architecture-agnostic SAE training: several seeds in one pass over the data, sharing each batch read.
//
// A seed sets the initialisation. The data order of a seed is a pure function of (order seed, epoch):
// with data_order_seed set every seed sees the same batches (gathered once per step and used by all), and a
// seed's weights are byte-identical to those of a run that trains that seed alone; with it unset each seed
// shuffles with its own seed. The order itself, and the window through which rows larger than memory are
// streamed, are train/row_stream.hpp's.
//
// One optimizer step of one seed: loss + gradient (sae_loss_backward), global-norm gradient clipping, the
// decoder constraint (gradient component along each W_dec row removed), Adam (no weight decay), decoder
// rows back to unit norm, then the dead-latent counters and, for batchtopk / matryoshka, the running
// threshold. Everything is deterministic and independent of the thread count.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "husai/sae/architecture.hpp"
#include "husai/sae/sae.hpp"
#include "husai/train/adamw.hpp"
#include "husai/train/consistency.hpp"
#include "husai/train/row_stream.hpp"

namespace husai {

struct SaeTrainSettings {
  SaeConfig sae;
  int64_t steps = 1000;
  int64_t batch_size = 1024;
  AdamWConfig adam;  // weight_decay is forced to 0
  int64_t lr_warmup_steps = 0;
  double lr_decay_fraction = 0.2;  // linear decay to lr * min_lr_ratio over the last fraction of the steps
  double min_lr_ratio = 0.0;
  double grad_clip_norm = 1.0;  // <= 0: no clipping
  bool normalize_decoder = true;
  std::vector<uint64_t> seeds = {42};
  std::optional<uint64_t> data_order_seed;  // set: one data order shared by all seeds; unset: each its own
  int64_t checkpoint_every = 500;           // steps (0: only when stopping / at the end)
  int64_t log_every = 50;                   // steps between metrics.jsonl rows (and the last step)
  // Optional alignment penalty to a reference decoder (train/consistency.hpp), added to every seed's loss
  // when consistency_lambda > 0; the reference's d_in must match.
  std::shared_ptr<const ConsistencyReference> consistency_reference;
  double consistency_lambda = 0.0;
  bool consistency_active() const { return consistency_reference != nullptr && consistency_lambda > 0.0; }
};

// One row of the training curve: the values of that step's batch before its update.
struct SaeLogRow {
  int64_t step = 0;
  int64_t samples = 0;
  double lr = 0, loss = 0, mse = 0, aux = 0, sparsity = 0, l0 = 0, explained_variance = 0, frac_dead = 0;
  double threshold = 0;  // running threshold (batchtopk / matryoshka), else 0
  double consistency_alignment =
      0;  // mean_i max_j |cos(D_i, R_j)| before the update (consistency on), else 0
};

struct SaeSeedState {
  uint64_t seed = 0;
  std::vector<float> params, adam_m, adam_v;
  std::vector<int64_t> since_fired;  // samples since each latent last fired
  SaeRunningState running;           // the architecture's state beyond its parameters (batchtopk's threshold)
  std::vector<SaeLogRow> history;
};

// The optimizer step after the gradient, fused into one pass over memory: the same arithmetic, element for
// element, as the plain sequence (kept in sae/sae.hpp as the reference this is tested against):
//   grads *= clip_scale (when clip); remove_parallel_decoder_grad; adamw_step; normalize_decoder_rows
// (the last two decoder steps only when renorm). P, G, M, V: parameters, gradients, Adam moments (layout).
void fused_sae_optimizer_step(const SaeConfig& cfg, const SaeLayout& layout, float* P, float* G, float* M,
                              float* V, const AdamWScalars<float>& sc, bool clip, float clip_scale,
                              bool renorm);

class SaeTrainer {
 public:
  // train_x [n_train, d_in] must outlive the trainer (already scaled, if scaling is on). train_y: a
  // transcoder's target rows [n_train, d_in], row r paired with row r of train_x (same lifetime and
  // scaling rule); null trains an SAE (the target is x).
  SaeTrainer(const SaeTrainSettings& settings, const float* train_x, int64_t n_train,
             std::vector<float> b_dec_init, const float* train_y = nullptr);
  // Rows from a stream (resident or read through a window); a paired stream trains a transcoder.
  SaeTrainer(SaeTrainSettings settings, SaeRowStream rows, std::vector<float> b_dec_init);

  const SaeTrainSettings& settings() const { return settings_; }
  const SaeLayout& layout() const { return layout_; }
  std::vector<SaeSeedState>& seeds() { return seeds_; }
  const std::vector<SaeSeedState>& seeds() const { return seeds_; }
  int64_t step() const { return step_; }
  void set_step(int64_t step) { step_ = step; }

  void init_fresh();
  // Trains until settings.steps or until should_stop() at a step boundary. on_log(step) after each logged
  // step; on_step(step) after every step, before that step's checkpoint (it may only read the state);
  // on_checkpoint() every checkpoint_every steps and when stopping. Returns true when all steps are done.
  // Throws husai::Error naming the step and seed when a loss is NaN or infinite.
  bool run(const std::function<bool()>& should_stop, const std::function<void(int64_t)>& on_log,
           const std::function<void()>& on_checkpoint, const std::function<void(int64_t)>& on_step = {});

  double lr_at(int64_t step) const;
  // Data-parallel training: this process encodes only its share of each batch (SaeWorkspace::share_rank).
  void set_row_share(int rank, int ranks) {
    ws_.share_rank = rank;
    ws_.share_ranks = ranks;
  }
  SaeRowStream& rows() { return rows_; }

 private:
  SaeLogRow train_step(SaeSeedState& s, const float* x, const float* y);
  // Gradient clip (scale), decoder projection, Adam and decoder renormalisation in one pass.
  void optimizer_step(SaeSeedState& s, int64_t step, bool clip, float clip_scale);

  SaeTrainSettings settings_;
  SaeRowStream rows_;
  std::vector<float> b_dec_init_;
  SaeLayout layout_;
  std::vector<SaeSeedState> seeds_;
  int64_t step_ = 0;  // completed steps
  SaeWorkspace<float> ws_;
  ConsistencyWorkspace<float> consistency_ws_;
  std::vector<float> grads_, batch_, target_batch_;
  std::vector<uint8_t> dead_;
  std::vector<double> norm_parts_;
};

}  // namespace husai
