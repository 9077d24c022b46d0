#include "husai/metrics/stability_convergence.hpp"

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"

namespace husai {

namespace {

stats::SimilarityMatrix matrix_of(int64_t n, const std::vector<std::pair<int64_t, int64_t>>& pairs,
                                  const std::vector<PairStability>& results, bool matched) {
  stats::SimilarityMatrix s;
  s.n = n;
  s.values.assign(static_cast<size_t>(n * n), 0.0);
  for (size_t p = 0; p < pairs.size(); ++p) {
    const double v = matched ? results[p].matched_mean_cos : results[p].pwmcc;
    s.values[static_cast<size_t>(pairs[p].first * n + pairs[p].second)] = v;
    s.values[static_cast<size_t>(pairs[p].second * n + pairs[p].first)] = v;
  }
  return s;
}

uint64_t derived(uint64_t seed, const char* name) {
  const auto b = Philox(seed, stream_id(name)).block(0);
  return (static_cast<uint64_t>(b[0]) << 32) | b[1];
}

}  // namespace

StabilityConvergence stability_convergence(const std::vector<std::vector<FeatureSet>>& dictionaries,
                                           const std::vector<int64_t>& steps, int64_t total_steps,
                                           int64_t bootstrap, double confidence, uint64_t seed,
                                           double margin) {
  const auto n_points = static_cast<int64_t>(dictionaries.size());
  if (n_points < 2 || steps.size() != dictionaries.size())
    throw Error("stability convergence needs at least two checkpoints, each with its step");
  const auto n = static_cast<int64_t>(dictionaries[0].size());
  if (n < 2) throw Error("stability convergence needs at least two seeds");
  for (const auto& c : dictionaries) {
    if (static_cast<int64_t>(c.size()) != n) throw Error("every checkpoint needs the same seeds");
  }
  const std::vector<std::pair<int64_t, int64_t>> pairs = upper_pairs(n);
  StabilityConvergence out;
  out.margin = margin;
  std::vector<stats::SimilarityMatrix> pw;
  for (int64_t c = 0; c < n_points; ++c) {
    std::vector<const FeatureSet*> sets;
    for (const FeatureSet& f : dictionaries[static_cast<size_t>(c)]) sets.push_back(&f);
    const std::vector<PairStability> r = pair_stabilities(sets, pairs);
    ConvergencePoint pt;
    pt.step = steps[static_cast<size_t>(c)];
    pt.fraction = total_steps > 0 ? static_cast<double>(pt.step) / static_cast<double>(total_steps) : 0.0;
    pw.push_back(matrix_of(n, pairs, r, false));
    pt.pwmcc = stats::seed_bootstrap(pw.back(), bootstrap, confidence, derived(seed, "convergence/pwmcc"));
    pt.matched_mean_cos = stats::seed_bootstrap(matrix_of(n, pairs, r, true), bootstrap, confidence,
                                                derived(seed, "convergence/matched_mean_cos"));
    out.points.push_back(pt);
  }
  stats::SimilarityMatrix change = pw.back();
  const stats::SimilarityMatrix& prev = pw[pw.size() - 2];
  for (size_t k = 0; k < change.values.size(); ++k) change.values[k] -= prev.values[k];
  out.last_change = stats::seed_bootstrap(change, bootstrap, confidence, derived(seed, "convergence/change"));
  out.plateaued = out.last_change.bca.lo >= -margin && out.last_change.bca.hi <= margin;
  return out;
}

}  // namespace husai
