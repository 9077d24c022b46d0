// `husai experiment benchmark-slice`: the SAEs of one condition (cached train-sae run on the cached
// transformer's activations), `husai compare` on them (its per-feature stability drives the causal proxy),
// then run_benchmark_slice (benchmark_slice.hpp) writing into the run folder.

#include <filesystem>
#include <sstream>

#include <fmt/format.h>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/experiments/benchmark_slice.hpp"
#include "husai/experiments/catalog.hpp"
#include "husai/experiments/claims.hpp"
#include "husai/experiments/study.hpp"
#include "husai/train/sae_run.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

ConfigSchema benchmark_slice_schema() {
  ConfigSchema s;
  add_transformer_section(s);
  add_extract_section(s);
  add_sae_section(s);
  add_compare_section(s);
  s.add_bool("experiment.allow_ungrokked", false, "study a transformer that has not generalised (warns)");
  s.add_int_list("benchmark.seeds", nlohmann::json::array({42, 123, 456, 789, 1011}), "SAE seeds").min(0);
  s.add_string("benchmark.architecture", "topk", "SAE architecture of the condition (train-sae's)");
  s.add_int("benchmark.d_sae", 1024, "latents").min(1);
  s.add_int("benchmark.k", 32, "TopK active latents per row").min(1);
  s.add_int_list("benchmark.probe_k", nlohmann::json::array({1, 2, 5}), "sparse probes on the top k latents")
      .min(1);
  s.add_float("benchmark.probe_l2", 1e-4, "L2 penalty of the logistic probes").min(0);
  s.add_int("benchmark.probe_max_iter", 500, "L-BFGS iterations per probe").min(1);
  s.add_int("benchmark.n_key_frequencies", 5, "key frequencies (largest embedding power)").min(1);
  s.add_int_list("benchmark.fourier_m", nlohmann::json::array({0, 64}),
                 "decoder rows spanning the recovered subspace; 0 = the key subspace's rank")
      .min(0);
  s.add_int("benchmark.causal_m", 16, "latents ablated per causal condition").min(1);
  s.add_int("benchmark.causal_random_repeats", 3, "draws of the random-latents control").min(1);
  s.add_int("benchmark.causal_seed", 0, "Philox seed of the random control").min(0);
  s.add_check([](const Config& c) {
    if (c.get_int_list("benchmark.seeds").size() < 2) {
      c.fail("benchmark-slice needs at least two seeds (per-feature stability for the causal proxy)",
             {"benchmark.seeds"});
    }
  });
  return s;
}

// compare's per_feature.csv (sae,path,latent,stability,stability_enc): decoder stability per SAE and latent.
// Parsed from the right, since the path column may be quoted and hold commas.
std::vector<std::vector<double>> read_per_feature_stability(const std::string& csv_path, size_t n_saes) {
  std::vector<std::vector<double>> out(n_saes);
  std::istringstream in(read_file(csv_path));
  std::string line;
  std::getline(in, line);  // header
  int64_t line_no = 1;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    const size_t c_enc = line.rfind(',');
    const size_t c_dec = c_enc == std::string::npos ? c_enc : line.rfind(',', c_enc - 1);
    const size_t c_lat = c_dec == std::string::npos ? c_dec : line.rfind(',', c_dec - 1);
    const size_t c_sae = line.find(',');
    if (c_lat == std::string::npos || c_sae == std::string::npos || c_sae >= c_lat)
      throw Error("malformed per-feature row").file(csv_path).line(line_no);
    const size_t sae = std::stoul(line.substr(0, c_sae));
    const size_t latent = std::stoul(line.substr(c_lat + 1, c_dec - c_lat - 1));
    if (sae >= n_saes || latent != out[sae].size())
      throw Error("per-feature rows out of order").file(csv_path).line(line_no);
    out[sae].push_back(std::stod(line.substr(c_dec + 1, c_enc - c_dec - 1)));
  }
  return out;
}

int run_benchmark_slice_experiment(ExperimentContext& ctx) {
  const Config& c = ctx.config();
  const Upstream up = prepare_upstream(ctx, c.get_bool("experiment.allow_ungrokked"));
  const auto seeds = c.get_int_list("benchmark.seeds");
  SaeSettings settings;
  settings.architecture = c.get_string("benchmark.architecture");
  settings.d_sae = c.get_int("benchmark.d_sae");
  settings.k = c.get_int("benchmark.k");
  settings.seeds = seeds;
  const Config sc = sae_config_with(c, settings);
  const std::string sae_dir = ctx.sae_run(sc, up.activations_path);
  const std::string metric = c.get_string("compare.metric");
  // compare is the expensive, resumable unit; the slice itself is deterministic and rerun on --resume.
  const nlohmann::json cmp = ctx.condition("compare", [&] {
    ctx.log("husai compare on " + std::to_string(seeds.size()) + " seeds");
    const nlohmann::json stab = compare_seeds(ctx, sae_dir, seeds, up.activations_path, "compare");
    return nlohmann::json{{"stability_file", "compare/stability.json"},
                          {"stability", to_json(summarize_stability(stab, metric))}};
  });
  const std::vector<std::vector<double>> per_feature =
      read_per_feature_stability(ctx.path("compare/per_feature.csv"), seeds.size());

  BenchmarkSliceOptions o;
  o.model_dir = up.transformer_dir;
  o.activations_path = up.activations_path;
  for (const int64_t seed : seeds) o.sae_dirs.push_back(SaeRunLayout(sae_dir).seed_dir(seed));
  o.out_dir = ctx.run_dir();
  o.standalone = false;
  o.probe_k = c.get_int_list("benchmark.probe_k");
  o.probe_l2 = c.get_double("benchmark.probe_l2");
  o.probe_max_iter = c.get_int("benchmark.probe_max_iter");
  o.n_key_frequencies = c.get_int("benchmark.n_key_frequencies");
  o.fourier_m = c.get_int_list("benchmark.fourier_m");
  o.causal_m = c.get_int("benchmark.causal_m");
  o.causal_random_repeats = c.get_int("benchmark.causal_random_repeats");
  o.seed = static_cast<uint64_t>(c.get_int("benchmark.causal_seed"));
  o.figures = ctx.options().figures;
  o.quiet = ctx.quiet();
  o.stability = per_feature;
  const StabilitySummary s = stability_from_json(cmp["stability"]);
  o.extra = {{"run_id", ctx.run_id()},
             {"transformer", up.transformer},
             {"seeds", seeds},
             {"sae_run", sae_dir},
             {"stability_source", "compare/per_feature.csv (decoder)"},
             {"stability", cmp["stability"]},
             {"stability_file", cmp["stability_file"]},
             {"claims", nlohmann::json::array({make_stability_claim(
                            "benchmark-slice.above_null",
                            "the benchmarked SAEs are more alike across seeds than the null",
                            cmp["stability_file"].get<std::string>(), metric, s)})}};
  ctx.log("benchmark-slice on " + std::to_string(seeds.size()) + " SAEs");
  const nlohmann::json r = run_benchmark_slice(o);

  const nlohmann::json& sum = r["summary"];
  for (const auto& [key, v] : sum["saebench_core"].items()) {
    if (v.is_number()) ctx.metric("saebench_core." + key, v.get<double>());
  }
  for (const auto& [cond, v] : sum["causal_proxy"].items()) {
    if (v["delta_ce_vs_clean"].is_number())
      ctx.metric("causal.delta_ce_vs_clean", v["delta_ce_vs_clean"].get<double>(), cond);
    if (v["delta_accuracy_vs_clean"].is_number())
      ctx.metric("causal.delta_accuracy_vs_clean", v["delta_accuracy_vs_clean"].get<double>(), cond);
  }
  for (const auto& f : sum["fourier_variance_recovered"]) {
    if (f["mean"].is_number())
      ctx.metric("fourier.variance_recovered", f["mean"].get<double>(), "m" + f["m"].dump());
  }
  ctx.metric(metric + ".delta", s.delta);
  ctx.metric(metric + ".delta_lo", s.delta_lo);
  // The stability line of summary.md, after the slice's tables.
  std::string md = read_file(ctx.path("summary.md"));
  md += fmt::format(
      "\n## Seed stability (husai compare, `compare/`)\n\n`{}` trained {} {} vs {} null {} {}: difference {} "
      "{}; {}.\n",
      metric, fmt_num(s.trained), fmt_ci(s.trained_lo, s.trained_hi), s.null_name, fmt_num(s.null_mean),
      fmt_ci(s.null_lo, s.null_hi), fmt_num(s.delta), fmt_ci(s.delta_lo, s.delta_hi), s.verdict);
  md += surrogate_caveat(c);
  ctx.write_text("summary.md", md);
  return 0;
}

}  // namespace

ExperimentDef benchmark_slice_experiment() {
  return {"benchmark-slice",
          "SAEBench core keys, sparse probing, Fourier recovery and the causal proxy for one SAE condition",
          benchmark_slice_schema, run_benchmark_slice_experiment};
}

}  // namespace husai
