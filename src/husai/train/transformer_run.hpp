#pragma once

// `husai train-transformer`: a run folder from a config, resumable, with every artifact of
// CONTRACTS.md ("Transformer run folder").

#include <string>

#include "husai/io/config.hpp"
#include "husai/io/run_dir.hpp"
#include "husai/train/transformer_trainer.hpp"

namespace husai {

struct TrainTransformerOptions {
  std::string out_dir;
  ExistingOutput existing = ExistingOutput::Refuse;
  bool quiet = false;
  bool figures = true;
};

struct TrainTransformerResult {
  bool completed = false;  // false: stopped by a signal after writing a checkpoint
  EvalResult train, val;
  std::optional<int64_t> grok_epoch;
  int64_t epochs = 0;
  double wall_time_s = 0;
};

TrainTransformerResult train_transformer(const Config& config, const TrainTransformerOptions& options);

// `husai eval-transformer`: loss and accuracy at the '=' position on the run's train and val rows.
struct TransformerEvaluation {
  EvalResult train, val, all;
};
TransformerEvaluation evaluate_transformer_dir(const std::string& dir);

}  // namespace husai
