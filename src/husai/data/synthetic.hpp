#pragma once

// `husai synth`: activations with a known answer. A planted dictionary of n_features random unit vectors in
// R^d_in; each row is a sparse non-negative combination x = sum_{j in S} c_j d_j of `active` distinct
// features chosen uniformly, with magnitudes c_j ~ U(0.5, 1.5). A good SAE recovers the planted rows as
// decoder rows; a good transcoder (spec.transcoder) recovers the target dictionary's rows.

#include <cstdint>
#include <string>
#include <vector>

namespace husai {

struct SynthSpec {
  int64_t d_in = 64;
  int64_t n_features = 256;
  int64_t active = 4;
  int64_t rows = 10000;
  uint64_t seed = 0;
  // Also a transcoder's target: y = sum_{j in S} c_j e_j, the same supports and magnitudes on a second,
  // independent planted dictionary e (what a layer does to sparse inputs, in its simplest form).
  bool transcoder = false;
};

struct SynthData {
  std::vector<float> activations;        // [rows, d_in]
  std::vector<float> dictionary;         // [n_features, d_in], unit rows
  std::vector<float> targets;            // [rows, d_in] (transcoder only)
  std::vector<float> target_dictionary;  // [n_features, d_in], unit rows (transcoder only)
};

// Throws husai::Error on bad sizes (active > n_features, non-positive sizes).
SynthData make_synthetic(const SynthSpec& spec);

// Writes `activations` and `dictionary` (F32), with spec.transcoder also `targets` and `target_dictionary`,
// and the spec in __metadata__, atomically.
void write_synthetic(const std::string& path, const SynthSpec& spec, const SynthData& data);

}  // namespace husai
