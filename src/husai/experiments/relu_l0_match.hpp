#pragma once

// ReLU+L1 SAEs at a matched L0 (phase4a: TopK's k). The L1 coefficient is searched on single-seed tuning
// runs, then checked, and if need be corrected, on the evaluated seeds themselves: the L0 a comparison needs
// matched is theirs, and a tuning seed's L0 differs from their mean by seed noise (34.3 vs 32 when one
// bisection trial within 10% decided).
//
// Held-out L0 falls as the L1 coefficient grows, close to a power law over the useful range, so the search
// works on (log l1, log L0): bisection in log l1 until the target is bracketed by two trials, then
// interpolation between the bracketing trials (regula falsi), falling back to bisection whenever two
// successive trials land on the same side (the stall of plain regula falsi).

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "husai/experiments/runner.hpp"
#include "husai/io/config.hpp"

namespace husai {

struct L1Trial {
  double l1_coefficient = 0;
  double l0 = 0;
};

class L1Search {
 public:
  // Searches [l1_low, l1_high] (0 < l1_low < l1_high) for held-out L0 = target_l0 > 0, converged when
  // |L0 - target| <= rel_tolerance * target.
  L1Search(double l1_low, double l1_high, double target_l0, double rel_tolerance);
  // The coefficient to try next: the log-space midpoint of the bracket, or the log-log interpolation once
  // both bracket ends are trials (kept inside the bracket's middle 96%).
  double next() const;
  void add(double l1_coefficient, double l0);
  bool converged() const;
  bool within_tolerance(double l0) const;
  // The trial closest to the target (the first of equals); throws husai::Error before any trial.
  const L1Trial& best() const;
  const std::vector<L1Trial>& trials() const { return trials_; }
  // d log L0 / d log l1 near the target: the slope between the bracketing trials, else between the two trials
  // closest to the target; nullopt with fewer than two usable trials or a non-negative slope.
  std::optional<double> elasticity() const;

 private:
  double log_lo_, log_hi_, target_, tolerance_;
  std::vector<L1Trial> trials_;
};

// One secant step along the tuning curve: the coefficient expected to move `achieved_l0` to `target_l0`,
// exp(log l1 + (log target - log achieved) / elasticity), clamped to [l1_low, l1_high].
double corrected_l1(double l1_coefficient, double achieved_l0, double target_l0, double elasticity,
                    double l1_low, double l1_high);

// Config keys phase4a.relu_* of the search (added to phase4a's schema).
void add_relu_l0_match_keys(ConfigSchema& schema);

// The tuning condition of phase4a: searches on `phase4a.relu_tune_seed`, then trains the evaluated seeds with
// `train_evaluated(l1)` (returns the cached train-sae run folder; the evaluated condition reuses it) and,
// while their mean held-out L0 misses the tolerance, corrects the coefficient up to
// `phase4a.relu_eval_corrections` times. Returns {target_l0, tolerance, seed, steps, trials [{l1_coefficient,
// held_out_l0}], converged, l1_coefficient, tuned_l0, evaluated [{l1_coefficient, mean_held_out_l0}]}, where
// l1_coefficient is the evaluated coefficient whose mean L0 came closest to the target.
nlohmann::json tune_relu_l1(ExperimentContext& ctx, const std::string& activations_path, double target_l0,
                            const std::vector<int64_t>& evaluated_seeds,
                            const std::function<std::string(double)>& train_evaluated);

// results.json's `relu_l0_match`: {target, achieved (the evaluated seeds' mean held-out L0), tolerance
// (relative), within_tolerance, trials (tuning runs + evaluated runs), l1_coefficient}.
nlohmann::json relu_l0_match_json(const nlohmann::json& tuning, double achieved_l0);

// summary.md's paragraph on the match; a miss is stated first, in bold.
std::string relu_l0_match_markdown(const nlohmann::json& tuning, const nlohmann::json& match, size_t n_seeds);

}  // namespace husai
