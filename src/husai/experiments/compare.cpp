#include "husai/experiments/compare.hpp"
#include "husai/experiments/compare_activations.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <optional>

#include <fmt/format.h>

#include "husai/core/error.hpp"
#include "husai/core/threading.hpp"
#include "husai/experiments/feature_types.hpp"
#include "husai/experiments/stability_report.hpp"
#include "husai/experiments/study.hpp"
#include "husai/io/activations.hpp"
#include "husai/io/manifest.hpp"
#include "husai/io/run_dir.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/io/sha256.hpp"
#include "husai/metrics/nulls.hpp"
#include "husai/metrics/stability.hpp"
#include "husai/metrics/stability_convergence.hpp"
#include "husai/metrics/stability_study.hpp"
#include "husai/metrics/surrogate.hpp"
#include "husai/train/sae_run.hpp"

namespace husai {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool path_inside(const fs::path& inner, const fs::path& outer) {
  std::error_code ec;
  const fs::path a = fs::weakly_canonical(inner, ec), b = fs::weakly_canonical(outer, ec);
  auto ai = a.begin();
  for (auto bi = b.begin(); bi != b.end(); ++bi, ++ai) {
    if (bi->empty()) continue;
    if (ai == a.end() || *ai != *bi) return false;
  }
  return true;
}

std::string weights_file(const std::string& dir) {
  const fs::path p = fs::path(dir) / "sae_weights.safetensors";
  if (fs::exists(p)) return p.string();
  const fs::path s = fs::path(dir) / "sae.safetensors";
  return fs::exists(s) ? s.string() : std::string();
}

// What beating each null rules out (docs/statistics.md, "Null dictionaries").
std::string controls_for(NullKind kind) {
  switch (kind) {
    case NullKind::Gaussian:
      return "chance alignment of isotropic random directions (the reference project's baseline)";
    case NullKind::Untrained:
      return "identical in distribution to gaussian for decoder rows (an SAE's initial W_dec rows are "
             "unit Gaussian vectors): not an independent control";
    case NullKind::Covariance:
      return "chance alignment of random directions where the activations' variance lies; reference only: "
             "its atoms concentrate in the top principal directions more than trained atoms do";
    case NullKind::SecondMoment:
      return "the trained dictionary's own second-moment geometry (atoms drawn from N(0, W^T W / d_sae))";
    case NullKind::AxisReflection:
      return "the trained dictionary's internal geometry and per-principal-axis energy (a trained seed "
             "reflected along random principal axes of the activations)";
    case NullKind::Rotation:
      return "the trained dictionary's internal geometry (a Haar-random rotation of a trained seed)";
  }
  return "";
}

bool geometry_matched(NullKind kind) {
  return kind == NullKind::SecondMoment || kind == NullKind::AxisReflection || kind == NullKind::Rotation;
}

std::vector<NullKind> resolve_nulls(const CompareOptions& options) {
  std::vector<NullKind> nulls;
  if (options.nulls.size() == 1 && options.nulls[0] == "none") return nulls;
  if (options.nulls.empty()) {
    // CONTRACTS.md: gaussian and untrained, plus covariance with activations; then the geometry-matched ones.
    nulls = {NullKind::Gaussian, NullKind::Untrained};
    if (!options.activations_path.empty()) nulls.push_back(NullKind::Covariance);
    nulls.push_back(NullKind::SecondMoment);
    if (!options.activations_path.empty()) nulls.push_back(NullKind::AxisReflection);
    nulls.push_back(NullKind::Rotation);
    return nulls;
  }
  for (const std::string& name : options.nulls) {
    const NullKind k = parse_null_kind(name);
    if (std::find(nulls.begin(), nulls.end(), k) != nulls.end())
      throw Error("null '" + name + "' listed twice");
    nulls.push_back(k);
  }
  return nulls;
}

// Null dictionaries of one kind. A geometry-matched null j is derived from trained SAE j % n.
// axis_reflection takes one dictionary per trained SAE (never two from the same source): two reflections
// of one dictionary share every axis both left alone, so their similarity would not be chance.
ComparisonGroup null_group(NullKind kind, const std::vector<SaeModel>& saes,
                           const std::vector<StudyDictionary>& trained, int64_t m,
                           const CovarianceNull* cov) {
  ComparisonGroup g;
  g.name = std::string(null_kind_name(kind));
  g.role = GroupRole::Null;
  g.geometry_matched = geometry_matched(kind);
  g.controls_for = controls_for(kind);
  const auto n = static_cast<int64_t>(saes.size());
  const int64_t count = kind == NullKind::AxisReflection ? n : m;
  g.dicts.resize(static_cast<size_t>(count));
  parallel_for(count, [&](int64_t j) {
    const SaeModel& like = saes[static_cast<size_t>(j % n)];
    const FeatureSet& source = trained[static_cast<size_t>(j % n)].dec;
    const uint64_t seed = 1000 + static_cast<uint64_t>(j);
    std::vector<float> w;
    switch (kind) {
      case NullKind::Gaussian:
        w = gaussian_null_decoder(like.d_sae, like.d_in, seed);
        break;
      case NullKind::Untrained:
        w = untrained_null_sae(like, seed).W_dec;
        break;
      case NullKind::Covariance:
        w = cov->decoder(like.d_sae, seed);
        break;
      case NullKind::SecondMoment:
        w = second_moment_null_decoder(source.rows.data(), source.n_features, source.dim, seed);
        break;
      case NullKind::AxisReflection:
        w = cov->reflect(source.rows.data(), source.n_features, seed);
        break;
      case NullKind::Rotation:
        w = rotation_null_decoder(source.rows.data(), source.n_features, source.dim, seed);
        break;
    }
    StudyDictionary& d = g.dicts[static_cast<size_t>(j)];
    d.label = fmt::format("{}:{}", g.name, seed);
    d.dec = features_from_rows(w.data(), static_cast<int64_t>(w.size()) / like.d_in, like.d_in);
    d.enc_is_dec = true;
  });
  return g;
}

// The train-sae configuration of the input SAEs (their cfg.json metadata is the resolved config), seeds
// replaced by the SAEs' own seeds. Every input must come from one configuration.
Config surrogate_config(const std::vector<SaeModel>& saes, const std::vector<std::string>& dirs) {
  const ConfigSchema schema = sae_config_schema();
  auto section_json = [&](const SaeModel& s, const std::string& dir) {
    if (!s.cfg.contains("metadata") || !s.cfg["metadata"].is_object() ||
        !s.cfg["metadata"].contains("training"))
      throw Error(
          "the surrogate control needs SAEs trained by husai train-sae (cfg.json metadata holds the "
          "training config)")
          .file(dir);
    json j = json::object();
    for (const auto& [key, value] : s.cfg["metadata"].items()) {
      if (value.is_object()) j[key] = value;
    }
    j["training"].erase("seeds");
    return j;
  };
  const json first = section_json(saes[0], dirs[0]);
  json seeds = json::array();
  for (size_t i = 0; i < saes.size(); ++i) {
    if (section_json(saes[i], dirs[i]) != first) {
      throw Error(
          "the surrogate control needs SAEs of one train-sae configuration (only the seed may differ)")
          .file(dirs[i]);
    }
    const json& md = saes[i].cfg["metadata"];
    if (!md.contains("seed") || !md["seed"].is_number_integer())
      throw Error("cfg.json has no metadata.seed").file(dirs[i]);
    seeds.push_back(md["seed"]);
  }
  Config c(schema);
  for (const auto& [section, values] : first.items()) {
    for (const auto& [key, value] : values.items())
      c.set(section + "." + key, value, "cfg.json of " + dirs[0]);
  }
  c.set("training.seeds", seeds, "the input SAEs' seeds");
  c.validate();
  return c;
}

// Trains the input SAEs' family on Gaussian surrogate data with the activations' mean and covariance (same
// number of rows, same config, same seeds) into dir/run; returns the surrogate SAEs' dictionaries.
ComparisonGroup surrogate_group(const CompareOptions& options, const ActivationInfo& acts,
                                const CovarianceNull& moments, const Config& config, const std::string& dir) {
  fs::create_directories(dir);
  const std::string acts_path = (fs::path(dir) / "activations.safetensors").string();
  {
    const std::vector<float> rows = gaussian_surrogate_rows(moments, acts.n_rows, options.surrogate_seed);
    SafetensorsFile f;
    f.put(options.activations_key, TensorData::f32({acts.n_rows, acts.d_in}, rows.data()));
    f.metadata = acts.metadata;
    f.metadata["surrogate"] = "gaussian";
    f.metadata["surrogate_seed"] = std::to_string(options.surrogate_seed);
    f.metadata["source_sha256"] = acts.sha256;
    f.save(acts_path);
  }
  TrainSaeOptions t;
  t.activations_path = acts_path;
  t.out_dir = (fs::path(dir) / "run").string();
  t.existing = ExistingOutput::Overwrite;
  t.quiet = options.quiet;
  const TrainSaeResult r = train_sae(config, t);
  if (!r.completed) throw Error("surrogate training was interrupted; rerun husai compare");
  ComparisonGroup g;
  g.name = "surrogate_gaussian";
  g.role = GroupRole::Surrogate;
  g.controls_for =
      "structure the SAE method produces on any data with these first two moments: the same family trained "
      "on Gaussian surrogate data (same mean, covariance, rows, steps and seeds)";
  for (const uint64_t seed : r.seeds) {
    const std::string sdir = SaeRunLayout(t.out_dir).seed_dir(seed);
    const SaeModel s = load_sae(sdir);
    StudyDictionary d;
    d.label = sdir;
    d.dec = decoder_features(s);
    d.enc = encoder_features(s);
    g.dicts.push_back(std::move(d));
  }
  return g;
}

// Checks the options (everything that needs no file) and returns the nulls to build.
std::vector<NullKind> validate_options(const CompareOptions& options) {
  const auto n = static_cast<int64_t>(options.sae_dirs.size());
  if (n < 2) throw Error("husai compare needs at least two SAE folders (got " + std::to_string(n) + ")");
  if (options.out_dir.empty()) throw Error("husai compare: --out is required");
  if (options.bootstrap < 1) throw Error("--bootstrap must be at least 1");
  if (!(options.confidence > 0 && options.confidence < 1)) throw Error("confidence must lie in (0, 1)");
  if (options.null_seeds < 0) throw Error("--null-seeds must not be negative");
  std::vector<NullKind> nulls = resolve_nulls(options);
  for (const NullKind k : nulls) {
    if ((k == NullKind::Covariance || k == NullKind::AxisReflection) && options.activations_path.empty()) {
      throw Error(
          fmt::format("the {} null needs the activations the SAEs were trained on: pass --activations FILE",
                      null_kind_name(k)));
    }
  }
  if (!options.surrogate.empty() && options.surrogate != "gaussian")
    throw Error("unknown surrogate '" + options.surrogate + "' (expected gaussian)");
  if (!options.surrogate.empty() && options.activations_path.empty())
    throw Error(
        "the surrogate control needs the activations the SAEs were trained on: pass --activations FILE");
  for (const std::string& dir : options.sae_dirs) {
    if (path_inside(dir, options.out_dir))
      throw Error("the output folder must not contain an input SAE folder").file(dir);
  }
  if (!options.activations_path.empty() && path_inside(options.activations_path, options.out_dir)) {
    throw Error("the output folder must not contain the activation file").file(options.activations_path);
  }
  return nulls;
}

// Loads the input SAEs and checks that they share d_in.
std::vector<SaeModel> load_saes(const CompareOptions& options) {
  const auto n = static_cast<int64_t>(options.sae_dirs.size());
  std::vector<SaeModel> saes;
  saes.reserve(static_cast<size_t>(n));
  for (const std::string& dir : options.sae_dirs) saes.push_back(load_sae(dir));
  for (int64_t i = 1; i < n; ++i) {
    if (saes[static_cast<size_t>(i)].d_in != saes[0].d_in) {
      throw Error(fmt::format("SAEs must share d_in: {} has d_in = {} but {} has d_in = {}",
                              options.sae_dirs[0], saes[0].d_in, options.sae_dirs[static_cast<size_t>(i)],
                              saes[static_cast<size_t>(i)].d_in))
          .file(options.sae_dirs[static_cast<size_t>(i)]);
    }
  }
  return saes;
}

// The activation rows of a comparison: their header and hash always; the rows themselves in memory only when
// there are at most options.buffer_rows of them (the covariance null streams a larger file; the surrogate
// control and the feature types need them in memory).
struct CompareActivations {
  std::optional<ActivationSource> src;
  std::optional<ActivationFile> resident;
  const ActivationInfo& info() const { return resident ? *resident : src->info(); }
};

// Opens the activation file when one is given and checks its width against the SAEs' d_in.
std::optional<CompareActivations> load_activations(const CompareOptions& options, int64_t d_in) {
  if (options.activations_path.empty()) return std::nullopt;
  CompareActivations acts;
  acts.src = ActivationSource::open(options.activations_path, options.activations_key);
  if (acts.src->d_in() != d_in) {
    throw Error(
        fmt::format("activations have {} columns but the SAEs have d_in = {}", acts.src->d_in(), d_in))
        .file(options.activations_path);
  }
  if (acts.src->n_rows() <= options.buffer_rows) {
    acts.resident = load_activation_file(options.activations_path, options.activations_key);
  } else {
    if (!options.surrogate.empty()) {
      throw Error(
          fmt::format("the {} surrogate control trains on rows held in memory, and the file has {} rows, "
                      "more than --buffer-rows {}",
                      options.surrogate, acts.src->n_rows(), options.buffer_rows))
          .file(options.activations_path);
    }
    acts.src->verify();
  }
  return acts;
}

std::optional<CovarianceNull> covariance_moments(const std::optional<CompareActivations>& acts,
                                                 int64_t buffer_rows) {
  std::optional<CovarianceNull> cov;
  if (!acts) return cov;
  if (acts->resident) {
    cov.emplace(acts->resident->x.data(), acts->resident->n_rows, acts->resident->d_in);
  } else {
    const ActivationSource& src = *acts->src;
    cov.emplace([&](int64_t first, int64_t count, float* x) { src.read_rows(first, count, x); }, src.n_rows(),
                src.d_in(), std::min<int64_t>(buffer_rows, 16384));
  }
  return cov;
}

// The trained dictionaries (decoder and encoder features) of the input SAEs.
std::vector<StudyDictionary> trained_dictionaries(const CompareOptions& options,
                                                  const std::vector<SaeModel>& saes) {
  const auto n = static_cast<int64_t>(saes.size());
  std::vector<StudyDictionary> trained(static_cast<size_t>(n));
  parallel_for(n, [&](int64_t i) {
    StudyDictionary& d = trained[static_cast<size_t>(i)];
    d.label = options.sae_dirs[static_cast<size_t>(i)];
    d.dec = decoder_features(saes[static_cast<size_t>(i)]);
    d.enc = encoder_features(saes[static_cast<size_t>(i)]);
  });
  return trained;
}

// The stability study and the seconds its pairs took.
struct StudyRun {
  StabilityStudy study;
  double pairs_seconds = 0;
};

// Runs the stability study of the trained dictionaries against the groups, plus each trained dictionary's
// mean within-dictionary nearest-neighbour |cos|.
StudyRun run_study(const CompareOptions& options, const std::vector<StudyDictionary>& trained,
                   const std::vector<ComparisonGroup>& groups) {
  StudyOptions so;
  so.bootstrap = options.bootstrap;
  so.confidence = options.confidence;
  so.seed = options.seed;
  const auto t_pairs = std::chrono::steady_clock::now();
  StudyRun r;
  r.study = run_stability_study(trained, groups, so);
  for (const StudyDictionary& d : trained) {
    const std::vector<float> nn = nearest_neighbour_abs_cos(d.dec);
    double sum = 0;
    for (const float v : nn) sum += static_cast<double>(v);
    r.study.within_nn_cos.push_back(sum / static_cast<double>(std::max<size_t>(nn.size(), 1)));
  }
  r.pairs_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_pairs).count();
  return r;
}

// Adds the stability-against-training-steps section to ctx when every input keeps stability snapshots.
void add_convergence(const CompareOptions& options, StabilityReportContext& ctx) {
  // Stability against training steps when every input keeps stability snapshots (train-sae's
  // checkpoints/step_<N>/): the same pairs at each snapshot and the plateau test on the last change.
  const bool all_have_snapshots =
      std::all_of(options.sae_dirs.begin(), options.sae_dirs.end(),
                  [](const auto& d) { return fs::is_directory(fs::path(d) / "checkpoints"); });
  if (!all_have_snapshots) return;
  // Folders from different runs may keep different snapshots: then there is no common curve, which is
  // said in the summary rather than failing the comparison.
  std::vector<SaeCheckpointSet> sets;
  try {
    sets = list_sae_checkpoints(options.sae_dirs);
  } catch (const Error& e) {
    ctx.extra_markdown += std::string("\n## Stability against training steps\n\nNot computed: ") + e.what() +
                          " (the inputs do not share their stability snapshots).\n";
  }
  if (sets.size() < 2) return;
  std::vector<std::vector<FeatureSet>> dicts;
  std::vector<int64_t> steps;
  dicts.reserve(sets.size());
  steps.reserve(sets.size());
  for (const SaeCheckpointSet& set : sets) {
    std::vector<FeatureSet> v;
    v.reserve(set.sae_dirs.size());
    for (const std::string& d : set.sae_dirs) v.push_back(decoder_features(load_sae(d)));
    dicts.push_back(std::move(v));
    steps.push_back(set.step);
  }
  const json cv = convergence_to_json(stability_convergence(dicts, steps, sets.back().step, options.bootstrap,
                                                            options.confidence, options.seed));
  ctx.extra_sections["convergence"] = cv;
  ctx.extra_markdown +=
      "\n## Stability against training steps\n\n" + convergence_report({{"decoder", cv}}).markdown;
}

// One inputs entry per SAE: its path, shape, format, seed and weights hash.
json inputs_json(const CompareOptions& options, const std::vector<SaeModel>& saes) {
  json inputs = json::array();
  const auto n = static_cast<int64_t>(saes.size());
  for (int64_t i = 0; i < n; ++i) {
    const SaeModel& s = saes[static_cast<size_t>(i)];
    json in = {{"index", i},
               {"path", options.sae_dirs[static_cast<size_t>(i)]},
               {"architecture", s.architecture},
               {"d_in", s.d_in},
               {"d_sae", s.d_sae},
               {"format", s.source_format}};
    const json& md = s.cfg.contains("metadata") ? s.cfg["metadata"] : json::object();
    in["seed"] = md.is_object() && md.contains("seed") ? md["seed"] : json(nullptr);
    in["training_architecture"] =
        md.is_object() && md.contains("training_architecture") ? md["training_architecture"] : json(nullptr);
    const std::string wf = weights_file(options.sae_dirs[static_cast<size_t>(i)]);
    in["weights_sha256"] = wf.empty() ? json(nullptr) : json(sha256_file_hex(wf));
    inputs.push_back(in);
  }
  return inputs;
}

// The comparison's settings (stability.json and the manifest).
json settings_json(const CompareOptions& options, const std::vector<NullKind>& nulls, int64_t m,
                   const std::optional<CompareActivations>& acts) {
  std::vector<uint64_t> null_seeds(static_cast<size_t>(m));
  for (int64_t j = 0; j < m; ++j) null_seeds[static_cast<size_t>(j)] = 1000 + static_cast<uint64_t>(j);
  json settings = {{"nulls", json::array()},
                   {"null_seeds", null_seeds},
                   {"bootstrap", options.bootstrap},
                   {"confidence", options.confidence},
                   {"seed", options.seed},
                   {"activations", nullptr},
                   {"surrogate", options.surrogate.empty() ? json(nullptr) : json(options.surrogate)},
                   {"surrogate_seed", options.surrogate_seed},
                   {"model", options.model_dir.empty() ? json(nullptr) : json(options.model_dir)}};
  for (const NullKind k : nulls) settings["nulls"].push_back(std::string(null_kind_name(k)));
  if (acts) {
    settings["activations"] = {
        {"path", options.activations_path},    {"key", options.activations_key},
        {"sha256", acts->info().sha256},       {"n_rows", acts->info().n_rows},
        {"hook_name", acts->info().hook_name}, {"streamed", !acts->resident.has_value()}};
  }
  return settings;
}

// Writes manifest.json: the inputs' weights and configs, the activations, the written files, the settings
// and the timing.
void write_manifest(const CompareOptions& options, const json& settings, const ActivationInfo* acts,
                    const std::vector<std::string>& written, double pairs_seconds,
                    std::chrono::steady_clock::time_point t_start) {
  const std::string& dir = options.out_dir;
  Manifest manifest;
  manifest.command = command_line();
  json resolved = settings;
  resolved["sae_dirs"] = options.sae_dirs;
  manifest.config_hash = sha256_hex(resolved.dump());
  for (const std::string& d : options.sae_dirs) {
    const std::string wf = weights_file(d);
    if (!wf.empty()) manifest.add_input(wf);
    const fs::path cfg = fs::path(d) / "cfg.json";
    if (fs::exists(cfg)) manifest.add_input(cfg.string());
  }
  if (acts != nullptr) add_activation_inputs(manifest, *acts);
  for (const std::string& name : written) manifest.add_output(dir, name);
  manifest.extra["settings"] = settings;
  manifest.extra["timing_s"] = {
      {"pairs", pairs_seconds},
      {"total", std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count()}};
  manifest.write(dir);
}

}  // namespace

nlohmann::json run_compare(const CompareOptions& options) {
  const auto t_start = std::chrono::steady_clock::now();
  // ---- Validate everything before touching the output folder.
  const std::vector<NullKind> nulls = validate_options(options);
  const auto n = static_cast<int64_t>(options.sae_dirs.size());
  const std::vector<SaeModel> saes = load_saes(options);
  const int64_t d_in = saes[0].d_in;
  const std::optional<CompareActivations> acts = load_activations(options, d_in);
  // Null seeds: at least 10 by default, so that an exact permutation test against 5 trained seeds can reach
  // p = 1 / C(15, 5) = 3.3e-4, small enough to survive Holm over a family of tests.
  const int64_t m = options.null_seeds > 0 ? options.null_seeds : std::max<int64_t>(n, kDefaultMinNullSeeds);
  if (!nulls.empty() && m < 2) throw Error("--null-seeds must be at least 2");
  if (!options.overwrite && fs::exists(options.out_dir) && fs::is_directory(options.out_dir) &&
      !fs::is_empty(options.out_dir)) {
    throw Error("output directory exists and is not empty; pass --overwrite to replace it")
        .file(options.out_dir);
  }
  std::optional<Config> surrogate_cfg;  // built (and so validated) before any work
  if (!options.surrogate.empty()) surrogate_cfg.emplace(surrogate_config(saes, options.sae_dirs));

  // ---- Dictionaries: trained, each null's, and the surrogate-trained SAEs.
  const std::vector<StudyDictionary> trained = trained_dictionaries(options, saes);
  const std::optional<CovarianceNull> cov = covariance_moments(acts, options.buffer_rows);
  std::vector<ComparisonGroup> groups;
  groups.reserve(nulls.size() + 1);
  for (const NullKind k : nulls) groups.push_back(null_group(k, saes, trained, m, cov ? &*cov : nullptr));

  prepare_output_dir(options.out_dir, options.overwrite ? ExistingOutput::Overwrite : ExistingOutput::Refuse);
  const std::string& dir = options.out_dir;
  if (!options.surrogate.empty()) {
    if (!options.quiet)
      std::fprintf(stderr, "compare: training the surrogate control (%s)\n", options.surrogate.c_str());
    groups.push_back(
        surrogate_group(options, acts->info(), *cov, *surrogate_cfg, (fs::path(dir) / "surrogate").string()));
  }

  const StudyRun run = run_study(options, trained, groups);
  const StabilityStudy& study = run.study;

  // ---- Documents.
  StabilityReportContext ctx;
  ctx.figures = options.figures;
  // Ground-truth feature types when the activations are a modular-addition answer-position file.
  if (acts && acts->resident && acts->resident->metadata.count("modulus") != 0 &&
      acts->resident->metadata.count("position") != 0 &&
      acts->resident->metadata.at("position") == "answer") {
    const FeatureTypeReport ft = feature_type_breakdown(saes, study, *acts->resident, options.model_dir);
    ctx.extra_sections["feature_types"] = ft.section;
    ctx.extra_markdown += ft.markdown;
  }
  if (acts && options.activation_rows > 0) {
    const ActivationSource& src = *acts->src;
    const int64_t rows = std::min(options.activation_rows, src.n_rows());
    if (!options.quiet)
      std::fprintf(stderr, "compare: activation similarity on %lld rows\n", static_cast<long long>(rows));
    const ActivationAgreement agree = activation_agreement(
        saes, options.sae_dirs,
        [&](int64_t first, int64_t count, float* x) { src.read_rows(first, count, x); }, rows, options.seed);
    ctx.extra_sections["activation_similarity"] = agree.section;
    ctx.extra_markdown += agree.markdown;
  }
  add_convergence(options, ctx);
  ctx.inputs = inputs_json(options, saes);
  ctx.settings = settings_json(options, nulls, m, acts);

  // ---- Write: figures, the data files, the manifest last (a folder without manifest.json is incomplete).
  std::vector<std::string> written;
  json doc = write_stability_report(study, ctx, dir, written);
  write_manifest(options, ctx.settings, acts ? &acts->info() : nullptr, written, run.pairs_seconds, t_start);
  return doc;
}

}  // namespace husai
