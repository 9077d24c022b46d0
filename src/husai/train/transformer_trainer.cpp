#include "husai/train/transformer_trainer.hpp"

#include <algorithm>
#include <cmath>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"
#include "husai/model/cross_entropy.hpp"

namespace husai {
namespace {

constexpr double kGrokAccuracy = 0.99;

}  // namespace

TransformerTrainer::TransformerTrainer(TransformerConfig model, ModularTask task,
                                       TransformerTrainConfig train, Split split)
    : model_(model), task_(task), train_(train), split_(std::move(split)), layout_(make_param_layout(model)) {
  tokens_ = task_.tokens();
  labels_ = task_.labels();
  if (train_.init_range <= 0.0) train_.init_range = 0.8 / std::sqrt(static_cast<double>(model_.d_model));
}

int64_t TransformerTrainer::batch_size() const {
  const auto n_train = static_cast<int64_t>(split_.train_idx.size());
  return train_.batch_size <= 0 ? n_train : std::min(train_.batch_size, n_train);
}

int64_t TransformerTrainer::steps_per_epoch() const {
  const auto n_train = static_cast<int64_t>(split_.train_idx.size());
  return (n_train + batch_size() - 1) / batch_size();
}

double TransformerTrainer::lr_at(int64_t step) const {
  return scheduled_lr(train_.adamw.lr, step, train_.warmup_steps, train_.lr_schedule,
                      train_.epochs * steps_per_epoch(), train_.min_lr_ratio);
}

void TransformerTrainer::init_fresh() {
  state_ = TrainState{};
  const auto n = static_cast<size_t>(layout_.total);
  state_.params.assign(n, 0.0f);
  state_.adam_m.assign(n, 0.0f);
  state_.adam_v.assign(n, 0.0f);
  init_params(layout_, state_.params.data(), train_.seed, train_.init_range);
}

double TransformerTrainer::train_step(const int64_t* batch_rows, int64_t n_rows) {
  const int64_t ctx = model_.n_ctx;
  const int64_t V = model_.d_vocab;
  batch_tokens_.resize(static_cast<size_t>(n_rows * ctx));
  batch_labels_.resize(static_cast<size_t>(n_rows));
  for (int64_t i = 0; i < n_rows; ++i) {
    std::copy_n(tokens_.begin() + batch_rows[i] * ctx, ctx, batch_tokens_.begin() + i * ctx);
    batch_labels_[static_cast<size_t>(i)] = labels_[static_cast<size_t>(batch_rows[i])];
  }
  const int64_t n_pos = task_.answer_position() + 1;
  const ParamViews<float> pv = make_views(model_, layout_, state_.params.data());
  transformer_forward(model_, pv, ws_, batch_tokens_.data(), n_rows, n_pos, 1);
  losses_.resize(static_cast<size_t>(n_rows));
  correct_.resize(static_cast<size_t>(n_rows));
  dlogits_.resize(static_cast<size_t>(n_rows * V));
  cross_entropy_forward_backward(losses_.data(), correct_.data(), dlogits_.data(), ws_.logits.data(),
                                 batch_labels_.data(), n_rows, V, 1.0f / static_cast<float>(n_rows));
  grads_.assign(static_cast<size_t>(layout_.total), 0.0f);
  transformer_backward(model_, pv, make_views(model_, layout_, grads_.data()), ws_, batch_tokens_.data(),
                       dlogits_.data());
  ++state_.step;
  const double lr = lr_at(state_.step);
  adamw_step(state_.params.data(), grads_.data(), state_.adam_m.data(), state_.adam_v.data(), layout_.total,
             state_.step, lr, train_.adamw);
  double loss_sum = 0;
  for (int64_t i = 0; i < n_rows; ++i) {
    loss_sum += static_cast<double>(losses_[static_cast<size_t>(i)]);
    state_.epoch_correct += correct_[static_cast<size_t>(i)];
  }
  state_.epoch_count += n_rows;
  state_.epoch_loss_sum += loss_sum;
  return lr;
}

EvalResult TransformerTrainer::evaluate(const std::vector<int64_t>& rows) {
  EvalResult result;
  const int64_t ctx = model_.n_ctx;
  const int64_t V = model_.d_vocab;
  const int64_t n_pos = task_.answer_position() + 1;
  const ParamViews<float> pv = make_views(model_, layout_, state_.params.data());
  double loss_sum = 0;
  int64_t correct = 0;
  const auto n = static_cast<int64_t>(rows.size());
  for (int64_t start = 0; start < n; start += train_.eval_batch_size) {
    const int64_t count = std::min(train_.eval_batch_size, n - start);
    batch_tokens_.resize(static_cast<size_t>(count * ctx));
    batch_labels_.resize(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      const int64_t row = rows[static_cast<size_t>(start + i)];
      std::copy_n(tokens_.begin() + row * ctx, ctx, batch_tokens_.begin() + i * ctx);
      batch_labels_[static_cast<size_t>(i)] = labels_[static_cast<size_t>(row)];
    }
    transformer_forward(model_, pv, eval_ws_, batch_tokens_.data(), count, n_pos, 1);
    losses_.resize(static_cast<size_t>(count));
    correct_.resize(static_cast<size_t>(count));
    cross_entropy_forward_backward<float>(losses_.data(), correct_.data(), nullptr, eval_ws_.logits.data(),
                                          batch_labels_.data(), count, V, 0.0f);
    for (int64_t i = 0; i < count; ++i) {
      loss_sum += static_cast<double>(losses_[static_cast<size_t>(i)]);
      correct += correct_[static_cast<size_t>(i)];
    }
  }
  result.n = n;
  result.loss = n > 0 ? loss_sum / static_cast<double>(n) : 0.0;
  result.acc = n > 0 ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
  return result;
}

bool TransformerTrainer::run(const std::function<bool()>& should_stop,
                             const std::function<void(const EpochMetrics&)>& on_epoch,
                             const std::function<void()>& on_checkpoint) {
  const auto n_train = static_cast<int64_t>(split_.train_idx.size());
  const int64_t bs = batch_size();
  const int64_t n_batches = steps_per_epoch();
  double lr = lr_at(state_.step);
  while (state_.epochs_done < train_.epochs) {
    const int64_t epoch = state_.epochs_done + 1;
    // The epoch's data order is a pure function of (seed, epoch): a resumed run replays it exactly.
    std::vector<int64_t> order = split_.train_idx;
    if (n_batches > 1) {
      const std::vector<int64_t> perm =
          permutation(n_train, train_.seed, stream_id("shuffle") + static_cast<uint64_t>(epoch));
      for (int64_t i = 0; i < n_train; ++i)
        order[static_cast<size_t>(i)] = split_.train_idx[static_cast<size_t>(perm[static_cast<size_t>(i)])];
    }
    while (state_.batch_in_epoch < n_batches) {
      if (should_stop()) {
        on_checkpoint();
        return false;
      }
      const int64_t begin = state_.batch_in_epoch * bs;
      const int64_t count = std::min(bs, n_train - begin);
      lr = train_step(order.data() + begin, count);
      ++state_.batch_in_epoch;
      const double loss = state_.epoch_loss_sum;
      if (!std::isfinite(loss)) {
        // The run layer (train_transformer) adds where the last good checkpoint is.
        throw Error("training diverged: the loss is " + std::to_string(loss) + " at step " +
                    std::to_string(state_.step) + " (epoch " + std::to_string(epoch) +
                    "). Lower the learning rate, or check the config");
      }
    }
    EpochMetrics m;
    m.epoch = epoch;
    m.step = state_.step;
    m.lr = lr;
    m.train_loss = state_.epoch_loss_sum / static_cast<double>(state_.epoch_count);
    m.train_acc = static_cast<double>(state_.epoch_correct) / static_cast<double>(state_.epoch_count);
    const EvalResult val = evaluate(split_.val_idx);
    m.val_loss = val.loss;
    m.val_acc = val.acc;
    if (!state_.grok_epoch && m.val_acc >= kGrokAccuracy) state_.grok_epoch = epoch;
    state_.history.push_back(m);
    state_.epochs_done = epoch;
    state_.batch_in_epoch = 0;
    state_.epoch_loss_sum = 0;
    state_.epoch_correct = 0;
    state_.epoch_count = 0;
    on_epoch(m);
    if (train_.checkpoint_every > 0 && epoch % train_.checkpoint_every == 0 && epoch < train_.epochs)
      on_checkpoint();
  }
  return true;
}

ValLossSummary summarise_val_loss(const std::vector<EpochMetrics>& history) {
  if (history.empty()) throw Error("summarise_val_loss: no epoch in the training history");
  ValLossSummary s;
  const auto n = static_cast<int64_t>(history.size());
  s.final_val_loss = history.back().val_loss;
  s.best_val_loss = history.front().val_loss;
  s.best_epoch = history.front().epoch;
  for (const EpochMetrics& m : history) {
    if (m.val_loss < s.best_val_loss) {
      s.best_val_loss = m.val_loss;
      s.best_epoch = m.epoch;
    }
  }
  s.late_epochs = std::max<int64_t>(1, (n + 9) / 10);
  s.late_max_val_loss = history[static_cast<size_t>(n - s.late_epochs)].val_loss;
  for (int64_t i = n - s.late_epochs; i < n; ++i)
    s.late_max_val_loss = std::max(s.late_max_val_loss, history[static_cast<size_t>(i)].val_loss);
  return s;
}

}  // namespace husai
