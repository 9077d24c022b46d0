#pragma once

// Has cross-seed stability stopped changing? Held-out EV can plateau long before the dictionaries settle
// (TopK pwmcc 0.427 / 0.439 / 0.460 at 1k / 3k / 12k steps while EV stayed at 0.974-0.978), so an EV plateau
// says nothing about stability. This measures the stability metric itself at training checkpoints of the
// same seeds and tests its last change.
//
// Plateau test: D_ij = S_last(i, j) - S_prev(i, j) for every seed pair (the same pairs at the last and the
// previous checkpoint: a paired design), seed bootstrap of the mean of D (statistics.hpp). Stability has
// plateaued when the whole BCa interval of that change lies inside [-margin, +margin]: an equivalence test
// (two one-sided tests at level (1 - confidence) / 2 each), so "plateaued" is a positive finding that
// too few seeds cannot produce by default, unlike "no significant change".

#include <cstdint>
#include <string>
#include <vector>

#include "husai/metrics/stability.hpp"
#include "husai/metrics/statistics.hpp"

namespace husai {

inline constexpr double kDefaultPlateauMargin = 0.01;

struct ConvergencePoint {
  int64_t step = 0;
  double fraction = 0;  // of the full training run
  stats::BootstrapResult pwmcc;
  stats::BootstrapResult matched_mean_cos;
};

struct StabilityConvergence {
  std::vector<ConvergencePoint> points;  // in increasing step order, the final SAEs last
  stats::BootstrapResult last_change;    // pwmcc(last) - pwmcc(previous), paired over seed pairs
  double margin = kDefaultPlateauMargin;
  bool plateaued = false;  // last_change's BCa interval inside [-margin, margin]
};

// dictionaries[c][i]: decoder features of seed i at checkpoint c (checkpoints in increasing step order,
// every checkpoint with the same seeds in the same order; at least 2 checkpoints and 2 seeds).
StabilityConvergence stability_convergence(const std::vector<std::vector<FeatureSet>>& dictionaries,
                                           const std::vector<int64_t>& steps, int64_t total_steps,
                                           int64_t bootstrap, double confidence, uint64_t seed,
                                           double margin = kDefaultPlateauMargin);

}  // namespace husai
