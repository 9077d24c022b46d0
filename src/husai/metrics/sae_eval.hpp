#pragma once

// An SAE's reconstruction metrics on activation rows: encode and decode in batches, accumulate with
// ReconstructionAccumulator (metrics/reconstruction.hpp: the single definition of every metric).

#include <cstdint>

#include "husai/metrics/reconstruction.hpp"
#include "husai/sae/saelens_io.hpp"

namespace husai {

ReconstructionMetrics sae_reconstruction_metrics(const SaeModel& sae, const float* x, int64_t n_rows,
                                                 int64_t batch_rows = 4096);

}  // namespace husai

#include <string>

#include <nlohmann/json.hpp>

namespace husai {

struct EvalSaeOptions {
  std::string sae_dir;           // a SAELens folder (cfg.json + sae_weights.safetensors) or sparsify folder
  std::string activations_path;  // rows to evaluate on (all of them)
  std::string key = "activations";
  std::string model_dir;  // optional transformer run folder: adds the spliced CE/KL scores
  bool quiet = false;
};

// `husai eval-sae`: every reconstruction metric over all rows of the activation file and, with a model,
// the CE-loss and KL scores with the SAE spliced in at the file's hook and position (zero-ablation
// baseline) plus the answer accuracy clean / spliced / ablated. The result is the JSON eval-sae writes.
nlohmann::json evaluate_sae(const EvalSaeOptions& options);

}  // namespace husai
