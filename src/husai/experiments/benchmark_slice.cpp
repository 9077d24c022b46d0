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

// What the slice reads: the model, its activations with the pairs' labels, the splice site, the SAEs.
struct SliceInputs {
  LoadedModel model;
  ActivationFile acts;
  std::vector<int64_t> a, b, c, is_train;
  SpliceSpec spec;
  std::vector<SaeModel> saes;
};

SliceInputs load_slice_inputs(const BenchmarkSliceOptions& o) {
  if (o.sae_dirs.empty()) throw Error("benchmark-slice needs at least one SAE");
  SliceInputs in;
  in.model = load_model_dir(o.model_dir);
  in.acts = load_activation_file(o.activations_path, o.activations_key);
  if (in.acts.metadata.count("model_sha256") &&
      in.acts.metadata.at("model_sha256") != in.model.model_sha256) {
    throw Error("the activations were extracted from another model").file(o.activations_path);
  }
  const SafetensorsFile raw = SafetensorsFile::load(o.activations_path);
  in.a = raw.get("a").to_i64();
  in.b = raw.get("b").to_i64();
  in.c = raw.get("labels").to_i64();
  in.is_train = raw.get("is_train").to_i64();
  if (static_cast<int64_t>(in.a.size()) != in.acts.n_rows)
    throw Error("a has another length than the activations").file(o.activations_path);
  in.spec = splice_spec_from_metadata(in.acts.metadata);
  for (const std::string& dir : o.sae_dirs) {
    in.saes.push_back(load_sae(dir));
    if (in.saes.back().d_in != in.acts.d_in) throw Error("SAE d_in differs from the activations").file(dir);
  }
  return in;
}

// Per-feature stability of each SAE: given, or computed across the SAEs' decoders (empty with one SAE).
std::vector<std::vector<double>> slice_stability(const BenchmarkSliceOptions& o,
                                                 const std::vector<SaeModel>& saes) {
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
  return stability;
}

// The transformer-level references every SAE is measured against.
// clang-tidy cannot prove that nlohmann::json's moves never throw (as in io/config.hpp).
// NOLINTNEXTLINE(bugprone-exception-escape)
struct SliceReferences {
  std::vector<ProbeLabel> labels;
  LogisticOptions logistic;
  nlohmann::json full_probe;
  std::vector<double> power;
  std::vector<int64_t> keys;
  FourierSubspace subspace;
};

SliceReferences slice_references(const BenchmarkSliceOptions& o, const SliceInputs& in) {
  SliceReferences r;
  const int64_t N = in.acts.n_rows, D = in.acts.d_in, p = in.model.task.modulus;
  r.labels = modular_probe_labels(in.a, in.b, in.c, p);
  r.logistic.l2 = o.probe_l2;
  r.logistic.max_iter = static_cast<int>(o.probe_max_iter);
  r.full_probe = full_activation_probing(in.acts.x.data(), N, D, r.labels, in.is_train, r.logistic);
  const ParamViews<float> pv =
      make_views(in.model.cfg, in.model.layout, const_cast<float*>(in.model.params.data()));
  r.power = embedding_frequency_power(pv.W_E, p, in.model.cfg.d_model);
  r.keys = key_frequencies(r.power, o.n_key_frequencies);
  r.subspace = fourier_subspace(in.acts.x.data(), N, D, in.a, in.b, in.c, p, r.keys);
  return r;
}

// The four CSV files, one row per (SAE, measurement), filled as the SAEs are evaluated.
struct SliceCsv {
  std::string core =
      "sae,l0,l1,mse,explained_variance,cossim,l2_ratio,relative_reconstruction_bias,ce_loss_score,kl_div_"
      "score,"
      "frac_alive\n";
  std::string probe = "sae,label,k,test_accuracy,chance_accuracy\n";
  std::string fourier = "sae,component,m,variance_recovered,random_baseline,mean_top_alignment\n";
  std::string causal =
      "sae,condition,accuracy,ce_loss,delta_accuracy_vs_clean,delta_ce_vs_clean,ablated_l1_fraction\n";
};

// SAEBench core keys of one SAE: reconstruction over all rows, CE/KL spliced over all pairs where the
// spliced activations can reach the answer (else NaN, written null).
nlohmann::json slice_core(const SliceInputs& in, const SaeModel& sae, size_t s, SpliceMetrics& sm,
                          SliceCsv& csv) {
  const int64_t N = in.acts.n_rows;
  const ReconstructionMetrics rec = sae_reconstruction_metrics(sae, in.acts.x.data(), N);
  std::vector<float> scratch;
  const ReconstructFn reconstruct = [&](const float* x, int64_t n, float* x_hat) {
    scratch.resize(static_cast<size_t>(n * sae.d_sae));
    sae.encode(x, n, scratch.data());
    sae.decode(scratch.data(), n, x_hat);
  };
  sm = SpliceMetrics{};
  sm.ce_loss_score = sm.kl_div_score = kNaN;
  if (splice_affects_answer(in.model, in.spec)) sm = splice_metrics(in.model, in.spec, reconstruct, true);
  const std::vector<double> density = rec.feature_density();
  csv.core +=
      fmt::format("{},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g}\n", s,
                  rec.l0, rec.l1, rec.mse, rec.explained_variance, rec.cossim, rec.l2_ratio,
                  rec.relative_reconstruction_bias, sm.ce_loss_score, sm.kl_div_score, 1.0 - rec.frac_dead);
  return {{"l0", number(rec.l0)},
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
}

void add_fourier_csv(const nlohmann::json& fourier, size_t s, SliceCsv& csv) {
  for (const auto& r : fourier["key_subspace"]) {
    csv.fourier += fmt::format("{},key_subspace,{},{:.17g},{:.17g},{:.17g}\n", s, r["m"].get<int64_t>(),
                               r["variance_recovered"].get<double>(), r["random_baseline"].get<double>(),
                               r["mean_top_alignment"].get<double>());
  }
  for (const auto& r : fourier["per_frequency"]) {
    csv.fourier +=
        fmt::format("{},frequency_{},{},{:.17g},{:.17g},{:.17g}\n", s, r["frequency"].get<int64_t>(),
                    r["m"].get<int64_t>(), r["variance_recovered"].get<double>(),
                    r["random_baseline"].get<double>(), r["mean_top_alignment"].get<double>());
  }
}

// Every measurement of SAE s: core keys, sparse probing, Fourier recovery, the causal proxy.
nlohmann::json evaluate_slice_sae(const BenchmarkSliceOptions& o, const SliceInputs& in,
                                  const SliceReferences& ref,
                                  const std::vector<std::vector<double>>& stability, size_t s,
                                  SliceCsv& csv) {
  const SaeModel& sae = in.saes[s];
  const std::string& dir = o.sae_dirs[s];
  const int64_t N = in.acts.n_rows;
  if (!o.quiet) fmt::print(stderr, "benchmark-slice: SAE {}/{} {}\n", s + 1, in.saes.size(), dir);
  SpliceMetrics sm;
  const nlohmann::json core = slice_core(in, sae, s, sm, csv);
  std::vector<float> latents(static_cast<size_t>(N * sae.d_sae));
  sae.encode(in.acts.x.data(), N, latents.data());
  SparseProbingOptions probing;
  probing.k_values = o.probe_k;
  probing.logistic = ref.logistic;
  const nlohmann::json probe = sparse_probing(latents.data(), N, sae.d_sae, ref.labels, in.is_train, probing);
  for (const auto& [name, j] : probe.items()) {
    for (const auto& [k, r] : j["top_k"].items()) {
      csv.probe += fmt::format("{},{},{},{:.17g},{:.17g}\n", s, name, k, r["test_accuracy"].get<double>(),
                               j["chance_accuracy"].get<double>());
    }
  }
  const nlohmann::json fourier =
      fourier_recovery_json(ref.subspace, sae.W_dec.data(), sae.d_sae, o.fourier_m);
  add_fourier_csv(fourier, s, csv);
  nlohmann::json causal_json = nullptr;
  if (!stability.empty() && splice_affects_answer(in.model, in.spec)) {
    CausalProxyOptions causal;
    causal.seed = o.seed;
    causal.random_repeats = o.causal_random_repeats;
    causal.quiet = true;
    causal.m = std::min<int64_t>(o.causal_m, sae.d_sae);
    causal_json = causal_proxy(in.model, in.spec, sae, stability[s], in.acts.x.data(), N, causal);
    for (const auto& [cond, r] : causal_json["conditions"].items()) {
      csv.causal +=
          fmt::format("{},{},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g}\n", s, cond, r["accuracy"].get<double>(),
                      r["ce_loss"].get<double>(), r["delta_accuracy_vs_clean"].get<double>(),
                      r["delta_ce_vs_clean"].get<double>(), r["ablated_l1_fraction"].get<double>());
    }
  }
  return {{"path", dir},
          {"architecture", sae.architecture},
          {"d_sae", sae.d_sae},
          {"k", sae.k},
          {"saebench_core", core},
          {"splice", sm.to_json()},
          {"sparse_probing", probe},
          {"fourier", fourier},
          {"mean_feature_stability",
           stability.empty() ? nlohmann::json(nullptr) : nlohmann::json(mean_or_nan(stability[s]))},
          {"causal_proxy", causal_json}};
}

// Means over the SAEs of the headline numbers.
nlohmann::json slice_summary(const BenchmarkSliceOptions& o, const SliceReferences& ref,
                             const nlohmann::json& per_sae) {
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
  for (const ProbeLabel& l : ref.labels) {
    for (const int64_t k : o.probe_k) {
      summary["sparse_probing"][l.name][std::to_string(k)] =
          mean_path({"sparse_probing", l.name, "top_k", std::to_string(k), "test_accuracy"});
    }
    summary["sparse_probing"][l.name]["full"] = ref.full_probe[l.name]["test_accuracy"];
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
  return summary;
}

std::string slice_markdown(const BenchmarkSliceOptions& o, const SliceInputs& in, const SliceReferences& ref,
                           const nlohmann::json& summary, bool with_causal) {
  std::string md = "# benchmark-slice\n\n";
  md += fmt::format("Model `{}`, activations `{}` ({} rows, hook {}), {} SAE(s).\n\n", o.model_dir,
                    o.activations_path, in.acts.n_rows, in.acts.hook_name, in.saes.size());
  md += "## SAEBench core (mean over SAEs; all rows, CE/KL over all pairs)\n\n| key | value |\n|---|---|\n";
  for (const auto& [k, v] : summary["saebench_core"].items())
    md += fmt::format("| {} | {} |\n", k, fmt_sig(v));
  md += "\n## Sparse probing (test accuracy on the transformer's held-out pairs)\n\n| label |";
  for (const int64_t k : o.probe_k) md += fmt::format(" top {} |", k);
  md += " full activations | chance |\n|---|";
  for (size_t i = 0; i < o.probe_k.size() + 2; ++i) md += "---|";
  md += "\n";
  for (const ProbeLabel& l : ref.labels) {
    md += "| " + l.name + " |";
    for (const int64_t k : o.probe_k)
      md += " " + fmt_json(summary["sparse_probing"][l.name][std::to_string(k)]) + " |";
    md += " " + fmt_json(ref.full_probe[l.name]["test_accuracy"]) + " | " +
          fmt_json(ref.full_probe[l.name]["chance_accuracy"]) + " |\n";
  }
  const nlohmann::json fs_json = fourier_subspace_json(ref.subspace, ref.power);
  md += fmt::format(
      "\n## Fourier ground truth\n\nKey frequencies (embedding power): {}; they hold {:.3f} of the "
      "embedding's "
      "non-constant Fourier power and explain {:.3f} of the activations' variance (subspace rank {}).\n\n",
      nlohmann::json(ref.keys).dump(), fs_json["key_power_fraction"].get<double>(),
      ref.subspace.fourier_fraction(), ref.subspace.all.rank);
  md += "| m | variance recovered (mean over SAEs) | random m-dim subspace |\n|---|---|---|\n";
  for (const auto& r : summary["fourier_variance_recovered"]) {
    md +=
        fmt::format("| {} | {} | {} |\n", r["m"].dump(), fmt_json(r["mean"]), fmt_json(r["random_baseline"]));
  }
  md += fmt::format("\n## Causal proxy (m = {} latents ablated; change against the clean model)\n\n",
                    o.causal_m);
  if (!with_causal) {
    md += "Not run: per-feature stability needs two or more SAEs.\n";
  } else {
    md += "| condition | delta accuracy | delta CE (nats) |\n|---|---|---|\n";
    for (const auto& [cond, v] : summary["causal_proxy"].items()) {
      md += fmt::format("| {} | {} | {} |\n", cond, fmt_json(v["delta_accuracy_vs_clean"]),
                        fmt_json(v["delta_ce_vs_clean"]));
    }
  }
  return md;
}

// sparse_probing.png/svg and (with the causal proxy) causal_proxy.png/svg; the names written.
std::vector<std::string> slice_figures(const BenchmarkSliceOptions& o, const SliceReferences& ref,
                                       const nlohmann::json& summary, bool with_causal) {
  const std::string& out = o.out_dir;
  std::string body = "$d << EOD\n";
  for (const ProbeLabel& l : ref.labels) {
    body += l.name;
    for (const int64_t k : o.probe_k) {
      const nlohmann::json& v = summary["sparse_probing"][l.name][std::to_string(k)];
      body += " " + (v.is_number() ? fmt::format("{:.6f}", v.get<double>()) : std::string("NaN"));
    }
    body += fmt::format(" {:.6f}\n", ref.full_probe[l.name]["test_accuracy"].get<double>());
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
  std::vector<std::string> figures = {"sparse_probing.png", "sparse_probing.svg"};
  if (!with_causal) return figures;
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
  return figures;
}

void write_slice_manifest(const BenchmarkSliceOptions& o, const std::vector<std::string>& figures) {
  const std::string& out = o.out_dir;
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
}

}  // namespace

nlohmann::json run_benchmark_slice(const BenchmarkSliceOptions& o) {
  const SliceInputs in = load_slice_inputs(o);
  if (o.standalone) {
    prepare_output_dir(o.out_dir, o.overwrite ? ExistingOutput::Overwrite : ExistingOutput::Refuse);
  }
  const SliceReferences ref = slice_references(o, in);
  const std::vector<std::vector<double>> stability = slice_stability(o, in.saes);

  SliceCsv csv;
  for (const auto& [name, j] : ref.full_probe.items()) {
    csv.probe += fmt::format("full_activations,{},{},{:.17g},{:.17g}\n", name, in.acts.d_in,
                             j["test_accuracy"].get<double>(), j["chance_accuracy"].get<double>());
  }
  nlohmann::json per_sae = nlohmann::json::array();
  for (size_t s = 0; s < in.saes.size(); ++s)
    per_sae.push_back(evaluate_slice_sae(o, in, ref, stability, s, csv));
  const nlohmann::json summary = slice_summary(o, ref, per_sae);

  nlohmann::json results = {{"schema_version", kSchemaVersion},
                            {"experiment", "benchmark-slice"},
                            {"model", {{"path", o.model_dir}, {"sha256", in.model.model_sha256}}},
                            {"activations",
                             {{"path", o.activations_path},
                              {"sha256", in.acts.sha256},
                              {"hook_name", in.acts.hook_name},
                              {"n_rows", in.acts.n_rows}}},
                            {"settings",
                             {{"probe_k", o.probe_k},
                              {"probe_l2", o.probe_l2},
                              {"probe_max_iter", o.probe_max_iter},
                              {"n_key_frequencies", o.n_key_frequencies},
                              {"fourier_m", o.fourier_m},
                              {"causal_m", o.causal_m},
                              {"causal_random_repeats", o.causal_random_repeats},
                              {"seed", o.seed}}},
                            {"full_activation_probing", ref.full_probe},
                            {"fourier_subspace", fourier_subspace_json(ref.subspace, ref.power)},
                            {"saes", per_sae},
                            {"summary", summary}};
  for (const auto& [k, v] : o.extra.items()) results[k] = v;
  const std::string& out = o.out_dir;
  write_file_atomic(path_join(out, "results.json"), results.dump(2) + "\n");
  write_file_atomic(path_join(out, "saebench_core.csv"), csv.core);
  write_file_atomic(path_join(out, "sparse_probing.csv"), csv.probe);
  write_file_atomic(path_join(out, "fourier.csv"), csv.fourier);
  write_file_atomic(path_join(out, "causal_proxy.csv"), csv.causal);
  write_file_atomic(path_join(out, "summary.md"), slice_markdown(o, in, ref, summary, !stability.empty()));
  const std::vector<std::string> figures =
      o.figures ? slice_figures(o, ref, summary, !stability.empty()) : std::vector<std::string>{};
  if (o.standalone) write_slice_manifest(o, figures);
  return results;
}

}  // namespace husai
