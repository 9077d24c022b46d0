// summarise_val_loss (train/transformer_trainer.hpp): final, best and late-window held-out loss of a run,
// checked against values worked out by hand.

#include <gtest/gtest.h>

#include <vector>

#include "husai/core/error.hpp"
#include "husai/train/transformer_trainer.hpp"

namespace husai {
namespace {

std::vector<EpochMetrics> history(const std::vector<double>& val_losses) {
  std::vector<EpochMetrics> h;
  for (size_t i = 0; i < val_losses.size(); ++i) {
    EpochMetrics m;
    m.epoch = static_cast<int64_t>(i) + 1;
    m.val_loss = val_losses[i];
    h.push_back(m);
  }
  return h;
}

TEST(TransformerValSummary, SpikeAtTheEnd) {
  // 20 epochs: the last tenth is epochs 19-20; the best is the first 0.1 (epoch 15, ties keep the first).
  std::vector<double> v = {5,   4,   3,   2,    1,   0.9, 0.8,  0.7,  0.6, 0.5,
                           0.4, 0.3, 0.2, 0.15, 0.1, 0.1, 0.12, 0.11, 0.3, 0.2};
  const ValLossSummary s = summarise_val_loss(history(v));
  EXPECT_DOUBLE_EQ(s.final_val_loss, 0.2);
  EXPECT_DOUBLE_EQ(s.best_val_loss, 0.1);
  EXPECT_EQ(s.best_epoch, 15);
  EXPECT_EQ(s.late_epochs, 2);
  EXPECT_DOUBLE_EQ(s.late_max_val_loss, 0.3);
}

TEST(TransformerValSummary, ShortRunsAndRounding) {
  const ValLossSummary one = summarise_val_loss(history({2.5}));
  EXPECT_EQ(one.best_epoch, 1);
  EXPECT_EQ(one.late_epochs, 1);
  EXPECT_DOUBLE_EQ(one.late_max_val_loss, 2.5);
  // 11 epochs: ceil(11 / 10) = 2 late epochs.
  const ValLossSummary eleven = summarise_val_loss(history({9, 8, 7, 6, 5, 4, 3, 2, 1, 0.5, 0.25}));
  EXPECT_EQ(eleven.late_epochs, 2);
  EXPECT_DOUBLE_EQ(eleven.late_max_val_loss, 0.5);
  EXPECT_EQ(eleven.best_epoch, 11);
  EXPECT_THROW(summarise_val_loss({}), Error);
}

}  // namespace
}  // namespace husai
