#pragma once

// The configuration of `husai train-transformer`: sections model, task, training. The built-in
// defaults equal configs/transformer/default.yaml.

#include "husai/data/modular_arithmetic.hpp"
#include "husai/io/config.hpp"
#include "husai/model/config.hpp"
#include "husai/train/transformer_trainer.hpp"

namespace husai {

ConfigSchema transformer_config_schema();

struct TransformerRunConfig {
  TransformerConfig model;
  ModularTask task;
  TransformerTrainConfig train;
};

// Reads a validated Config into typed settings (d_head derived as d_model / n_heads when null;
// d_vocab and n_ctx from the task's token format).
TransformerRunConfig transformer_run_config(const Config& config);

}  // namespace husai
