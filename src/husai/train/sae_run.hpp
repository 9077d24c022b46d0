#pragma once

// `husai train-sae`: SAE run folders from an activation file and a config (sections sae, data, training).
//
// DIR/manifest.json, DIR/split.safetensors (train_idx, eval_idx: rows of the activation file, ascending),
// DIR/trainer_state.safetensors (every seed's weights, Adam moments, dead counters, curve: resumable), and
// per seed DIR/seed<S>/{cfg.json, sae_weights.safetensors} (a SAELens v6 folder), metrics.json,
// metrics.jsonl, and the stability snapshots DIR/seed<S>/checkpoints/step_<N>/{cfg.json,
// sae_weights.safetensors}: the same SAELens folder after N of the run's steps
// (training.stability_checkpoints), with metadata.steps = N and metadata.checkpoint_fraction, so `husai
// compare` takes them as they are.

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
  // A transcoder: rows of another site to predict (row r pairs with row r of activations_path, same width);
  // empty trains SAEs.
  std::string target_activations_path;
  std::string target_key = "activations";
  std::string out_dir;
  ExistingOutput existing = ExistingOutput::Refuse;
  bool quiet = false;
  // Under mpirun: every rank trains every seed on its share of each batch's rows (topk only), and rank 0
  // writes every file; without it the ranks split the seeds. Not part of the config: the SAE bytes are the
  // same either way.
  bool data_parallel = false;
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

// Under mpirun every rank takes part (husai/core/cluster.hpp, docs/cluster.md): rank r trains the seeds at
// positions r, r + N, ... of training.seeds, and the files are the bytes one process writes. In `husai
// train-sae` every rank calls it; in an experiment or the demo rank 0 calls it and the other ranks, waiting
// in serve_train_sae_calls, join in.
TrainSaeResult train_sae(const Config& config, const TrainSaeOptions& options);

// Every rank but 0, under an experiment or the demo: joins each train_sae call rank 0 makes (receiving its
// config and options) until rank 0's TrainSaeService ends. A failed call is reported by rank 0; the rank then
// waits for the next one.
void serve_train_sae_calls();

// Rank 0, under an experiment or the demo: while it lives, train_sae calls are announced to the ranks waiting
// in serve_train_sae_calls; its end tells them to return. A no-op as one process.
class TrainSaeService {
 public:
  TrainSaeService();
  ~TrainSaeService();
  TrainSaeService(const TrainSaeService&) = delete;
  TrainSaeService& operator=(const TrainSaeService&) = delete;
};

// The folder layout of a train-sae run, in one place (every experiment and compare go through it):
//   DIR/manifest.json, DIR/split.safetensors, DIR/trainer_state.safetensors
//   DIR/seed<S>/            one SAELens folder per seed: cfg.json, sae_weights.safetensors, metrics.json(l)
//   DIR/seed<S>/checkpoints/step_<N>/   stability snapshots (SAELens folders)
struct SaeRunLayout {
  std::string dir;

  explicit SaeRunLayout(std::string run_dir) : dir(std::move(run_dir)) {}
  static std::string seed_name(int64_t seed) { return "seed" + std::to_string(seed); }
  std::string seed_dir(int64_t seed) const;
  std::vector<std::string> seed_dirs(const std::vector<int64_t>& seeds) const;
  std::string seed_metrics(int64_t seed) const;  // seed<S>/metrics.json
  std::string snapshot_dir(int64_t seed, int64_t step) const;
  std::string split_file() const;
  std::string trainer_state_file() const;
  std::string manifest_file() const;
};
// Shorthands of SaeRunLayout(run_dir).seed_dir(seed) / .snapshot_dir(seed, step).
std::string sae_seed_dir(const std::string& run_dir, int64_t seed);
std::string sae_snapshot_dir(const std::string& run_dir, int64_t seed, int64_t step);

// One stability snapshot of a run: `fraction` of training.stability_checkpoints, taken after `step` steps.
struct SaeSnapshotPoint {
  double fraction = 0;
  int64_t step = 0;
};

// The snapshots of a run of `steps` steps, by step: N = round(fraction * steps); a fraction whose N is below
// 1 or reaches `steps` (the final SAE is the 1.0 point) is skipped, and so is one repeating an earlier N.
std::vector<SaeSnapshotPoint> sae_snapshot_points(const std::vector<double>& fractions, int64_t steps);

// The SAEs of every seed at one point of training.
struct SaeCheckpointSet {
  double fraction = 0;                // of the run's steps; 1.0 = the final SAEs
  int64_t step = 0;                   // metadata.steps of these SAEs
  std::vector<std::string> sae_dirs;  // one SAELens folder per seed, in the order the seeds were given
};

// The stability snapshots a finished train-sae run folder holds for `seeds`, by step, then the final SAEs
// (fraction 1.0) when include_final. Throws husai::Error naming the folder when a seed lacks a snapshot the
// first seed has, or a cfg.json is not a husai one. A run without snapshots gives only the final set.
std::vector<SaeCheckpointSet> list_sae_checkpoints(const std::string& run_dir,
                                                   const std::vector<int64_t>& seeds,
                                                   bool include_final = true);
// The same for SAE folders given directly (each with its own checkpoints/step_<N>/), e.g. compare's inputs.
std::vector<SaeCheckpointSet> list_sae_checkpoints(const std::vector<std::string>& sae_dirs,
                                                   bool include_final = true);

}  // namespace husai
