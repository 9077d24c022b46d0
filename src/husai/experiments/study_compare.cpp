// compare_seeds (study.hpp) in its own object file: the one piece of the shared study code that runs
// `husai compare`, so tools that only read results (audit) do not pull compare in.

#include <filesystem>

#include "husai/core/text.hpp"
#include "husai/experiments/compare.hpp"
#include "husai/experiments/study.hpp"
#include "husai/train/sae_run.hpp"

namespace husai {

namespace fs = std::filesystem;

nlohmann::json compare_seeds(ExperimentContext& ctx, const std::string& sae_run_dir,
                             const std::vector<int64_t>& seeds, const std::string& activations_path,
                             const std::string& out_rel, const std::string& model_dir) {
  CompareOptions o;
  o.sae_dirs = SaeRunLayout(sae_run_dir).seed_dirs(seeds);
  const std::string nulls = ctx.config().get_string("compare.nulls");
  o.nulls = split_list(nulls);
  o.activations_path = activations_path;
  o.model_dir = model_dir;
  o.null_seeds = ctx.config().get_int("compare.null_seeds");
  if (ctx.config().get_string("compare.surrogate") != "none")
    o.surrogate = ctx.config().get_string("compare.surrogate");
  o.bootstrap = ctx.config().get_int("compare.bootstrap");
  o.confidence = ctx.config().get_double("compare.confidence");
  o.seed = static_cast<uint64_t>(ctx.config().get_int("compare.seed"));
  o.out_dir = ctx.path(out_rel);
  o.overwrite = true;
  o.figures = ctx.options().figures;
  o.quiet = true;
  return run_compare(o);
}

}  // namespace husai
