#pragma once

// Which kinds of features are reproducible? For modular addition the ground truth is known: the answer
// centroids (class means of the activations: an atom aligned with one is a lookup-table entry for that
// answer) and the key-frequency (Fourier) subspace of Nanda et al. 2023. This labels each trained SAE's
// decoder atoms (metrics/feature_labels.hpp), breaks per-feature stability down by label and by
// firing-frequency decile, measures within-SAE duplicates and the pwmcc after deduplication, and says which
// kinds are reproduced: a latent counts as reproduced when its per-feature stability exceeds the 99th
// percentile of the decision null's per-feature stabilities (a threshold that a null atom passes 1% of the
// time).

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "husai/io/activations.hpp"
#include "husai/metrics/stability_study.hpp"
#include "husai/sae/saelens_io.hpp"

namespace husai {

// clang-tidy cannot prove that nlohmann::json's moves never throw (as in io/config.hpp).
// NOLINTNEXTLINE(bugprone-exception-escape)
struct FeatureTypeReport {
  nlohmann::json section;  // stability.json "feature_types"
  std::string markdown;    // a summary.md section
};

// `study` must hold pair-level data (run_stability_study's result for these SAEs). `model_dir`: the
// transformer run folder, for key frequencies by embedding power (as benchmark-slice); empty = the
// n_key_frequencies frequencies whose own component explains most of the activations' variance.
// Needs an answer-position activation file (tensors a, b, labels and metadata modulus, as `husai extract`
// writes): throws husai::Error naming the file otherwise.
FeatureTypeReport feature_type_breakdown(const std::vector<SaeModel>& saes, const StabilityStudy& study,
                                         const ActivationFile& acts, const std::string& model_dir,
                                         int64_t n_key_frequencies = 5);

}  // namespace husai
