#include "husai/experiments/runner.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include <fmt/format.h>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/core/signals.hpp"
#include "husai/core/version.hpp"
#include "husai/io/gnuplot.hpp"
#include "husai/io/json_file.hpp"
#include "husai/io/manifest.hpp"
#include "husai/io/sha256.hpp"
#include "husai/model/model_io.hpp"
#include "husai/train/sae_run.hpp"
#include "husai/train/transformer_config.hpp"
#include "husai/train/transformer_run.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

constexpr const char* kCompleteMarker = "COMPLETE";

// An exclusive flock(2) held for the object's lifetime; released by the kernel if the process dies.
class FileLock {
 public:
  explicit FileLock(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error("cannot open lock file").file(path);
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) {
        ::close(fd_);
        throw Error("cannot lock").file(path);
      }
    }
  }
  ~FileLock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

// Every regular file under `dir`, relative, sorted; `skip` names are left out at the top level.
std::vector<std::string> files_under(const fs::path& dir, const std::set<std::string>& skip) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = fs::relative(e.path(), dir).generic_string();
    if (skip.count(rel) > 0) continue;
    out.push_back(rel);
  }
  std::sort(out.begin(), out.end());
  return out;
}

nlohmann::json hash_files(const fs::path& dir) {
  nlohmann::json files = nlohmann::json::object();
  for (const std::string& rel : files_under(dir, {kCompleteMarker})) {
    files[rel] = sha256_file_hex((dir / rel).string());
  }
  return files;
}

bool safe_id(const std::string& id) {
  if (id.empty() || id[0] == '.') return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '=' || c == '-';
  });
}

std::string join_command(const std::vector<std::string>& argv) {
  std::string s;
  for (const std::string& a : argv) {
    if (!s.empty()) s += ' ';
    const bool plain = !a.empty() && a.find_first_of(" \t'\"$`\\*?[]{}()<>|;&") == std::string::npos;
    s += plain ? a : "'" + a + "'";
  }
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Context

ExperimentContext::ExperimentContext(const Config& config, ExperimentOptions options, std::string name,
                                     std::string run_id, std::string run_dir, Registry& registry)
    : config_(config),
      options_(std::move(options)),
      name_(std::move(name)),
      run_id_(std::move(run_id)),
      run_dir_(std::move(run_dir)),
      registry_(registry) {}

void ExperimentContext::log(const std::string& message) const {
  if (options_.quiet) return;
  std::printf("[%s] %s\n", name_.c_str(), message.c_str());
  std::fflush(stdout);
}

nlohmann::json ExperimentContext::condition(const std::string& id,
                                            const std::function<nlohmann::json()>& work) {
  if (!safe_id(id)) throw std::logic_error("experiment condition id is not a safe file name: " + id);
  const fs::path file = fs::path(run_dir_) / "conditions" / (id + ".json");
  if (fs::exists(file)) {
    log("condition " + id + ": done in an earlier attempt, kept");
    return read_json_file(file.string());
  }
  nlohmann::json value = work();
  ensure_directory(file.parent_path().string());
  write_file_atomic(file.string(), value.dump(2) + "\n");
  return value;
}

std::string ExperimentContext::cached(const std::string& kind, const nlohmann::json& key,
                                      const std::function<void(const std::string&, bool)>& build) {
  const nlohmann::json key_doc = {{"kind", kind}, {"key", key}, {"husai_version", version()}};
  const std::string hash = sha256_hex(key_doc.dump());
  const fs::path kind_dir = fs::path(options_.root) / "cache" / kind;
  const fs::path dir = kind_dir / hash;
  ensure_directory(kind_dir.string());
  FileLock lock((kind_dir / (hash + ".lock")).string());

  const fs::path marker = dir / kCompleteMarker;
  bool reused = false;
  if (fs::exists(marker)) {
    const nlohmann::json recorded = read_json_file(marker.string());
    if (recorded.value("files", nlohmann::json()) == hash_files(dir)) {
      reused = true;
    } else {
      log(fmt::format("cache {} {}: files changed since the entry was completed; rebuilding", kind,
                      hash.substr(0, 12)));
      fs::remove_all(dir);
    }
  }
  if (!reused) {
    const bool resume = fs::exists(dir) && !fs::is_empty(dir);
    log(fmt::format("cache {} {}: {}", kind, hash.substr(0, 12),
                    resume ? "incomplete entry found, continuing it" : "building"));
    ensure_directory(dir.string());
    write_file_atomic((dir / "cache_key.json").string(), key_doc.dump(2) + "\n");
    build(dir.string(), resume);
    const nlohmann::json complete = {{"key", key_doc}, {"files", hash_files(dir)}};
    write_file_atomic(marker.string(), complete.dump(2) + "\n");  // last: the entry is complete now
  } else {
    log(fmt::format("cache {} {}: reused", kind, hash.substr(0, 12)));
  }
  cache_events_.push_back({{"kind", kind}, {"key", hash}, {"dir", dir.string()}, {"reused", reused}});
  return dir.string();
}

std::string ExperimentContext::transformer(const Config& transformer_config) {
  std::string dir = cached(
      "transformer", {{"config", transformer_config.resolved()}}, [&](const std::string& d, bool resume) {
        TrainTransformerOptions o;
        o.out_dir = d;
        o.existing = resume ? ExistingOutput::Resume : ExistingOutput::Overwrite;
        o.quiet = options_.quiet;
        o.figures = options_.figures;
        const TrainTransformerResult r = train_transformer(transformer_config, o);
        if (!r.completed)
          throw Interrupted("interrupted while training the transformer (cache entry " + d + ")");
      });
  add_input((fs::path(dir) / "model.safetensors").string());
  add_input((fs::path(dir) / "config.json").string());
  return dir;
}

std::string ExperimentContext::activations(const std::string& transformer_dir, const ExtractSpec& spec) {
  const std::string model_path = (fs::path(transformer_dir) / "model.safetensors").string();
  const nlohmann::json key = {{"model_sha256", sha256_file_hex(model_path)},
                              {"layer", spec.layer},
                              {"site", hook_site_name(spec.site)},
                              {"position", spec.position}};
  std::string dir = cached("activations", key, [&](const std::string& d, bool) {
    const LoadedModel model = load_model_dir(transformer_dir);
    extract_activations(model, spec, (fs::path(d) / "activations.safetensors").string(), options_.quiet);
  });
  std::string path = (fs::path(dir) / "activations.safetensors").string();
  add_input(path);
  return path;
}

std::string ExperimentContext::sae_run(const Config& sae_config, const std::string& activations_path) {
  nlohmann::json key = {{"config", sae_config.resolved()},
                        {"activations_sha256", sha256_file_hex(activations_path)}};
  // The consistency penalty's reference SAE is an input too: its weights, not just its folder name.
  if (!sae_config.is_null("consistency.reference")) {
    const fs::path ref = fs::path(sae_config.get_string("consistency.reference")) / "sae_weights.safetensors";
    key["consistency_reference_sha256"] = sha256_file_hex(ref.string());
    add_input(ref.string());
  }
  std::string dir = cached("sae", key, [&](const std::string& d, bool resume) {
    TrainSaeOptions o;
    o.activations_path = activations_path;
    o.out_dir = d;
    o.existing = resume ? ExistingOutput::Resume : ExistingOutput::Overwrite;
    o.quiet = options_.quiet;
    const TrainSaeResult r = train_sae(sae_config, o);
    if (!r.completed) throw Interrupted("interrupted while training SAEs (cache entry " + d + ")");
  });
  for (const int64_t seed : sae_config.get_int_list("training.seeds")) {
    const fs::path seed_dir = SaeRunLayout(dir).seed_dir(seed);
    add_input((seed_dir / "sae_weights.safetensors").string());
    add_input((seed_dir / "cfg.json").string());
  }
  return dir;
}

void ExperimentContext::add_input(const std::string& path) {
  if (std::find(inputs_.begin(), inputs_.end(), path) == inputs_.end()) inputs_.push_back(path);
}

void ExperimentContext::metric(const std::string& name, double value, const std::string& condition) {
  metrics_.push_back({name, value, condition});
}

std::string ExperimentContext::path(const std::string& name) const {
  return (fs::path(run_dir_) / name).string();
}

void ExperimentContext::write_json(const std::string& name, const nlohmann::json& value) const {
  ensure_directory(fs::path(path(name)).parent_path().string());
  write_file_atomic(path(name), value.dump(2) + "\n");
}

void ExperimentContext::write_text(const std::string& name, const std::string& text) const {
  ensure_directory(fs::path(path(name)).parent_path().string());
  write_file_atomic(path(name), text);
}

void ExperimentContext::figure(const std::string& name, const std::string& gnuplot_body) const {
  if (!options_.figures) return;
  render_figure(gnuplot_body, path(name + ".png"), path(name + ".svg"));
}

// ---------------------------------------------------------------------------------------------------------
// Runner

const ExperimentDef& find_experiment(const std::string& name) {
  std::string known;
  for (const ExperimentDef& d : experiment_catalog()) {
    if (d.name == name) return d;
    known += (known.empty() ? "" : ", ") + d.name;
  }
  throw Error("unknown experiment '" + name + "'; known: " + known);
}

std::string write_experiment_log(const std::string& root) {
  const Registry reg(root);
  std::string path = (fs::path(root) / "EXPERIMENT_LOG.md").string();
  write_file_atomic(path, reg.experiment_log_markdown());
  return path;
}

ExperimentRunResult run_experiment(const ExperimentDef& def, const Config& config,
                                   const ExperimentOptions& options) {
  Registry registry(options.root);
  const std::string hash = config.hash();
  const fs::path exp_dir = fs::path(options.root) / def.name;
  ensure_directory(exp_dir.string());

  ExperimentRunResult result;
  std::optional<RunRecord> previous;
  if (options.resume) {
    for (const RunRecord& r : registry.list_runs(def.name)) {
      if (r.config_hash == hash && r.status != "completed" && fs::is_directory(r.run_dir)) {
        previous = r;
        break;
      }
    }
    if (!options.quiet) {
      std::printf("[%s] %s\n", def.name.c_str(),
                  previous ? ("resuming run " + previous->id).c_str()
                           : "--resume: no unfinished run with this config; starting a new run");
    }
  }
  if (previous) {
    result.run_id = previous->id;
    result.run_dir = previous->run_dir;
    result.resumed = true;
  } else {
    const std::string base = utc_timestamp_compact() + "-" + hash.substr(0, 8);
    std::string id = base;
    for (int n = 2; !fs::create_directory(exp_dir / id); ++n) id = base + "-" + std::to_string(n);
    if (id != base && !options.quiet) {
      std::printf(
          "[%s] run id %s is taken (a run with the same config started in the same second); this run "
          "is %s\n",
          def.name.c_str(), base.c_str(), id.c_str());
    }
    result.run_id = id;
    result.run_dir = (exp_dir / id).string();
  }
  write_file_atomic((fs::path(result.run_dir) / "config.json").string(), config.resolved().dump(2) + "\n");

  RunRecord rec;
  rec.id = result.run_id;
  rec.experiment = def.name;
  rec.status = "running";
  rec.config_hash = hash;
  rec.command = join_command(command_line());
  rec.started_utc = previous ? previous->started_utc : utc_timestamp_iso();
  rec.git_commit = std::string(git_commit()) + (git_dirty() ? "-dirty" : "");
  rec.run_dir = result.run_dir;
  registry.begin_run(rec);
  install_stop_handlers();

  ExperimentContext ctx(config, options, def.name, result.run_id, result.run_dir, registry);
  ctx.log(fmt::format("run {} -> {}", result.run_id, result.run_dir));
  try {
    result.exit_code = def.run(ctx);
  } catch (const Interrupted&) {
    registry.finish_run(result.run_id, "interrupted");
    write_experiment_log(options.root);
    throw;
  } catch (...) {
    registry.finish_run(result.run_id, "failed");
    write_experiment_log(options.root);
    throw;
  }

  Manifest manifest;
  manifest.command = command_line();
  manifest.config_hash = hash;
  for (const std::string& in : ctx.inputs()) manifest.add_input(in);
  for (const std::string& rel : files_under(result.run_dir, {"manifest.json"})) {
    manifest.add_output(result.run_dir, rel);
  }
  manifest.extra = {{"experiment", def.name},
                    {"run_id", result.run_id},
                    {"resumed", result.resumed},
                    {"exit_code", result.exit_code},
                    {"cache", ctx.cache_events()}};
  manifest.write(result.run_dir);

  std::vector<ArtifactRecord> artifacts;
  for (const FileRecord& f : manifest.outputs) artifacts.push_back({f.path, "output", f.sha256, f.bytes});
  for (const FileRecord& f : manifest.inputs) artifacts.push_back({f.path, "input", f.sha256, f.bytes});
  const FileRecord m = describe_file((fs::path(result.run_dir) / "manifest.json").string(), "manifest.json");
  artifacts.push_back({m.path, "output", m.sha256, m.bytes});
  registry.set_artifacts(result.run_id, artifacts);
  registry.add_metrics(result.run_id, ctx.metrics());
  registry.finish_run(result.run_id, "completed");
  write_experiment_log(options.root);
  ctx.log(fmt::format("done: {}", result.run_dir));
  return result;
}

// ---------------------------------------------------------------------------------------------------------
// Config helpers

void embed_schema(ConfigSchema& dst, const std::string& prefix, const ConfigSchema& src) {
  for (const FieldSpec& f : src.fields()) {
    FieldSpec& d = dst.add(prefix + "." + f.path, f.kind, f.default_value, f.help);
    const std::string path = d.path;
    d = f;
    d.path = path;
  }
}

Config sub_config(const Config& config, const std::string& prefix, const ConfigSchema& schema) {
  Config sub(schema);
  for (const FieldSpec& f : schema.fields()) {
    const std::string outer = prefix + "." + f.path;
    const nlohmann::json& v = config.get(outer);
    if (v == sub.get(f.path)) continue;
    sub.set(f.path, v, outer + " from " + config.source(outer).label());
  }
  sub.validate();
  return sub;
}

void add_transformer_section(ConfigSchema& schema) {
  embed_schema(schema, "transformer", transformer_config_schema());
}

void add_extract_section(ConfigSchema& schema) {
  schema.add_int("extract.layer", -1, "layer of the activations (-1: last; negative counts from the end)");
  schema.add_enum("extract.site", "resid_post",
                  {"resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"},
                  "TransformerLens hook site");
  schema.add_string("extract.position", "answer", "'answer' (the '=' position) or an index");
}

void add_sae_section(ConfigSchema& schema) {
  embed_schema(schema, "sae", sae_config_schema());
}

void add_compare_section(ConfigSchema& schema, bool surrogate_by_default) {
  schema.add_int("compare.bootstrap", 10000, "seed-bootstrap resamples (and Monte Carlo permutations)")
      .min(100);
  schema.add_float("compare.confidence", 0.95, "confidence level of every interval")
      .greater_than(0)
      .less_than(1);
  schema.add_int("compare.seed", 0, "seed of the statistics' random draws and of the nulls").min(0);
  schema.add_string(
      "compare.nulls", "",
      "comma-separated nulls; empty = compare's default (gaussian, untrained, covariance, second_moment, "
      "axis_reflection, rotation here)");
  schema.add_int("compare.null_seeds", 0, "null dictionaries per null; 0 = compare's default (at least 10)")
      .min(0);
  schema.add_enum("compare.surrogate", surrogate_by_default ? "gaussian" : "none", {"none", "gaussian"},
                  "surrogate-data control: also train each SAE family on Gaussian data with the activations' "
                  "mean and covariance (same rows, steps and seeds) and compare against it");
  schema.add_enum("compare.metric", "pwmcc", {"pwmcc", "matched_mean_cos"},
                  "similarity the experiment's decisions and tables use (both are reported)");
}

ExtractSpec extract_spec_from(const Config& config) {
  ExtractSpec spec;
  spec.layer = config.get_int("extract.layer");
  spec.site = parse_hook_site(config.get_string("extract.site"));
  spec.position = config.get_string("extract.position");
  return spec;
}

}  // namespace husai
