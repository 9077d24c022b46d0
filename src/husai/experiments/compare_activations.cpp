#include "husai/experiments/compare_activations.hpp"

#include <cmath>

#include <fmt/format.h>

#include "husai/core/rng.hpp"
#include "husai/metrics/activation_similarity.hpp"
#include "husai/metrics/stability.hpp"

namespace husai {
namespace {

constexpr int64_t kDenseLatents = 4096;

ActivationPairSimilarity score(const LatentActivations& a, const LatentActivations& b,
                               nlohmann::json& method) {
  if (a.n_latents <= kDenseLatents && b.n_latents <= kDenseLatents) {
    method = "dense";
    return activation_pair_similarity(a, b);
  }
  LargeMatchingInfo info;
  const ActivationPairSimilarity r = large_activation_pair_similarity(a, b, &info);
  method = {{"kind", "blockwise"}, {"certified", info.certified}, {"rounds", info.rounds}};
  return r;
}

nlohmann::json to_json(const ActivationPairSimilarity& s) {
  nlohmann::json j = {{"act_pwmcc", s.act_pwmcc},
                      {"act_pwmcc_ab", s.act_pwmcc_ab},
                      {"act_pwmcc_ba", s.act_pwmcc_ba},
                      {"act_matched_mean_corr", s.act_matched_mean_corr},
                      {"zero_variance_a", s.zero_variance_a},
                      {"zero_variance_b", s.zero_variance_b}};
  for (size_t t = 0; t < kSharedThresholds.size(); ++t) {
    j[fmt::format("act_shared_frac_{:02d}", std::lround(kSharedThresholds[t] * 10))] = s.act_shared_frac[t];
  }
  return j;
}

}  // namespace

ActivationAgreement activation_agreement(const std::vector<SaeModel>& saes,
                                         const std::vector<std::string>& labels,
                                         const std::function<void(int64_t, int64_t, float*)>& read,
                                         int64_t n_rows, uint64_t seed) {
  const int64_t D = saes.front().d_in;
  std::vector<float> x(static_cast<size_t>(n_rows * D), 0.0f);
  read(0, n_rows, x.data());
  std::vector<LatentActivations> latents;
  latents.reserve(saes.size());
  for (const SaeModel& sae : saes) latents.push_back(sae_latent_activations(sae, x.data(), n_rows));
  x = {};
  const std::vector<int64_t> shuffle = permutation(n_rows, seed, stream_id("compare.activation_chance"));
  ActivationAgreement out;
  nlohmann::json pairs = nlohmann::json::array();
  double sum = 0, sum_chance = 0;
  std::string table;
  for (size_t i = 0; i < saes.size(); ++i) {
    for (size_t j = i + 1; j < saes.size(); ++j) {
      nlohmann::json method, chance_method;
      const ActivationPairSimilarity s = score(latents[i], latents[j], method);
      const ActivationPairSimilarity c = score(latents[i], permute_rows(latents[j], shuffle), chance_method);
      nlohmann::json p = to_json(s);
      p["a"] = labels[i];
      p["b"] = labels[j];
      p["method"] = method;
      p["chance"] = to_json(c);
      pairs.push_back(p);
      sum += s.act_matched_mean_corr;
      sum_chance += c.act_matched_mean_corr;
      table +=
          fmt::format("| {} | {} | {:.4f} | {:.4f} | {:.4f} | {:.4f} |\n", labels[i], labels[j], s.act_pwmcc,
                      s.act_matched_mean_corr, s.act_shared_frac[1], c.act_matched_mean_corr);
    }
  }
  const auto n_pairs = static_cast<double>(pairs.size());
  out.section = {
      {"rows", n_rows},
      {"rows_rule", "the first rows of the activation file"},
      {"chance",
       "the same score with the second SAE's rows in a seeded random order (stream "
       "compare.activation_chance): firing rates kept, row correspondence broken"},
      {"pairs", pairs},
      {"mean_act_matched_mean_corr", sum / n_pairs},
      {"mean_chance_act_matched_mean_corr", sum_chance / n_pairs},
      {"does_not_show",
       "descriptive only (no test, no verdict): agreement in what latents fire on, not in their directions, "
       "and not whether they reflect the data rather than the method (see the nulls and the surrogate)"}};
  out.markdown = fmt::format(
      "\n## Activation similarity (latents on the same {} rows)\n\n"
      "Pearson correlation of latent activations, matched one-to-one (activation_similarity). Chance: the "
      "second SAE's rows shuffled. Descriptive; it does not test anything and does not show that latents are "
      "features of the data.\n\n"
      "| SAE a | SAE b | act_pwmcc | act_matched_mean_corr | act_shared_frac_07 | chance matched |\n"
      "|---|---|---|---|---|---|\n{}\nMean over pairs: {:.4f} (chance {:.4f}).\n",
      n_rows, table, sum / n_pairs, sum_chance / n_pairs);
  return out;
}

}  // namespace husai
