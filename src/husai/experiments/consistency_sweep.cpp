#include "husai/experiments/consistency_sweep.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include <fmt/format.h>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/core/gemm.hpp"
#include "husai/core/rng.hpp"
#include "husai/io/gnuplot.hpp"
#include "husai/io/manifest.hpp"
#include "husai/io/run_dir.hpp"
#include "husai/sae/saelens_io.hpp"
#include "husai/train/consistency.hpp"
#include "husai/train/sae_run.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;
constexpr int kSchemaVersion = 1;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string join(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read").file(path);
  return nlohmann::json::parse(in);
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (const double x : v) s += x;
  return v.empty() ? kNaN : s / static_cast<double>(v.size());
}

struct Pairwise {
  std::vector<double> values;  // i < j in seed order
  double mean = 0;
};
Pairwise pairwise(const std::vector<std::vector<float>>& decs, int64_t n, int64_t d) {
  Pairwise p;
  for (size_t i = 0; i < decs.size(); ++i) {
    for (size_t j = i + 1; j < decs.size(); ++j) p.values.push_back(decoder_pwmcc(decs[i], n, decs[j], n, d));
  }
  p.mean = mean_of(p.values);
  return p;
}

Config base_config(const ConsistencySweepOptions& o) {
  Config c(sae_config_schema());
  if (!o.sae_config.empty()) c.merge_yaml_file(o.sae_config);
  for (const std::string& s : o.sae_overrides) c.apply_override(s);
  return c;
}

}  // namespace

double decoder_pwmcc(const std::vector<float>& a, int64_t n_a, const std::vector<float>& b, int64_t n_b,
                     int64_t d) {
  const std::vector<float> ua = make_consistency_reference(a.data(), n_a, d).unit_rows;
  const std::vector<float> ub = make_consistency_reference(b.data(), n_b, d).unit_rows;
  std::vector<float> cos(static_cast<size_t>(n_a * n_b));
  gemm<float>(false, true, n_a, n_b, d, 1.0f, ua.data(), d, ub.data(), d, 0.0f, cos.data(), n_b);
  std::vector<float> col_best(static_cast<size_t>(n_b), 0.0f);
  double row_sum = 0;
  for (int64_t i = 0; i < n_a; ++i) {
    float best = 0;
    for (int64_t j = 0; j < n_b; ++j) {
      const float v = std::abs(cos[static_cast<size_t>(i * n_b + j)]);
      best = std::max(best, v);
      col_best[static_cast<size_t>(j)] = std::max(col_best[static_cast<size_t>(j)], v);
    }
    row_sum += static_cast<double>(best);
  }
  double col_sum = 0;
  for (const float v : col_best) col_sum += static_cast<double>(v);
  return 0.5 * (row_sum / static_cast<double>(n_a) + col_sum / static_cast<double>(n_b));
}

nlohmann::json run_consistency_sweep(const ConsistencySweepOptions& o) {
  if (o.seeds.size() < 2) throw Error("consistency-sweep needs at least two evaluated seeds").key("seeds");
  if (std::find(o.seeds.begin(), o.seeds.end(), o.reference_seed) != o.seeds.end()) {
    throw Error("the reference seed " + std::to_string(o.reference_seed) +
                " is one of the evaluated seeds; the reference must stay out of the evaluated pairs")
        .key("reference_seed");
  }
  if (o.lambda_ratios.empty() || o.lambda_ratios.front() != 0.0) {
    throw Error("the lambda grid must start with 0 (the unpenalised control)").key("lambda_ratios");
  }
  const Config base = base_config(o);  // validates the SAE config before anything is trained
  const ExistingOutput existing =
      o.overwrite ? ExistingOutput::Overwrite : (o.resume ? ExistingOutput::Resume : ExistingOutput::Refuse);
  prepare_output_dir(o.out_dir, existing);
  auto seeds_json = [](const std::vector<uint64_t>& s) { return nlohmann::json(s); };
  const auto train_run = [&](const Config& cfg, const std::string& name) {
    if (o.train_run) return o.train_run(cfg, name);
    TrainSaeOptions topt;
    topt.activations_path = o.activations_path;
    topt.quiet = o.quiet;
    topt.out_dir = join(o.out_dir, name);
    topt.existing = ExistingOutput::Resume;  // OUT is ours: a folder there is an earlier attempt
    if (!train_sae(cfg, topt).completed)
      throw Error("interrupted while training " + name + "; rerun with --resume");
    return topt.out_dir;
  };

  // 1. The reference, on its own seed.
  Config ref_cfg = base;
  ref_cfg.set("training.seeds", seeds_json({o.reference_seed}), "consistency-sweep reference_seed");
  ref_cfg.validate();
  const std::string ref_run = train_run(ref_cfg, "reference");
  const std::string ref_dir = join(ref_run, "seed" + std::to_string(o.reference_seed));
  const nlohmann::json ref_metrics = read_json(join(ref_dir, "metrics.json"));
  const SaeModel reference = load_sae(ref_dir);
  const int64_t D = reference.d_in, L = reference.d_sae;
  const double scale = ref_metrics.at("activation_scaling_factor").get<double>();
  const double mse_ref =
      ref_metrics.at("held_out").at("mse").get<double>() * static_cast<double>(D) * scale * scale;
  const ConsistencyReference ref_rows = make_consistency_reference(reference.W_dec.data(), L, D);

  // Gaussian null of the same shape: one dictionary per evaluated seed.
  std::vector<std::vector<float>> null_decs;
  for (size_t s = 0; s < o.seeds.size(); ++s) {
    const Philox rng(o.null_seed + s, stream_id("consistency.null"));
    std::vector<float> w(static_cast<size_t>(L * D));
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(rng.normal(i));
    null_decs.push_back(std::move(w));
  }
  const Pairwise null_pairs = pairwise(null_decs, L, D);

  // 2-3. Penalised SAEs per ratio, evaluated among the evaluated seeds only.
  nlohmann::json rows = nlohmann::json::array();
  std::string sweep_csv =
      "ratio,lambda,mean_pairwise_pwmcc,null_pwmcc,delta,mean_alignment_to_reference,"
      "mean_explained_variance,ev_drop,eligible\n";
  std::string pairs_csv = "ratio,seed_a,seed_b,pwmcc\n";
  Manifest manifest;
  manifest.command = command_line();
  manifest.config_hash = base.hash();
  manifest.add_input(o.activations_path);
  double ev0 = kNaN;
  for (size_t r = 0; r < o.lambda_ratios.size(); ++r) {
    const double ratio = o.lambda_ratios[r];
    const double lambda = ratio * mse_ref;
    Config cfg = base;
    cfg.set("training.seeds", seeds_json(o.seeds), "consistency-sweep seeds");
    if (lambda > 0) {
      cfg.set("consistency.reference", ref_dir, "consistency-sweep reference");
      cfg.set("consistency.lambda", lambda, "consistency-sweep lambda");
    }
    cfg.validate();
    if (!o.quiet) fmt::print(stderr, "consistency-sweep: ratio {} (lambda {:.4g})\n", ratio, lambda);
    const std::string run_dir = train_run(cfg, fmt::format("ratio_{}", r));
    std::vector<std::vector<float>> decs;
    std::vector<double> align, ev;
    for (const uint64_t seed : o.seeds) {
      const std::string dir = join(run_dir, "seed" + std::to_string(seed));
      const SaeModel m = load_sae(dir);
      ConsistencyWorkspace<float> ws;
      align.push_back(consistency_alignment<float>(m.W_dec.data(), m.d_sae, ref_rows, 0.0, nullptr, ws));
      ev.push_back(
          read_json(join(dir, "metrics.json")).at("held_out").at("explained_variance").get<double>());
      decs.push_back(m.W_dec);
      manifest.add_input(join(dir, "sae_weights.safetensors"));
    }
    const Pairwise pw = pairwise(decs, L, D);
    size_t k = 0;
    for (size_t i = 0; i < o.seeds.size(); ++i) {
      for (size_t j = i + 1; j < o.seeds.size(); ++j) {
        pairs_csv += fmt::format("{},{},{},{:.17g}\n", ratio, o.seeds[i], o.seeds[j], pw.values[k++]);
      }
    }
    const double mean_ev = mean_of(ev);
    if (r == 0) ev0 = mean_ev;
    const double drop = ev0 - mean_ev;
    const bool eligible = drop <= o.max_ev_drop;
    rows.push_back({{"ratio", ratio},
                    {"lambda", lambda},
                    {"run", run_dir},
                    {"pairwise_pwmcc", pw.values},
                    {"mean_pairwise_pwmcc", pw.mean},
                    {"null_pwmcc", null_pairs.mean},
                    {"delta_vs_null", pw.mean - null_pairs.mean},
                    {"alignment_to_reference", align},
                    {"mean_alignment_to_reference", mean_of(align)},
                    {"explained_variance", ev},
                    {"mean_explained_variance", mean_ev},
                    {"ev_drop", drop},
                    {"eligible", eligible}});
    sweep_csv +=
        fmt::format("{},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{}\n", ratio, lambda, pw.mean,
                    null_pairs.mean, pw.mean - null_pairs.mean, mean_of(align), mean_ev, drop, eligible);
  }

  // 4. Selection.
  int64_t best = -1;
  for (size_t r = 0; r < rows.size(); ++r) {
    if (!rows[r]["eligible"].get<bool>()) continue;
    if (best < 0 || rows[r]["delta_vs_null"].get<double>() >
                        rows[static_cast<size_t>(best)]["delta_vs_null"].get<double>()) {
      best = static_cast<int64_t>(r);
    }
  }
  const nlohmann::json& pick = rows[static_cast<size_t>(best)];  // r = 0 is always eligible
  nlohmann::json results = {
      {"schema_version", kSchemaVersion},
      {"experiment", "consistency-sweep"},
      {"activations", o.activations_path},
      {"sae_config", base.resolved()},
      {"reference",
       {{"seed", o.reference_seed},
        {"path", ref_dir},
        {"held_out_explained_variance", ref_metrics["held_out"]["explained_variance"]},
        {"mse_ref_trainer_units", mse_ref},
        {"excluded_from_pairs", true}}},
      {"seeds", o.seeds},
      {"null", {{"kind", "gaussian"}, {"seeds_from", o.null_seed}, {"pairwise_pwmcc", null_pairs.values}}},
      {"lambda_rule",
       "lambda = ratio * mse_ref, mse_ref = held_out.mse * d_in * activation_scaling_factor^2"},
      {"max_ev_drop", o.max_ev_drop},
      {"sweep", rows},
      {"selected",
       {{"ratio", pick["ratio"]},
        {"lambda", pick["lambda"]},
        {"delta_vs_null", pick["delta_vs_null"]},
        {"ev_drop", pick["ev_drop"]},
        {"gain_over_unpenalised",
         pick["mean_pairwise_pwmcc"].get<double>() - rows[0]["mean_pairwise_pwmcc"].get<double>()}}}};
  write_file_atomic(join(o.out_dir, "results.json"), results.dump(2) + "\n");
  write_file_atomic(join(o.out_dir, "sweep.csv"), sweep_csv);
  write_file_atomic(join(o.out_dir, "pairs.csv"), pairs_csv);
  std::string md = "# consistency-sweep\n\n";
  md += fmt::format(
      "Reference SAE: seed {} (excluded from every evaluated pair), held-out EV {:.4f}, mse_ref {:.5g} "
      "(trainer "
      "units). Evaluated seeds: {}. lambda = ratio * mse_ref. Null: Gaussian dictionaries of the same shape, "
      "pairwise PWMCC {:.4f}.\n\n",
      o.reference_seed, ref_metrics["held_out"]["explained_variance"].get<double>(), mse_ref,
      nlohmann::json(o.seeds).dump(), null_pairs.mean);
  md +=
      "| ratio | lambda | PWMCC among seeds | - null | alignment to reference | EV | EV drop | eligible |\n"
      "|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    md += fmt::format(
        "| {} | {:.4g} | {:.4f} | {:+.4f} | {:.4f} | {:.4f} | {:+.4f} | {} |\n", r["ratio"].get<double>(),
        r["lambda"].get<double>(), r["mean_pairwise_pwmcc"].get<double>(), r["delta_vs_null"].get<double>(),
        r["mean_alignment_to_reference"].get<double>(), r["mean_explained_variance"].get<double>(),
        r["ev_drop"].get<double>(), r["eligible"].get<bool>() ? "yes" : "no");
  }
  md += fmt::format(
      "\nSelected ratio {} (largest trained - null PWMCC among ratios with EV drop <= {}): PWMCC gain over "
      "the "
      "unpenalised SAEs {:+.4f}. With {} seeds there are only {} pairs; read the gain against the spread of "
      "pairs.csv.\n",
      pick["ratio"].get<double>(), o.max_ev_drop, results["selected"]["gain_over_unpenalised"].get<double>(),
      o.seeds.size(), o.seeds.size() * (o.seeds.size() - 1) / 2);
  write_file_atomic(join(o.out_dir, "summary.md"), md);
  std::vector<std::string> outputs = {"results.json", "sweep.csv", "pairs.csv", "summary.md"};
  if (o.figures) {
    std::string body = "$d << EOD\n";
    for (const auto& r : rows) {
      body += fmt::format("{:.6g} {:.6f} {:.6f} {:.6f}\n", r["ratio"].get<double>(),
                          r["mean_pairwise_pwmcc"].get<double>(), r["mean_explained_variance"].get<double>(),
                          r["mean_alignment_to_reference"].get<double>());
    }
    body += fmt::format(
        "EOD\nset xlabel 'lambda / mse_ref'\nset ylabel 'value'\nset key bottom left\nset title 'Consistency "
        "sweep'\n"
        "plot $d using 1:2 with linespoints title 'PWMCC among seeds', $d using 1:3 with linespoints title "
        "'held-out EV', $d using 1:4 with linespoints title 'alignment to reference', {:.6f} with lines dt 2 "
        "title "
        "'Gaussian null PWMCC'\n",
        null_pairs.mean);
    render_figure(body, join(o.out_dir, "sweep.png"), join(o.out_dir, "sweep.svg"));
    outputs.push_back("sweep.png");
    outputs.push_back("sweep.svg");
  }
  for (const std::string& f : outputs) manifest.add_output(o.out_dir, f);
  manifest.extra["experiment"] = "consistency-sweep";
  manifest.write(o.out_dir);
  return results;
}

}  // namespace husai
