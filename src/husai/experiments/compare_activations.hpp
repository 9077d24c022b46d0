#pragma once

// `husai compare --activations`: how alike the SAEs are by what their latents do on the same rows
// (metrics/activation_similarity.hpp), beside the decoder/encoder geometry. Every pair of input SAEs is
// scored on the first `rows` activation rows (Pearson correlation of latent activations, matched one-to-one),
// dense up to 4096 x 4096 latents and blockwise with the certified sparse matching above that; each pair's
// chance level is the same score with the second SAE's rows shuffled (a seeded permutation), which keeps
// every latent's firing rate and value distribution and breaks only the row correspondence.
// Descriptive: no test and no verdict. A high score says the two SAEs' latents fire on the same inputs; it
// does not say they are the same directions (the decoder metrics say that) nor that they are features of the
// data rather than of the method (the nulls and the surrogate control address that).

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "husai/sae/saelens_io.hpp"

namespace husai {

// NOLINTNEXTLINE(bugprone-exception-escape)
struct ActivationAgreement {
  nlohmann::json section;  // stability.json "activation_similarity"
  std::string markdown;    // summary.md section
};

// read(first, count, x) fills activation rows [first, first + count) into x [count, d_in]; n_rows rows are
// used (the first ones of the file). labels name the SAEs in the order given.
ActivationAgreement activation_agreement(const std::vector<SaeModel>& saes,
                                         const std::vector<std::string>& labels,
                                         const std::function<void(int64_t, int64_t, float*)>& read,
                                         int64_t n_rows, uint64_t seed);

}  // namespace husai
