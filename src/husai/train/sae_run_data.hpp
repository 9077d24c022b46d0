#pragma once

// The rows a train-sae run learns from and is evaluated on: the activation file and, for a transcoder, the
// target file (row r of one paired with row r of the other).
//
// Two modes, chosen by size and recorded in split.safetensors and every metrics.json:
//   * resident (the file has at most buffer_rows rows): every row in memory. The held-out rows are a seeded
//     random subset of row indices (data.split_seed); the input scale factor is computed on every training
//     row; training reads rows in place.
//   * streamed (more rows than buffer_rows): rows are read on demand and memory holds the SAE, its optimizer
//     state and one window of buffer_rows rows per data order (train/row_stream.hpp). The file is split in
//     blocks of kSplitBlockRows consecutive rows and a seeded random subset of blocks is held out (so the
//     split is O(rows / 1024) integers and neighbouring tokens of a held-out block are held out together).
//     Every file is read once first, to hash it and to check every value is finite. The scale factor is
//     computed on up to buffer_rows training rows from evenly spaced blocks, and the training-row metrics on
//     the first buffer_rows training rows (metrics.json says how many).
// Training rows are scaled (sae.normalize_activations) so that E||x|| = sqrt(d_in), the target by its own
// factor; both factors are folded back into the saved weights.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "husai/io/activations.hpp"
#include "husai/io/config.hpp"
#include "husai/metrics/reconstruction.hpp"
#include "husai/sae/saelens_io.hpp"
#include "husai/train/row_stream.hpp"

namespace husai {

struct SaeRunDataOptions {
  std::string activations_path, key = "activations";
  std::string target_path, target_key = "activations";  // target_path empty: an SAE
  double eval_fraction = 0.1;
  int64_t split_seed = 0;
  bool normalize = true;  // sae.normalize_activations = expected_average_only_in
  int64_t buffer_rows = 131072;
};

class SaeRunData {
 public:
  static constexpr int64_t kSplitBlockRows = 1024;
  static constexpr int64_t kMedianRows = 16384;

  // Everything that can be wrong with the input is found here, before anything is written.
  static SaeRunData load(const SaeRunDataOptions& options);

  const SaeRunDataOptions& options() const { return opt_; }
  const ActivationInfo& acts() const { return acts_; }
  const std::optional<ActivationInfo>& target() const { return target_; }
  bool transcoder() const { return target_.has_value(); }
  bool streamed() const { return streamed_; }
  int64_t d_in() const { return acts_.d_in; }
  int64_t n_train() const { return n_train_; }
  int64_t n_eval() const { return n_eval_; }
  double scale() const { return scale_; }
  double target_scale() const { return target_scale_; }

  // The training rows, scaled: resident (read in place; this object must outlive the stream) or streamed.
  SaeRowStream train_rows() const;
  // b_dec at init ("geometric_median" on the first kMedianRows training rows, "mean" of every training
  // row (streamed: of the first kMedianRows), "zeros"), from the rows the decoder is trained to produce,
  // scaled.
  std::vector<float> initial_b_dec(const std::string& how) const;
  // Metrics of an exported SAE (unscaled rows): on the held-out rows, and on the training rows (streamed:
  // the first buffer_rows of them).
  ReconstructionMetrics held_out_metrics(const SaeModel& m, int64_t batch) const;
  ReconstructionMetrics train_metrics(const SaeModel& m, int64_t batch) const;
  // split.safetensors: resident, train_idx and eval_idx (rows, ascending; the same file as before streaming
  // existed); streamed, eval_blocks (ascending) and metadata mode, block_rows, n_rows; both with split_seed
  // and the input hashes.
  void write_split(const std::string& path) const;
  // {"mode", "buffer_rows", "n_train", "n_eval", ...} for metrics.json.
  nlohmann::json describe() const;

 private:
  // Training positions [first, first + count), scaled, into x (and y).
  void read_train(int64_t first, int64_t count, float* x, float* y) const;
  // Positions [first, first + count) of one side of the split, raw: resident, the rows idx; streamed, the
  // rows of `blocks`.
  void read_side(const std::vector<int64_t>& idx, const std::vector<int64_t>& blocks, int64_t first,
                 int64_t count, float* x, float* y) const;
  void read_positions(const std::vector<int64_t>& blocks, int64_t first, int64_t count, float* x,
                      float* y) const;
  void load_resident();
  void load_streamed();

  SaeRunDataOptions opt_;
  ActivationInfo acts_;
  std::optional<ActivationInfo> target_;
  std::optional<ActivationSource> src_, target_src_;
  bool streamed_ = false;
  int64_t n_train_ = 0, n_eval_ = 0;
  double scale_ = 1.0, target_scale_ = 1.0;
  // Resident.
  std::vector<int64_t> train_idx_, eval_idx_;
  std::vector<float> all_x_, all_y_;      // every row, raw
  std::vector<float> train_x_, train_y_;  // the training rows, scaled
  // Streamed: the blocks of kSplitBlockRows rows each side holds, ascending.
  std::vector<int64_t> train_blocks_, eval_blocks_;
  int64_t scale_rows_ = 0;  // rows the scale factors were computed on
};

}  // namespace husai
