// compare: how alike are SAEs that differ only in their seed, and is that more than chance?

#include <chrono>
#include <cstdio>
#include <memory>
#include <sstream>

#include "commands.hpp"
#include "common.hpp"
#include "husai/core/error.hpp"
#include "husai/experiments/compare.hpp"

namespace husai::cli {

Runner register_compare(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "compare",
      "Stability across seeds: pairwise similarity of two or more SAEs (SAELens or sparsify folders, same "
      "d_in) for the decoder rows and the encoder columns (pwmcc, matched_mean_cos = Hungarian PW-MCC, "
      "shared "
      "fractions), per-feature stability, null baselines (gaussian, untrained, covariance) and seed-level "
      "statistics (seed bootstrap CIs, permutation tests over seed labels, Holm). Writes OUT/stability.json, "
      "summary.md, pairs.csv, per_feature.csv, figures and manifest.json.");
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
                  "comma-separated nulls: gaussian, untrained, covariance (default: gaussian,untrained, plus "
                  "covariance with --activations)");
  sub->add_option("--null-seeds", o->cmp.null_seeds,
                  "null dictionaries per null (seeds 1000, 1001, ...; default: as many as SAE folders)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--activations", o->cmp.activations_path,
                  "activation file the SAEs were trained on (enables the covariance null)");
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
      std::stringstream ss(o->nulls);
      std::string item;
      while (std::getline(ss, item, ',')) {
        if (!item.empty()) o->cmp.nulls.push_back(item);
      }
      if (o->cmp.nulls.empty()) throw Error("--null needs at least one of gaussian, untrained, covariance");
    }
    const auto start = std::chrono::steady_clock::now();
    const nlohmann::json doc = run_compare(o->cmp);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!o->common.quiet) {
      const nlohmann::json& s = doc["summary"];
      for (const char* metric : {"pwmcc", "matched_mean_cos"}) {
        const nlohmann::json& t = s[metric]["trained"];
        std::printf("%s: trained %.4f [%.4f, %.4f]\n", metric, t["mean"].get<double>(),
                    t["ci_bca"][0].is_number() ? t["ci_bca"][0].get<double>() : t["mean"].get<double>(),
                    t["ci_bca"][1].is_number() ? t["ci_bca"][1].get<double>() : t["mean"].get<double>());
        for (const auto& [name, ne] : s[metric]["nulls"].items()) {
          std::printf("  %s\n", ne["verdict"].get<std::string>().c_str());
        }
      }
      if (doc["primary_null"].is_object()) {
        std::printf("null for decisions: %s\n", doc["primary_null"]["name"].get<std::string>().c_str());
      }
      std::printf("wrote %s/stability.json and summary.md (%.2f s)\n", o->cmp.out_dir.c_str(), seconds);
    }
    return 0;
  };
}

}  // namespace husai::cli
