#pragma once

// An SAE's reconstruction metrics on activation rows: encode and decode in batches, accumulate with
// ReconstructionAccumulator (metrics/reconstruction.hpp: the single definition of every metric); and
// `husai eval-sae`, which adds the spliced CE/KL scores.

#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "husai/metrics/reconstruction.hpp"
#include "husai/sae/saelens_io.hpp"

namespace husai {

// target: what the SAE's output is compared with, [n_rows, sae.out_dim()]; null = x (an SAE). A
// transcoder's metrics are those of its prediction of the target rows (fvu = 1 - explained_variance).
ReconstructionMetrics sae_reconstruction_metrics(const SaeModel& sae, const float* x, int64_t n_rows,
                                                 int64_t batch_rows = 4096, const float* target = nullptr);

// The same metrics over rows read in batches of batch_rows (for rows larger than memory):
// read(first, count, x, target) fills rows [first, first + count) into x [count, d_in] and, when `paired`,
// the target rows into target [count, out_dim] (target is null otherwise). The value equals the in-memory
// version's on the same rows.
using SaeRowReader = std::function<void(int64_t first, int64_t count, float* x, float* target)>;
ReconstructionMetrics sae_reconstruction_metrics(const SaeModel& sae, const SaeRowReader& read,
                                                 int64_t n_rows, int64_t batch_rows, bool paired);

struct EvalSaeOptions {
  std::string sae_dir;           // a SAELens folder (cfg.json + sae_weights.safetensors) or sparsify folder
  std::string activations_path;  // rows to evaluate on (all of them)
  std::string key = "activations";
  std::string model_dir;  // optional transformer run folder: adds the spliced CE/KL scores
  // A transcoder's output-site rows (row r pairs with row r of activations_path); required for a
  // transcoder, refused for an SAE.
  std::string target_activations_path;
  std::string target_key = "activations";
  bool quiet = false;
};

// `husai eval-sae`: every reconstruction metric over all rows of the activation file and, with a model,
// the CE-loss and KL scores with the SAE spliced in at the file's hook and position (zero-ablation
// baseline) plus the answer accuracy clean / spliced / ablated. The result is the JSON eval-sae writes.
// A transcoder's metrics compare its prediction with the target rows (plus "fvu" = 1 - explained
// variance), and the splice replaces the target site (its MLP's output) with the prediction made from the
// input site, zero-ablating the target site as the baseline.
nlohmann::json evaluate_sae(const EvalSaeOptions& options);

}  // namespace husai
