#pragma once

// Causal proxy of feature stability (the reference's benchmark slice, fixed): with the SAE spliced into the
// transformer at the activation file's hook and position (metrics/splice.hpp), zero a set of latents before
// decoding and measure the answer accuracy and cross-entropy over all p^2 pairs. Conditions:
//   reconstruction_only  the SAE spliced, nothing ablated (the control every ablation is read against)
//   most_stable          the m alive latents of highest per-feature stability
//   least_stable         the m alive latents of lowest stability
//   random               m alive latents drawn uniformly without replacement (Philox(seed), one draw per
//                        repeat), averaged over the repeats
// "Alive" = fires on at least one of the given rows: a dead latent is zero already, and ablating it would
// make the least-stable condition (dead latents are the least stable) a silent no-op. Ties in stability go to
// the lower latent index. Deltas are against the clean model (ablation - clean) and against
// reconstruction_only; `ablated_l1_fraction` is the share of the latents' summed activation (L1 over the
// rows) that the ablation removes, so conditions that remove very different mass can be told apart.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "husai/metrics/splice.hpp"
#include "husai/model/model_io.hpp"
#include "husai/sae/saelens_io.hpp"

namespace husai {

struct CausalProxyOptions {
  int64_t m = 16;              // latents ablated per condition
  int64_t random_repeats = 3;  // random-latent draws
  uint64_t seed = 0;           // seeds the random draws
  bool quiet = true;
};

// `stability` [d_sae]: a per-feature stability score (higher = more reproducible across seeds, e.g. the
// feature's best |cos| with each other seed's SAE, averaged). `x` [n_rows, d_in]: rows that decide which
// latents are alive and the ablated L1 share (the activation file's rows). Returns the JSON of
// docs/formats.md (benchmark-slice, causal_proxy). Throws husai::Error when fewer than m latents are alive.
nlohmann::json causal_proxy(const LoadedModel& model, const SpliceSpec& spec, const SaeModel& sae,
                            const std::vector<double>& stability, const float* x, int64_t n_rows,
                            const CausalProxyOptions& options);

// The m alive latents of highest (most = true) or lowest stability; ties to the lower index.
std::vector<int64_t> select_by_stability(const std::vector<double>& stability,
                                         const std::vector<uint8_t>& alive, int64_t m, bool most);

}  // namespace husai
