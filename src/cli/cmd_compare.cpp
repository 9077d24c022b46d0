// compare: how alike are SAEs that differ only in their seed, and is that more than chance?

#include <chrono>
#include <cstdio>
#include <memory>

#include "commands.hpp"
#include "common.hpp"
#include "husai/core/error.hpp"
#include "husai/core/text.hpp"
#include "husai/experiments/compare.hpp"
#include "husai/experiments/stability_report.hpp"

namespace husai::cli {

Runner register_compare(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "compare",
      "Stability across seeds: pairwise similarity of two or more SAEs (SAELens or sparsify folders, same "
      "d_in) for the decoder rows and the encoder columns (pwmcc, matched_mean_cos = Hungarian PW-MCC, "
      "shared "
      "fractions), per-feature stability, null baselines (gaussian, covariance, and the geometry-matched "
      "second_moment, axis_reflection, rotation), an optional surrogate-data control, seed-level statistics "
      "(seed bootstrap CIs, exact permutation tests over seed labels, Holm over nulls and metrics) and one "
      "verdict rule (above / below / indistinguishable). Writes OUT/stability.json, summary.md, pairs.csv, "
      "per_feature.csv, figures and manifest.json.");
  struct Opts {
    CommonOptions common;
    CompareOptions cmp;
    std::string nulls;
    bool no_figures = false;
  };
  auto o = std::make_shared<Opts>();
  add_common(sub, o->common);
  sub->add_option("sae_dirs", o->cmp.sae_dirs, "SAE folders (two or more), in the order pairs are reported")
      ->required();
  sub->add_option("--null", o->nulls,
                  "comma-separated nulls: gaussian, untrained, covariance, second_moment, axis_reflection, "
                  "rotation, or none (default: gaussian,untrained,second_moment,rotation, plus covariance "
                  "and axis_reflection with --activations)");
  sub->add_option(
         "--null-seeds", o->cmp.null_seeds,
         "null dictionaries per null (seeds 1000, 1001, ...; default: as many as SAE folders, at least "
         "10; axis_reflection: one per SAE)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option(
      "--activations", o->cmp.activations_path,
      "activation rows the SAEs were trained on: a safetensors or .npy file, or a folder or glob of shards "
      "(enables the covariance and axis_reflection nulls and the surrogate control)");
  sub->add_option("--buffer-rows", o->cmp.buffer_rows,
                  "activation files with more rows are streamed, not read into memory (default 131072)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 40));
  sub->add_option(
         "--activation-rows", o->cmp.activation_rows,
         "with --activations: activation similarity of every pair (correlation of latent activations, "
         "matched one-to-one, with a shuffled-rows chance level) on the first N rows; 0 skips it "
         "(default 16384)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option(
      "--surrogate", o->cmp.surrogate,
      "surrogate-data control: 'gaussian' trains the same SAE family (same config, rows and seeds) "
      "on Gaussian data with the activations' mean and covariance and compares against it");
  sub->add_option(
      "--model", o->cmp.model_dir,
      "transformer run folder: key frequencies (embedding power) for the feature-type breakdown of "
      "answer-position activations (default: chosen from the activations)");
  sub->add_option("--surrogate-seed", o->cmp.surrogate_seed, "seed of the surrogate rows (default 0)");
  sub->add_option("--key", o->cmp.activations_key,
                  "tensor name in the activation file (default: activations)");
  sub->add_option("--bootstrap", o->cmp.bootstrap,
                  "seed-bootstrap resamples, also Monte Carlo permutations when not exact (default 10000)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--confidence", o->cmp.confidence, "confidence level of the intervals (default 0.95)")
      ->check(CLI::Range(0.5, 0.9999));
  sub->add_option("--seed", o->cmp.seed, "seed of the bootstrap and permutation draws (default 0)");
  sub->add_option("-o,--out", o->cmp.out_dir, "output folder")->required();
  sub->add_flag("--overwrite", o->cmp.overwrite, "replace the contents of a non-empty --out");
  sub->add_flag("--no-figures", o->no_figures, "skip the gnuplot figures");
  return [o] {
    apply_common(o->common);
    o->cmp.quiet = o->common.quiet;
    o->cmp.figures = !o->no_figures;
    if (!o->nulls.empty()) {
      o->cmp.nulls = split_list(o->nulls);
      if (o->cmp.nulls.empty()) throw Error("--null needs at least one null name, or none");
    }
    const auto start = std::chrono::steady_clock::now();
    const nlohmann::json doc = run_compare(o->cmp);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!o->common.quiet) {
      const StabilityStudy study = study_from_json(doc);
      for (const char* metric : {"pwmcc", "matched_mean_cos"}) {
        const MetricStudy& m = study.metric(metric);
        std::printf("%s: trained %.4f [%.4f, %.4f]\n", metric, m.trained.estimate, m.trained.bca.lo,
                    m.trained.bca.hi);
        for (const GroupComparison& c : m.comparisons) {
          std::printf("  %s%s\n", verdict_text(c, study.confidence).c_str(),
                      c.group == m.decision_null ? "  [decision null]" : "");
        }
      }
      std::printf("wrote %s/stability.json and summary.md (%.2f s)\n", o->cmp.out_dir.c_str(), seconds);
    }
    return 0;
  };
}

}  // namespace husai::cli
