#pragma once

// Training loop for the modular-arithmetic transformer: minibatch or full-batch AdamW on the
// cross-entropy at the '=' position, validation every epoch, resumable state.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "husai/data/modular_arithmetic.hpp"
#include "husai/model/config.hpp"
#include "husai/model/params.hpp"
#include "husai/model/transformer.hpp"
#include "husai/train/adamw.hpp"

namespace husai {

struct TransformerTrainConfig {
  int64_t epochs = 1000;
  int64_t batch_size = 0;  // 0 = full batch
  double train_fraction = 0.5;
  AdamWConfig adamw;
  int64_t warmup_steps = 0;
  LrSchedule lr_schedule = LrSchedule::Constant;
  double min_lr_ratio = 0.1;
  uint64_t seed = 0;
  double init_range = 0.0;        // <= 0: TransformerLens' 0.8 / sqrt(d_model)
  int64_t checkpoint_every = 50;  // epochs
  int64_t eval_batch_size = 4096;
};

struct EpochMetrics {
  int64_t epoch = 0;  // 1-based
  int64_t step = 0;   // optimizer steps so far
  double lr = 0;
  double train_loss = 0;  // mean over the epoch's minibatches, before each update
  double train_acc = 0;
  double val_loss = 0;
  double val_acc = 0;
};

struct EvalResult {
  double loss = 0;
  double acc = 0;
  int64_t n = 0;
};

// The held-out (validation) loss over a run, from its per-epoch history: whether training ended on a plateau
// or on a spike. `late` is the last tenth of the epochs (at least one): late_max_val_loss well above
// best_val_loss means the loss rose again at the end.
struct ValLossSummary {
  double final_val_loss = 0;  // the last epoch's
  double best_val_loss = 0;   // the lowest of any epoch
  int64_t best_epoch = 0;     // 1-based, the first epoch with the lowest loss
  int64_t late_epochs = 0;
  double late_max_val_loss = 0;  // the highest over the last late_epochs epochs
};
// Throws husai::Error on an empty history.
ValLossSummary summarise_val_loss(const std::vector<EpochMetrics>& history);

// Everything needed to continue training exactly where it stopped.
struct TrainState {
  std::vector<float> params, adam_m, adam_v;
  int64_t epochs_done = 0;     // completed epochs
  int64_t batch_in_epoch = 0;  // minibatches of the current epoch already applied
  int64_t step = 0;
  double epoch_loss_sum = 0;  // running sums of the current epoch
  int64_t epoch_correct = 0;
  int64_t epoch_count = 0;
  std::vector<EpochMetrics> history;
  std::optional<int64_t> grok_epoch;
};

class TransformerTrainer {
 public:
  TransformerTrainer(TransformerConfig model, ModularTask task, TransformerTrainConfig train, Split split);

  const TransformerConfig& model_config() const { return model_; }
  const ParamLayout& layout() const { return layout_; }
  TrainState& state() { return state_; }
  const TrainState& state() const { return state_; }
  int64_t batch_size() const;  // resolved (full batch = number of training rows)
  int64_t steps_per_epoch() const;

  void init_fresh();
  // Trains until `train.epochs` epochs are complete or `should_stop()` is true at a step boundary.
  // on_epoch runs after each epoch's validation; on_checkpoint whenever a checkpoint is due (every
  // checkpoint_every epochs and when stopping early). Returns true when all epochs are done.
  bool run(const std::function<bool()>& should_stop, const std::function<void(const EpochMetrics&)>& on_epoch,
           const std::function<void()>& on_checkpoint);

  EvalResult evaluate(const std::vector<int64_t>& rows);

 private:
  double train_step(const int64_t* batch_rows, int64_t n_rows);

  TransformerConfig model_;
  ModularTask task_;
  TransformerTrainConfig train_;
  Split split_;
  ParamLayout layout_;
  std::vector<int64_t> tokens_, labels_;
  TrainState state_;
  std::vector<float> grads_;
  double lr_at(int64_t step) const;

  TransformerWorkspace<float> ws_;       // training batches
  TransformerWorkspace<float> eval_ws_;  // evaluation batches (another size: kept apart to avoid re-sizing)
  std::vector<int64_t> batch_tokens_, batch_labels_;
  std::vector<float> losses_, dlogits_;
  std::vector<uint8_t> correct_;
};

}  // namespace husai
