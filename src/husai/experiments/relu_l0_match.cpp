#include "husai/experiments/relu_l0_match.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "husai/core/error.hpp"
#include "husai/experiments/study.hpp"
#include "husai/io/json_file.hpp"

namespace husai {

L1Search::L1Search(double l1_low, double l1_high, double target_l0, double rel_tolerance)
    : log_lo_(std::log(l1_low)), log_hi_(std::log(l1_high)), target_(target_l0), tolerance_(rel_tolerance) {
  if (!(l1_low > 0 && l1_low < l1_high)) throw Error("the L1 search range must satisfy 0 < low < high");
  if (!(target_l0 > 0)) throw Error("the target L0 must be positive");
}

bool L1Search::within_tolerance(double l0) const {
  return std::abs(l0 - target_) <= tolerance_ * target_;
}

bool L1Search::converged() const {
  return !trials_.empty() && within_tolerance(best().l0);
}

const L1Trial& L1Search::best() const {
  if (trials_.empty()) throw Error("the L1 search has no trial yet");
  const L1Trial* b = &trials_.front();
  for (const L1Trial& t : trials_) {
    if (std::abs(t.l0 - target_) < std::abs(b->l0 - target_)) b = &t;
  }
  return *b;
}

void L1Search::add(double l1_coefficient, double l0) {
  trials_.push_back({l1_coefficient, l0});
}

namespace {

// The bracket of the target in log l1: the largest coefficient still too dense (L0 above the target) and the
// smallest already too sparse, each with its trial when there is one, else the search range's end.
struct Bracket {
  double x_lo, x_hi;
  const L1Trial* lo = nullptr;
  const L1Trial* hi = nullptr;
};

Bracket bracket(const std::vector<L1Trial>& trials, double log_lo, double log_hi, double target) {
  Bracket b{log_lo, log_hi};
  for (const L1Trial& t : trials) {
    const double x = std::log(t.l1_coefficient);
    if (t.l0 > target && x >= b.x_lo) {
      b.x_lo = x;
      b.lo = &t;
    } else if (t.l0 < target && x <= b.x_hi) {
      b.x_hi = x;
      b.hi = &t;
    }
  }
  return b;
}

}  // namespace

double L1Search::next() const {
  const Bracket b = bracket(trials_, log_lo_, log_hi_, target_);
  // Noise can make L0 non-monotone in the coefficient: the bracket then collapses and the midpoint of the
  // whole range of trials is as good a guess as any.
  if (b.x_lo >= b.x_hi) return std::exp(0.5 * (b.x_lo + b.x_hi));
  const double width = b.x_hi - b.x_lo;
  const bool same_side = trials_.size() >= 2 && ((trials_[trials_.size() - 1].l0 > target_) ==
                                                 (trials_[trials_.size() - 2].l0 > target_));
  if (b.lo != nullptr && b.hi != nullptr && b.hi->l0 > 0 && !same_side) {
    const double y_lo = std::log(b.lo->l0);
    const double y_hi = std::log(b.hi->l0);
    double x = b.x_lo + (std::log(target_) - y_lo) * width / (y_hi - y_lo);
    x = std::clamp(x, b.x_lo + 0.02 * width, b.x_hi - 0.02 * width);
    return std::exp(x);
  }
  return std::exp(0.5 * (b.x_lo + b.x_hi));
}

std::optional<double> L1Search::elasticity() const {
  const auto slope = [](const L1Trial& a, const L1Trial& b) -> std::optional<double> {
    if (a.l0 <= 0 || b.l0 <= 0 || a.l1_coefficient == b.l1_coefficient) return std::nullopt;
    const double s =
        (std::log(b.l0) - std::log(a.l0)) / (std::log(b.l1_coefficient) - std::log(a.l1_coefficient));
    if (!(s < 0) || !std::isfinite(s)) return std::nullopt;
    return s;
  };
  const Bracket b = bracket(trials_, log_lo_, log_hi_, target_);
  if (b.lo != nullptr && b.hi != nullptr) {
    if (const auto s = slope(*b.lo, *b.hi)) return s;
  }
  if (trials_.size() < 2) return std::nullopt;
  std::vector<L1Trial> by_error = trials_;
  std::stable_sort(by_error.begin(), by_error.end(), [&](const L1Trial& a, const L1Trial& c) {
    return std::abs(a.l0 - target_) < std::abs(c.l0 - target_);
  });
  return slope(by_error[0], by_error[1]);
}

double corrected_l1(double l1_coefficient, double achieved_l0, double target_l0, double elasticity,
                    double l1_low, double l1_high) {
  if (!(achieved_l0 > 0) || !(elasticity < 0)) return l1_coefficient;
  const double x = std::log(l1_coefficient) + (std::log(target_l0) - std::log(achieved_l0)) / elasticity;
  return std::clamp(std::exp(x), l1_low, l1_high);
}

void add_relu_l0_match_keys(ConfigSchema& s) {
  s.add_float("phase4a.relu_target_l0", nullptr, "held-out L0 the ReLU L1 coefficient is tuned to; null = k")
      .nullable()
      .greater_than(0);
  s.add_int("phase4a.relu_tune_seed", 7, "seed of the tuning runs (not one of the evaluated seeds)").min(0);
  s.add_int(
       "phase4a.relu_tune_steps", nullptr,
       "optimizer steps of each tuning run; null = the evaluated runs' own length (sae.training), so the "
       "L0 tuned is the L0 reached")
      .nullable()
      .min(1);
  s.add_float_list("phase4a.relu_l1_range", nlohmann::json::array({0.1, 2.5}),
                   "L1 coefficients bracketing the target (searched in log space)")
      .length(2)
      .greater_than(0);
  s.add_int("phase4a.relu_tune_iterations", 12,
            "most tuning runs (log-space bisection, then interpolation between the bracketing runs)")
      .min(1)
      .max(30);
  s.add_float("phase4a.relu_l0_tolerance", 0.02,
              "relative: the match holds when |L0 - target| <= tolerance * target, on the tuning seed and "
              "on the evaluated seeds' mean")
      .min(0);
  s.add_int("phase4a.relu_eval_corrections", 1,
            "when the evaluated seeds' mean L0 misses the tolerance: retrain them this many times at most, "
            "with the coefficient moved along the tuning runs' slope")
      .min(0)
      .max(5);
}

namespace {

double held_out_l0(const std::string& sae_dir, const std::vector<int64_t>& seeds) {
  return sae_run_metrics(sae_dir, seeds)["mean"]["l0"].get<double>();
}

}  // namespace

nlohmann::json tune_relu_l1(ExperimentContext& ctx, const std::string& activations_path, double target_l0,
                            const std::vector<int64_t>& evaluated_seeds,
                            const std::function<std::string(double)>& train_evaluated) {
  const Config& c = ctx.config();
  const auto range = c.get_double_list("phase4a.relu_l1_range");
  const double tolerance = c.get_double("phase4a.relu_l0_tolerance");
  const int64_t seed = c.get_int("phase4a.relu_tune_seed");
  L1Search search(range[0], range[1], target_l0, tolerance);
  nlohmann::json trials = nlohmann::json::array();
  nlohmann::json steps;  // of the tuning runs, as trained
  for (int64_t it = 0; it < c.get_int("phase4a.relu_tune_iterations") && !search.converged(); ++it) {
    const double l1 = search.next();
    SaeSettings o;
    o.architecture = "relu";
    o.d_sae = c.get_int("phase4a.d_sae");
    o.l1_coefficient = l1;
    o.seeds = std::vector<int64_t>{seed};
    if (!c.is_null("phase4a.relu_tune_steps")) o.steps = c.get_int("phase4a.relu_tune_steps");
    const std::string dir = ctx.sae_run(sae_config_with(c, o), activations_path);
    const double l0 = held_out_l0(dir, {seed});
    steps = read_json_file(dir + fmt::format("/seed{}/metrics.json", seed)).at("steps");
    ctx.log(
        fmt::format("relu L1 tuning: l1 {:.5g} -> held-out L0 {:.2f} (target {:.1f})", l1, l0, target_l0));
    trials.push_back({{"l1_coefficient", l1}, {"held_out_l0", l0}});
    search.add(l1, l0);
  }
  const L1Trial tuned = search.best();
  if (!search.converged()) {
    ctx.log(
        fmt::format("WARNING: relu L1 tuning stopped after {} runs at L0 {:.2f}, outside {:.3g}% of {:.1f}",
                    trials.size(), tuned.l0, 100 * tolerance, target_l0));
  }

  // The evaluated seeds at the tuned coefficient, corrected along the tuning curve while their mean misses.
  nlohmann::json evaluated = nlohmann::json::array();
  double l1 = tuned.l1_coefficient;
  double chosen_l1 = l1, chosen_err = std::numeric_limits<double>::infinity();
  const double elasticity = search.elasticity().value_or(-1.0);
  for (int64_t round = 0;; ++round) {
    const double mean_l0 = held_out_l0(train_evaluated(l1), evaluated_seeds);
    ctx.log(fmt::format("relu L1 {:.5g}: evaluated seeds' mean held-out L0 {:.2f} (target {:.1f})", l1,
                        mean_l0, target_l0));
    evaluated.push_back({{"l1_coefficient", l1}, {"mean_held_out_l0", mean_l0}});
    if (std::abs(mean_l0 - target_l0) < chosen_err) {
      chosen_err = std::abs(mean_l0 - target_l0);
      chosen_l1 = l1;
    }
    if (search.within_tolerance(mean_l0) || round >= c.get_int("phase4a.relu_eval_corrections")) break;
    const double next = corrected_l1(l1, mean_l0, target_l0, elasticity, range[0], range[1]);
    if (next == l1) break;
    l1 = next;
  }
  return {{"target_l0", target_l0},
          {"tolerance", tolerance},
          {"seed", seed},
          {"steps", steps},
          {"trials", trials},
          {"converged", search.converged()},
          {"elasticity", elasticity},
          {"tuned_l1_coefficient", tuned.l1_coefficient},
          {"tuned_l0", tuned.l0},
          {"evaluated", evaluated},
          {"l1_coefficient", chosen_l1}};
}

nlohmann::json relu_l0_match_json(const nlohmann::json& tuning, double achieved_l0) {
  const double target = tuning.at("target_l0").get<double>();
  const double tolerance = tuning.at("tolerance").get<double>();
  return {{"target", target},
          {"achieved", achieved_l0},
          {"tolerance", tolerance},
          {"within_tolerance", std::abs(achieved_l0 - target) <= tolerance * target},
          {"trials", tuning.at("trials").size() + tuning.at("evaluated").size()},
          {"l1_coefficient", tuning.at("l1_coefficient")}};
}

std::string relu_l0_match_markdown(const nlohmann::json& tuning, const nlohmann::json& match,
                                   size_t n_seeds) {
  const double target = match.at("target").get<double>();
  const double achieved = match.at("achieved").get<double>();
  const double tolerance = match.at("tolerance").get<double>();
  std::string md;
  if (!match.at("within_tolerance").get<bool>()) {
    md += fmt::format(
        "\n**WARNING: the ReLU SAEs' L0 is not matched: mean held-out L0 {} over the {} evaluated seeds vs "
        "target {} (|difference| {:.1f}% of the target, tolerance {:.3g}%). Comparisons between the families "
        "are at different sparsities.**\n",
        fmt_num(achieved, 2), n_seeds, fmt_num(target, 1), 100 * std::abs(achieved - target) / target,
        100 * tolerance);
  }
  md += fmt::format(
      "\nReLU matched L0: target held-out L0 {} (tolerance {:.3g}%); {} tuning runs of {} steps (seed {}) "
      "reached "
      "L0 {} at L1 coefficient {:.5g}; the {} evaluated seeds, trained at {} coefficient(s), reach mean "
      "held-out L0 {} at L1 coefficient {:.5g} ({}).\n",
      fmt_num(target, 1), 100 * tolerance, tuning.at("trials").size(), tuning.at("steps").get<int64_t>(),
      tuning.at("seed").get<int64_t>(), fmt_num(tuning.at("tuned_l0").get<double>(), 2),
      tuning.at("tuned_l1_coefficient").get<double>(), n_seeds, tuning.at("evaluated").size(),
      fmt_num(achieved, 2), match.at("l1_coefficient").get<double>(),
      match.at("within_tolerance").get<bool>() ? "within tolerance" : "OUTSIDE tolerance");
  return md;
}

}  // namespace husai
