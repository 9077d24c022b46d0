#pragma once

// Building blocks the experiments share: the upstream chain (transformer -> activations), SAE conditions
// (a cached train-sae run + its per-seed metrics + `compare`), and the one place that reads the numbers
// a decision needs out of compare's stability.json.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "husai/core/text.hpp"
#include "husai/experiments/runner.hpp"
#include "husai/metrics/stability_study.hpp"

namespace husai {

// clang-tidy cannot prove that nlohmann::json's moves never throw (as in io/config.hpp).
// NOLINTNEXTLINE(bugprone-exception-escape)
struct Upstream {
  std::string transformer_dir;
  std::string activations_path;
  nlohmann::json transformer;  // val_acc, train_acc, grok_epoch, epochs, dir
};

// Trains (or reuses) the transformer of the `transformer.*` section and extracts the `extract.*`
// activations. Refuses to continue when the transformer did not generalise (val_acc < 0.99) unless
// `allow_ungrokked`, because SAE features of a memorising model answer a different question.
Upstream prepare_upstream(ExperimentContext& ctx, bool allow_ungrokked);

// The train-sae settings an experiment condition varies, typed: each field that is set replaces that key of
// the experiment's `sae.*` section. to_json() names them by train-sae's schema keys -- the one place
// experiments spell those keys -- as results.json records a condition's settings.
struct SaeSettings {
  std::optional<std::string> architecture;           // sae.architecture
  std::optional<int64_t> d_sae;                      // sae.d_sae
  std::optional<int64_t> k;                          // sae.k
  std::optional<double> l1_coefficient;              // sae.l1_coefficient
  std::optional<int64_t> steps;                      // training.steps
  std::optional<std::vector<int64_t>> seeds;         // training.seeds
  std::optional<std::string> consistency_reference;  // consistency.reference (an SAE folder)
  std::optional<double> consistency_lambda;          // consistency.lambda

  nlohmann::json to_json() const;  // {"sae.architecture": "topk", ...}: only the fields set
};

// The `sae.*` section as a train-sae Config with `settings` replaced (validated against train-sae's schema).
Config sae_config_with(const Config& experiment_config, const SaeSettings& settings);

// Per-seed held-out and training-row metrics of a train-sae run (seed<S>/metrics.json) and their means:
// ev_held_out, ev_train_rows, ev_drop (train rows - held out), mse, l0, frac_dead, wall_time_s (max over
// seeds: they train in one pass).
nlohmann::json sae_run_metrics(const std::string& sae_run_dir, const std::vector<int64_t>& seeds);

// eval-sae with the transformer (CE loss and KL scores, spliced answer accuracy) for every seed, and the
// means of ce_loss_score and kl_div_score.
nlohmann::json sae_run_splice_metrics(const std::string& sae_run_dir, const std::vector<int64_t>& seeds,
                                      const std::string& activations_path,
                                      const std::string& transformer_dir);

// `husai compare` on the seed folders of a train-sae run, written to RUN/<out_rel>/ (replaced when there:
// a condition redone after an interruption starts its comparison over). Returns stability.json.
nlohmann::json compare_seeds(ExperimentContext& ctx, const std::string& sae_run_dir,
                             const std::vector<int64_t>& seeds, const std::string& activations_path,
                             const std::string& out_rel, const std::string& model_dir = "");

// What the verdicts of an experiment can claim, for its summary: without the surrogate-data control
// (compare.surrogate none) "above" means reproducible beyond the geometry-matched null, which is not
// evidence of data features (TopK k 32 beats its null and still loses to its surrogate: docs/RESULTS.md).
std::string surrogate_caveat(const Config& experiment_config);

// Markdown and a figure of stability-against-steps curves (name, the `convergence` section compare writes
// into stability.json when its inputs keep snapshots), for an experiment's
// summary: a table of every point, one line per curve with its plateau test, and the gnuplot data + plot
// commands (without a title) of pwmcc against steps; figure_data is empty when there is no curve.
struct ConvergenceReport {
  std::string markdown;
  std::string summary;  // the one-line-per-curve part of markdown
  std::string figure_data;
  std::vector<std::pair<std::string, double>> last_change;  // pwmcc's last change per curve
};
ConvergenceReport convergence_report(const std::vector<std::pair<std::string, nlohmann::json>>& curves);

// What a decision needs from a stability study, for one similarity metric against its decision null (the
// most conservative geometry-matched null, metrics/stability_study.hpp), plus every group's numbers and the
// surrogate control when it was run. Missing numbers (written as null) read as NaN.
struct StabilitySummary {
  std::string metric;
  std::string null_name;                               // the decision null
  double trained = 0, trained_lo = 0, trained_hi = 0;  // mean pairwise similarity of the trained seeds, CI
  double null_mean = 0, null_lo = 0, null_hi = 0;
  double delta = 0, delta_lo = 0, delta_hi = 0;  // trained - null, seed-bootstrap CI of the difference
  double ratio = 0;                              // trained / null
  double p_permutation = 1;  // two-sided exact (or Monte Carlo) permutation test over seed labels
  double p_holm = 1;         // the same, Holm-adjusted over its family
  int64_t holm_family_size = 0;
  double cohens_d = 0;        // seed-level effect size (per-seed mean similarities), descriptive
  double mann_whitney_p = 1;  // on pairwise values, reference comparison only
  std::string verdict_kind;   // above, below, indistinguishable
  std::string verdict;        // the verdict in words, naming null, test and correction
  // Surrogate-data control (NaN / empty when not run): trained-on-real - trained-on-surrogate.
  double surrogate_delta = 0, surrogate_lo = 0, surrogate_hi = 0, surrogate_p_holm = 1;
  std::string surrogate_verdict_kind, surrogate_verdict;
  nlohmann::json all_nulls = nlohmann::json::object();  // group -> {mean, delta, delta_lo, delta_hi, p, ...}
};
StabilitySummary summarize(const StabilityStudy& study, const std::string& metric);
// summarize(study_from_json(stability), metric): Holm within that one study.
StabilitySummary summarize_stability(const nlohmann::json& stability, const std::string& metric);
nlohmann::json to_json(const StabilitySummary& s);
StabilitySummary stability_from_json(const nlohmann::json& j);

// The stability studies of one experiment run read back from their stability.json files (relative to
// run_dir) and Holm-adjusted together, so every verdict of the experiment is corrected across its
// families (e.g. TopK and ReLU) as well as its nulls and metrics. Returns the studies in file order.
std::vector<StabilityStudy> load_experiment_studies(
    const std::string& run_dir, const std::vector<std::string>& files,
    std::vector<std::pair<std::string, int64_t>>* family_sizes,
    std::vector<nlohmann::json>* documents = nullptr);

// Small formatting helpers for summary.md and CSVs.
// CSV from a header and rows of JSON scalars (strings quoted when needed).
std::string csv_text(const std::vector<std::string>& header,
                     const std::vector<std::vector<nlohmann::json>>& rows);

}  // namespace husai
