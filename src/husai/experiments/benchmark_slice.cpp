#include "husai/experiments/benchmark_slice.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include <fmt/format.h>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/core/text.hpp"
#include "husai/io/activations.hpp"
#include "husai/io/gnuplot.hpp"
#include "husai/io/json_values.hpp"
#include "husai/io/manifest.hpp"
#include "husai/io/run_dir.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/metrics/causal.hpp"
#include "husai/metrics/fourier.hpp"
#include "husai/metrics/probing.hpp"
#include "husai/metrics/sae_eval.hpp"
#include "husai/metrics/splice.hpp"
#include "husai/metrics/stability.hpp"
#include "husai/model/model_io.hpp"
#include "husai/model/params.hpp"
#include "husai/sae/saelens_io.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;
constexpr int kSchemaVersion = 1;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

nlohmann::json number(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

// Four significant digits: SAEBench core keys span many scales (mse ~1e-5, l1 ~ 10s).
std::string fmt_sig(const nlohmann::json& j) {
  return j.is_number() ? fmt::format("{:.4g}", j.get<double>()) : std::string("n/a");
}

}  // namespace

nlohmann::json run_benchmark_slice(const BenchmarkSliceOptions& o) {
  if (o.sae_dirs.empty()) throw Error("benchmark-slice needs at least one SAE");
  const LoadedModel model = load_model_dir(o.model_dir);
  const ActivationFile acts = load_activation_file(o.activations_path, o.activations_key);
  if (acts.metadata.count("model_sha256") && acts.metadata.at("model_sha256") != model.model_sha256) {
    throw Error("the activations were extracted from another model").file(o.activations_path);
  }
  const SafetensorsFile raw = SafetensorsFile::load(o.activations_path);
  const std::vector<int64_t> a = raw.get("a").to_i64(), b = raw.get("b").to_i64(),
                             c = raw.get("labels").to_i64();
  const std::vector<int64_t> is_train = raw.get("is_train").to_i64();
  const int64_t N = acts.n_rows, D = acts.d_in, p = model.task.modulus;
  if (static_cast<int64_t>(a.size()) != N)
    throw Error("a has another length than the activations").file(o.activations_path);
  const SpliceSpec spec = splice_spec_from_metadata(acts.metadata);
  std::vector<SaeModel> saes;
  for (const std::string& dir : o.sae_dirs) {
    saes.push_back(load_sae(dir));
    if (saes.back().d_in != D) throw Error("SAE d_in differs from the activations").file(dir);
  }
  if (o.standalone) {
    prepare_output_dir(o.out_dir, o.overwrite ? ExistingOutput::Overwrite : ExistingOutput::Refuse);
  }

  // Transformer-level references: full-activation probes and the key-frequency subspace.
  const std::vector<ProbeLabel> labels = modular_probe_labels(a, b, c, p);
  LogisticOptions logistic;
  logistic.l2 = o.probe_l2;
  logistic.max_iter = static_cast<int>(o.probe_max_iter);
  const nlohmann::json full_probe = full_activation_probing(acts.x.data(), N, D, labels, is_train, logistic);
  const ParamViews<float> pv = make_views(model.cfg, model.layout, const_cast<float*>(model.params.data()));
  const std::vector<double> power = embedding_frequency_power(pv.W_E, p, model.cfg.d_model);
  const std::vector<int64_t> keys = key_frequencies(power, o.n_key_frequencies);
  const FourierSubspace subspace = fourier_subspace(acts.x.data(), N, D, a, b, c, p, keys);

  std::vector<std::vector<double>> stability = o.stability;
  if (!stability.empty()) {
    if (stability.size() != saes.size())
      throw Error("benchmark-slice: one stability vector per SAE is needed");
    for (size_t s = 0; s < saes.size(); ++s) {
      if (static_cast<int64_t>(stability[s].size()) != saes[s].d_sae) {
        throw Error("benchmark-slice: stability of SAE " + std::to_string(s) + " has the wrong length");
      }
    }
  } else if (saes.size() >= 2) {
    std::vector<FeatureSet> sets;
    sets.reserve(saes.size());
    for (const SaeModel& s : saes) sets.push_back(decoder_features(s));
    std::vector<const FeatureSet*> ptrs;
    ptrs.reserve(sets.size());
    for (const FeatureSet& f : sets) ptrs.push_back(&f);
    const int64_t n = static_cast<int64_t>(sets.size());
    stability = per_feature_stability(n, pair_stabilities(ptrs, upper_pairs(n), true));
  }

  SparseProbingOptions probing;
  probing.k_values = o.probe_k;
  probing.logistic = logistic;
  CausalProxyOptions causal;
  causal.seed = o.seed;
  causal.random_repeats = o.causal_random_repeats;
  causal.quiet = true;
  nlohmann::json per_sae = nlohmann::json::array();
  std::string core_csv =
      "sae,l0,l1,mse,explained_variance,cossim,l2_ratio,relative_reconstruction_bias,ce_loss_score,kl_div_"
      "score,"
      "frac_alive\n";
  std::string probe_csv = "sae,label,k,test_accuracy,chance_accuracy\n";
  std::string fourier_csv = "sae,component,m,variance_recovered,random_baseline,mean_top_alignment\n";
  std::string causal_csv =
      "sae,condition,accuracy,ce_loss,delta_accuracy_vs_clean,delta_ce_vs_clean,ablated_l1_fraction\n";
  for (const auto& [name, j] : full_probe.items()) {
    probe_csv += fmt::format("full_activations,{},{},{:.17g},{:.17g}\n", name, D,
                             j["test_accuracy"].get<double>(), j["chance_accuracy"].get<double>());
  }
  std::vector<float> latents;
  for (size_t s = 0; s < saes.size(); ++s) {
    const SaeModel& sae = saes[s];
    const std::string& dir = o.sae_dirs[s];
    if (!o.quiet) fmt::print(stderr, "benchmark-slice: SAE {}/{} {}\n", s + 1, saes.size(), dir);
    const ReconstructionMetrics rec = sae_reconstruction_metrics(sae, acts.x.data(), N);
    std::vector<float> scratch;
    const ReconstructFn reconstruct = [&](const float* x, int64_t n, float* x_hat) {
      scratch.resize(static_cast<size_t>(n * sae.d_sae));
      sae.encode(x, n, scratch.data());
      sae.decode(scratch.data(), n, x_hat);
    };
    // CE/KL scores only where the spliced activations can reach the answer (else NaN, written null).
    SpliceMetrics sm;
    sm.ce_loss_score = sm.kl_div_score = kNaN;
    if (splice_affects_answer(model, spec)) sm = splice_metrics(model, spec, reconstruct, true);
    const std::vector<double> density = rec.feature_density();
    nlohmann::json core = {{"l0", number(rec.l0)},
                           {"l1", number(rec.l1)},
                           {"mse", number(rec.mse)},
                           {"explained_variance", number(rec.explained_variance)},
                           {"cossim", number(rec.cossim)},
                           {"l2_ratio", number(rec.l2_ratio)},
                           {"relative_reconstruction_bias", number(rec.relative_reconstruction_bias)},
                           {"ce_loss_score", number(sm.ce_loss_score)},
                           {"kl_div_score", number(sm.kl_div_score)},
                           {"frac_alive", number(1.0 - rec.frac_dead)},
                           {"feature_density", density}};
    core_csv +=
        fmt::format("{},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g}\n", s,
                    rec.l0, rec.l1, rec.mse, rec.explained_variance, rec.cossim, rec.l2_ratio,
                    rec.relative_reconstruction_bias, sm.ce_loss_score, sm.kl_div_score, 1.0 - rec.frac_dead);
    latents.resize(static_cast<size_t>(N * sae.d_sae));
    sae.encode(acts.x.data(), N, latents.data());
    const nlohmann::json probe = sparse_probing(latents.data(), N, sae.d_sae, labels, is_train, probing);
    for (const auto& [name, j] : probe.items()) {
      for (const auto& [k, r] : j["top_k"].items()) {
        probe_csv += fmt::format("{},{},{},{:.17g},{:.17g}\n", s, name, k, r["test_accuracy"].get<double>(),
                                 j["chance_accuracy"].get<double>());
      }
    }
    const nlohmann::json fourier = fourier_recovery_json(subspace, sae.W_dec.data(), sae.d_sae, o.fourier_m);
    for (const auto& r : fourier["key_subspace"]) {
      fourier_csv += fmt::format("{},key_subspace,{},{:.17g},{:.17g},{:.17g}\n", s, r["m"].get<int64_t>(),
                                 r["variance_recovered"].get<double>(), r["random_baseline"].get<double>(),
                                 r["mean_top_alignment"].get<double>());
    }
    for (const auto& r : fourier["per_frequency"]) {
      fourier_csv +=
          fmt::format("{},frequency_{},{},{:.17g},{:.17g},{:.17g}\n", s, r["frequency"].get<int64_t>(),
                      r["m"].get<int64_t>(), r["variance_recovered"].get<double>(),
                      r["random_baseline"].get<double>(), r["mean_top_alignment"].get<double>());
    }
    nlohmann::json causal_json = nullptr;
    if (!stability.empty() && splice_affects_answer(model, spec)) {
      causal.m = std::min<int64_t>(o.causal_m, sae.d_sae);
      causal_json = causal_proxy(model, spec, sae, stability[s], acts.x.data(), N, causal);
      for (const auto& [cond, r] : causal_json["conditions"].items()) {
        causal_csv += fmt::format(
            "{},{},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g}\n", s, cond, r["accuracy"].get<double>(),
            r["ce_loss"].get<double>(), r["delta_accuracy_vs_clean"].get<double>(),
            r["delta_ce_vs_clean"].get<double>(), r["ablated_l1_fraction"].get<double>());
      }
    }
    per_sae.push_back(
        {{"path", dir},
         {"architecture", sae.architecture},
         {"d_sae", sae.d_sae},
         {"k", sae.k},
         {"saebench_core", core},
         {"splice", sm.to_json()},
         {"sparse_probing", probe},
         {"fourier", fourier},
         {"mean_feature_stability",
          stability.empty() ? nlohmann::json(nullptr) : nlohmann::json(mean_or_nan(stability[s]))},
         {"causal_proxy", causal_json}});
  }

  // Means over the SAEs of the headline numbers.
  auto mean_path = [&](const std::vector<std::string>& path) {
    std::vector<double> v;
    for (const auto& s : per_sae) {
      const nlohmann::json* j = &s;
      for (const std::string& key : path) {
        if (!j->contains(key)) return nlohmann::json(nullptr);
        j = &(*j)[key];
      }
      if (!j->is_number()) return nlohmann::json(nullptr);
      v.push_back(j->get<double>());
    }
    return number(mean_or_nan(v));
  };
  nlohmann::json summary = nlohmann::json::object();
  for (const char* key : {"l0", "l1", "mse", "explained_variance", "cossim", "l2_ratio",
                          "relative_reconstruction_bias", "ce_loss_score", "kl_div_score", "frac_alive"}) {
    summary["saebench_core"][key] = mean_path({"saebench_core", key});
  }
  for (const ProbeLabel& l : labels) {
    for (const int64_t k : o.probe_k) {
      summary["sparse_probing"][l.name][std::to_string(k)] =
          mean_path({"sparse_probing", l.name, "top_k", std::to_string(k), "test_accuracy"});
    }
    summary["sparse_probing"][l.name]["full"] = full_probe[l.name]["test_accuracy"];
  }
  summary["fourier_variance_recovered"] = nlohmann::json::array();
  for (size_t i = 0; i < o.fourier_m.size(); ++i) {
    std::vector<double> v;
    for (const auto& s : per_sae)
      v.push_back(s["fourier"]["key_subspace"][i]["variance_recovered"].get<double>());
    summary["fourier_variance_recovered"].push_back(
        {{"m", per_sae[0]["fourier"]["key_subspace"][i]["m"]},
         {"mean", number(mean_or_nan(v))},
         {"random_baseline", per_sae[0]["fourier"]["key_subspace"][i]["random_baseline"]}});
  }
  for (const char* cond : {"reconstruction_only", "most_stable", "least_stable", "random"}) {
    summary["causal_proxy"][cond]["delta_accuracy_vs_clean"] =
        mean_path({"causal_proxy", "conditions", cond, "delta_accuracy_vs_clean"});
    summary["causal_proxy"][cond]["delta_ce_vs_clean"] =
        mean_path({"causal_proxy", "conditions", cond, "delta_ce_vs_clean"});
  }

  nlohmann::json results = {
      {"schema_version", kSchemaVersion},
      {"experiment", "benchmark-slice"},
      {"model", {{"path", o.model_dir}, {"sha256", model.model_sha256}}},
      {"activations",
       {{"path", o.activations_path}, {"sha256", acts.sha256}, {"hook_name", acts.hook_name}, {"n_rows", N}}},
      {"settings",
       {{"probe_k", o.probe_k},
        {"probe_l2", o.probe_l2},
        {"probe_max_iter", o.probe_max_iter},
        {"n_key_frequencies", o.n_key_frequencies},
        {"fourier_m", o.fourier_m},
        {"causal_m", o.causal_m},
        {"causal_random_repeats", o.causal_random_repeats},
        {"seed", o.seed}}},
      {"full_activation_probing", full_probe},
      {"fourier_subspace", fourier_subspace_json(subspace, power)},
      {"saes", per_sae},
      {"summary", summary}};
  for (const auto& [k, v] : o.extra.items()) results[k] = v;
  const std::string& out = o.out_dir;
  write_file_atomic(path_join(out, "results.json"), results.dump(2) + "\n");
  write_file_atomic(path_join(out, "saebench_core.csv"), core_csv);
  write_file_atomic(path_join(out, "sparse_probing.csv"), probe_csv);
  write_file_atomic(path_join(out, "fourier.csv"), fourier_csv);
  write_file_atomic(path_join(out, "causal_proxy.csv"), causal_csv);

  std::string md = "# benchmark-slice\n\n";
  md += fmt::format("Model `{}`, activations `{}` ({} rows, hook {}), {} SAE(s).\n\n", o.model_dir,
                    o.activations_path, N, acts.hook_name, saes.size());
  md += "## SAEBench core (mean over SAEs; all rows, CE/KL over all pairs)\n\n| key | value |\n|---|---|\n";
  for (const auto& [k, v] : summary["saebench_core"].items())
    md += fmt::format("| {} | {} |\n", k, fmt_sig(v));
  md += "\n## Sparse probing (test accuracy on the transformer's held-out pairs)\n\n| label |";
  for (const int64_t k : o.probe_k) md += fmt::format(" top {} |", k);
  md += " full activations | chance |\n|---|";
  for (size_t i = 0; i < o.probe_k.size() + 2; ++i) md += "---|";
  md += "\n";
  for (const ProbeLabel& l : labels) {
    md += "| " + l.name + " |";
    for (const int64_t k : o.probe_k)
      md += " " + fmt_json(summary["sparse_probing"][l.name][std::to_string(k)]) + " |";
    md += " " + fmt_json(full_probe[l.name]["test_accuracy"]) + " | " +
          fmt_json(full_probe[l.name]["chance_accuracy"]) + " |\n";
  }
  const nlohmann::json fs_json = fourier_subspace_json(subspace, power);
  md += fmt::format(
      "\n## Fourier ground truth\n\nKey frequencies (embedding power): {}; they hold {:.3f} of the "
      "embedding's "
      "non-constant Fourier power and explain {:.3f} of the activations' variance (subspace rank {}).\n\n",
      nlohmann::json(keys).dump(), fs_json["key_power_fraction"].get<double>(), subspace.fourier_fraction(),
      subspace.all.rank);
  md += "| m | variance recovered (mean over SAEs) | random m-dim subspace |\n|---|---|---|\n";
  for (const auto& r : summary["fourier_variance_recovered"]) {
    md +=
        fmt::format("| {} | {} | {} |\n", r["m"].dump(), fmt_json(r["mean"]), fmt_json(r["random_baseline"]));
  }
  md += fmt::format("\n## Causal proxy (m = {} latents ablated; change against the clean model)\n\n",
                    o.causal_m);
  if (stability.empty()) {
    md += "Not run: per-feature stability needs two or more SAEs.\n";
  } else {
    md += "| condition | delta accuracy | delta CE (nats) |\n|---|---|---|\n";
    for (const auto& [cond, v] : summary["causal_proxy"].items()) {
      md += fmt::format("| {} | {} | {} |\n", cond, fmt_json(v["delta_accuracy_vs_clean"]),
                        fmt_json(v["delta_ce_vs_clean"]));
    }
  }
  write_file_atomic(path_join(out, "summary.md"), md);

  std::vector<std::string> figures;
  if (o.figures) {
    std::string body = "$d << EOD\n";
    for (const ProbeLabel& l : labels) {
      body += l.name;
      for (const int64_t k : o.probe_k) {
        const nlohmann::json& v = summary["sparse_probing"][l.name][std::to_string(k)];
        body += " " + (v.is_number() ? fmt::format("{:.6f}", v.get<double>()) : std::string("NaN"));
      }
      body += fmt::format(" {:.6f}\n", full_probe[l.name]["test_accuracy"].get<double>());
    }
    body +=
        "EOD\nset style data histogram\nset style histogram clustered gap 1\nset style fill solid 0.8\n"
        "set yrange [0:1.05]\nset ylabel 'test accuracy'\nset title 'Sparse probing: top-k latents vs full "
        "activations'\nset key top left\n";
    std::string plot = "plot ";
    for (size_t i = 0; i < o.probe_k.size(); ++i) {
      plot += fmt::format("$d using {}:xtic(1) title 'top {}', ", i + 2, o.probe_k[i]);
    }
    plot += fmt::format("$d using {} title 'full activations'\n", o.probe_k.size() + 2);
    render_figure(body + plot, path_join(out, "sparse_probing.png"), path_join(out, "sparse_probing.svg"));
    figures = {"sparse_probing.png", "sparse_probing.svg"};
    if (!stability.empty()) {
      std::string cb = "$d << EOD\n";
      for (const auto& [cond, v] : summary["causal_proxy"].items()) {
        cb += fmt::format("{} {}\n", cond,
                          v["delta_ce_vs_clean"].is_number()
                              ? fmt::format("{:.6f}", v["delta_ce_vs_clean"].get<double>())
                              : std::string("NaN"));
      }
      cb +=
          "EOD\nset style fill solid 0.8\nset boxwidth 0.6\nset ylabel 'CE change vs clean (nats)'\n"
          "set title 'Causal proxy: ablating stable vs unstable latents'\nset xtics noenhanced\n"
          "plot $d using 0:2:xtic(1) with boxes notitle\n";
      render_figure(cb, path_join(out, "causal_proxy.png"), path_join(out, "causal_proxy.svg"));
      figures.push_back("causal_proxy.png");
      figures.push_back("causal_proxy.svg");
    }
  }

  if (!o.standalone) return results;
  Manifest manifest;
  manifest.command = command_line();
  manifest.add_input(path_join(o.model_dir, "model.safetensors"));
  manifest.add_input(o.activations_path);
  for (const std::string& dir : o.sae_dirs) manifest.add_input(path_join(dir, "sae_weights.safetensors"));
  for (const char* name : {"results.json", "saebench_core.csv", "sparse_probing.csv", "fourier.csv",
                           "causal_proxy.csv", "summary.md"}) {
    manifest.add_output(out, name);
  }
  for (const std::string& f : figures) manifest.add_output(out, f);
  manifest.write(out);
  return results;
}

}  // namespace husai
