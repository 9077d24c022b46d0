#include "husai/metrics/causal.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"

namespace husai {

std::vector<int64_t> select_by_stability(const std::vector<double>& stability,
                                         const std::vector<uint8_t>& alive, int64_t m, bool most) {
  std::vector<int64_t> candidates;
  for (size_t i = 0; i < alive.size(); ++i) {
    if (alive[i] != 0) candidates.push_back(static_cast<int64_t>(i));
  }
  if (static_cast<int64_t>(candidates.size()) < m) {
    throw Error("causal proxy: only " + std::to_string(candidates.size()) + " alive latents, cannot ablate " +
                std::to_string(m));
  }
  std::stable_sort(candidates.begin(), candidates.end(), [&](int64_t i, int64_t j) {
    const double si = stability[static_cast<size_t>(i)], sj = stability[static_cast<size_t>(j)];
    return most ? si > sj : si < sj;
  });
  candidates.resize(static_cast<size_t>(m));
  return candidates;
}

namespace {

// Which latents fire on the rows, and how much activation each carries (inputs of every condition's JSON).
struct LatentUsage {
  std::vector<uint8_t> alive;
  std::vector<double> l1;
  double l1_total = 0;
  std::vector<int64_t> alive_list;
};

// Encodes the rows in batches and records the alive latents and each latent's summed activation.
LatentUsage latent_usage(const SaeModel& sae, const float* x, int64_t n_rows) {
  const int64_t L = sae.d_sae;
  LatentUsage u;
  // Alive latents and each latent's summed activation over the rows.
  u.alive.assign(static_cast<size_t>(L), 0);
  u.l1.assign(static_cast<size_t>(L), 0.0);
  constexpr int64_t kBatch = 4096;
  for (int64_t start = 0; start < n_rows; start += kBatch) {
    const int64_t n = std::min(kBatch, n_rows - start);
    const std::vector<float> f = sae.encode(x + start * sae.d_in, n);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t i = 0; i < L; ++i) {
        const float v = f[static_cast<size_t>(r * L + i)];
        if (v != 0.0f) u.alive[static_cast<size_t>(i)] = 1;
        u.l1[static_cast<size_t>(i)] += std::abs(static_cast<double>(v));
      }
    }
  }
  u.l1_total = std::accumulate(u.l1.begin(), u.l1.end(), 0.0);
  for (int64_t i = 0; i < L; ++i) {
    if (u.alive[static_cast<size_t>(i)] != 0) u.alive_list.push_back(i);
  }
  return u;
}

// What every ablation run shares: the model and splice site, the SAE, and the latent buffer the runs reuse.
struct Ablation {
  const LoadedModel& model;
  const SpliceSpec& spec;
  const SaeModel& sae;
  bool quiet;
  std::vector<float> latents;
};

// Splices the SAE into the model with the `ablated` latents zeroed before decoding.
SpliceMetrics run_ablated(Ablation& a, const std::vector<int64_t>& ablated) {
  const int64_t L = a.sae.d_sae;
  const SaeModel& sae = a.sae;
  std::vector<float>& latents = a.latents;
  std::vector<uint8_t> mask(static_cast<size_t>(L), 0);
  for (const int64_t i : ablated) mask[static_cast<size_t>(i)] = 1;
  const ReconstructFn reconstruct = [&](const float* xb, int64_t n, float* x_hat) {
    latents.resize(static_cast<size_t>(n * L));
    sae.encode(xb, n, latents.data());
    for (int64_t r = 0; r < n; ++r) {
      for (const int64_t i : ablated) latents[static_cast<size_t>(r * L + i)] = 0.0f;
    }
    sae.decode(latents.data(), n, x_hat);
  };
  return splice_metrics(a.model, a.spec, reconstruct, a.quiet);
}

// One condition's JSON: the ablated latents, their mean stability and L1 share, and the metrics with their
// deltas against the clean model and against the reconstruction-only run `base`.
nlohmann::json describe_ablation(const std::vector<int64_t>& ablated, const SpliceMetrics& s,
                                 const SpliceMetrics& base, const LatentUsage& usage,
                                 const std::vector<double>& stability) {
  double removed = 0, stab = 0;
  for (const int64_t i : ablated) {
    removed += usage.l1[static_cast<size_t>(i)];
    stab += stability[static_cast<size_t>(i)];
  }
  return nlohmann::json{
      {"latents", ablated},
      {"mean_stability", ablated.empty() ? 0.0 : stab / static_cast<double>(ablated.size())},
      {"ablated_l1_fraction", usage.l1_total > 0 ? removed / usage.l1_total : 0.0},
      {"accuracy", s.accuracy_sae},
      {"ce_loss", s.ce_sae},
      {"delta_accuracy_vs_clean", s.accuracy_sae - s.accuracy_clean},
      {"delta_ce_vs_clean", s.ce_sae - s.ce_clean},
      {"delta_accuracy_vs_reconstruction", s.accuracy_sae - base.accuracy_sae},
      {"delta_ce_vs_reconstruction", s.ce_sae - base.ce_sae}};
}

// The random condition: each repeat's draw of m alive latents, and the mean of their numbers over the
// repeats.
nlohmann::json random_condition(Ablation& ablation, const SpliceMetrics& base, const LatentUsage& usage,
                                const std::vector<double>& stability, const CausalProxyOptions& options) {
  // Random control: a partial Fisher-Yates over the alive latents, one Philox stream per repeat.
  nlohmann::json repeats = nlohmann::json::array();
  const char* keys[] = {"mean_stability",
                        "ablated_l1_fraction",
                        "accuracy",
                        "ce_loss",
                        "delta_accuracy_vs_clean",
                        "delta_ce_vs_clean",
                        "delta_accuracy_vs_reconstruction",
                        "delta_ce_vs_reconstruction"};
  nlohmann::json random_mean = nlohmann::json::object();
  for (const char* k : keys) random_mean[k] = 0.0;
  for (int64_t rep = 0; rep < options.random_repeats; ++rep) {
    const std::vector<int64_t> perm = permutation(static_cast<int64_t>(usage.alive_list.size()), options.seed,
                                                  stream_id("causal.random") + static_cast<uint64_t>(rep));
    std::vector<int64_t> pick;
    for (int64_t j = 0; j < options.m; ++j)
      pick.push_back(usage.alive_list[static_cast<size_t>(perm[static_cast<size_t>(j)])]);
    std::sort(pick.begin(), pick.end());
    const nlohmann::json r = describe_ablation(pick, run_ablated(ablation, pick), base, usage, stability);
    for (const char* k : keys) {
      random_mean[k] =
          random_mean[k].get<double>() + r[k].get<double>() / static_cast<double>(options.random_repeats);
    }
    repeats.push_back(r);
  }
  random_mean["repeats"] = repeats;
  return random_mean;
}

}  // namespace

nlohmann::json causal_proxy(const LoadedModel& model, const SpliceSpec& spec, const SaeModel& sae,
                            const std::vector<double>& stability, const float* x, int64_t n_rows,
                            const CausalProxyOptions& options) {
  const int64_t L = sae.d_sae;
  if (static_cast<int64_t>(stability.size()) != L) {
    throw Error("causal proxy: " + std::to_string(stability.size()) + " stability values for " +
                std::to_string(L) + " latents");
  }
  if (options.m < 1) throw Error("causal proxy: m must be >= 1");
  if (options.random_repeats < 1) throw Error("causal proxy: random_repeats must be >= 1");
  const LatentUsage usage = latent_usage(sae, x, n_rows);

  Ablation ablation{model, spec, sae, options.quiet, {}};
  const SpliceMetrics base = run_ablated(ablation, {});
  nlohmann::json conditions = nlohmann::json::object();
  conditions["reconstruction_only"] = describe_ablation({}, base, base, usage, stability);
  const std::vector<int64_t> most = select_by_stability(stability, usage.alive, options.m, true);
  const std::vector<int64_t> least = select_by_stability(stability, usage.alive, options.m, false);
  conditions["most_stable"] = describe_ablation(most, run_ablated(ablation, most), base, usage, stability);
  conditions["least_stable"] = describe_ablation(least, run_ablated(ablation, least), base, usage, stability);
  conditions["random"] = random_condition(ablation, base, usage, stability, options);
  return {{"m", options.m},
          {"n_alive", static_cast<int64_t>(usage.alive_list.size())},
          {"random_repeats", options.random_repeats},
          {"seed", options.seed},
          {"hook_name", base.hook_name},
          {"position", base.position},
          {"clean", {{"accuracy", base.accuracy_clean}, {"ce_loss", base.ce_clean}}},
          {"conditions", conditions}};
}

}  // namespace husai
