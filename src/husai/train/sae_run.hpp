#pragma once

// `husai train-sae`: SAE run folders from an activation file and a config (sections sae, data, training).
//
// DIR/manifest.json, DIR/split.safetensors (train_idx, eval_idx: rows of the activation file, ascending),
// DIR/trainer_state.safetensors (every seed's weights, Adam moments, dead counters, curve: resumable), and
// per seed DIR/seed<S>/{cfg.json, sae_weights.safetensors} (a SAELens v6 folder), metrics.json,
// metrics.jsonl.

#include <cstdint>
#include <string>
#include <vector>

#include "husai/io/config.hpp"
#include "husai/io/run_dir.hpp"

namespace husai {

// Keys, defaults and help of train-sae's config. Null values mean "the architecture's default", listed in
// the help text and in configs/sae/<arch>.yaml.
ConfigSchema sae_config_schema();

struct TrainSaeOptions {
  std::string activations_path;
  std::string out_dir;
  ExistingOutput existing = ExistingOutput::Refuse;
  bool quiet = false;
};

struct TrainSaeResult {
  bool completed = false;  // false: stopped by a signal after writing a checkpoint
  int64_t steps = 0;
  std::vector<uint64_t> seeds;
  double wall_time_s = 0;
  double samples_per_s = 0;                     // optimizer-step samples of all seeds per second of training
  std::vector<double> eval_explained_variance;  // per seed, held-out rows
  std::vector<double> eval_l0;
};

TrainSaeResult train_sae(const Config& config, const TrainSaeOptions& options);

}  // namespace husai
