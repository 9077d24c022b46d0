#pragma once

// The experiment framework: `husai experiment NAME` (docs/experiments.md).
//
// An experiment is an ExperimentDef (name, config schema, run function) listed in experiment_catalog()
// (experiments/catalog.cpp: add one line there for a new experiment). run_experiment() gives every run
//   - ROOT/NAME/<run_id>/ with run id YYYYmmddTHHMMSSZ-<first 8 hex of the config hash>, never overwritten
//     (a second run in the same second with the same config gets "-2", "-3", ... and says so);
//   - config.json (the resolved config) before the run function starts, manifest.json (CONTRACTS
//     "Manifest": every input used and every file of the folder, with sha256 and size) after it returns;
//   - a row in ROOT/registry.sqlite (io/registry.hpp): status running -> completed | failed |
//     interrupted, the folder's files as artifacts, and the metrics the run reported;
//   - resumability: work done through ExperimentContext::condition() is stored under conditions/ and not
//     redone by `--resume`, which continues the newest unfinished run of NAME with the same config hash;
//   - the artifact cache: transformers, activation files and SAE runs under ROOT/cache/<kind>/<key>/,
//     key = sha256 of what produced them (resolved config, sha256 of every input, husai version). A key
//     that differs in anything is a different entry, so a stale artifact is never reused; an entry is
//     complete only once its COMPLETE file (written last, holding the sha256 of every file) exists, so
//     an entry killed mid-way is resumed or rebuilt, never reused; a completed entry whose files no
//     longer match their recorded hashes is rebuilt. Builds of one entry are serialised by a lock file,
//     so two processes sharing ROOT never build the same entry twice at once.
//
// A run function writes its own results.json / CSVs / summary.md / figures through the context and
// returns the process exit code (0; release-gate returns 2 for a failed gate with --fail-on-gate-fail).

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "husai/core/error.hpp"
#include "husai/io/config.hpp"
#include "husai/io/registry.hpp"
#include "husai/model/extract.hpp"

namespace husai {

struct ExperimentOptions {
  std::string root = "results";  // ROOT
  bool resume = false;           // continue the newest unfinished run with the same config
  bool quiet = false;
  bool fail_on_gate_fail = false;  // release-gate: exit 2 when a gate fails
  bool figures = true;             // render gnuplot figures (PNG + SVG)
};

// Thrown when SIGINT/SIGTERM stopped a step; the runner marks the run interrupted and says how to resume.
struct Interrupted : Error {
  using Error::Error;
};

class ExperimentContext {
 public:
  ExperimentContext(const Config& config, ExperimentOptions options, std::string name, std::string run_id,
                    std::string run_dir, Registry& registry);

  const Config& config() const { return config_; }
  const ExperimentOptions& options() const { return options_; }
  const std::string& name() const { return name_; }
  const std::string& run_id() const { return run_id_; }
  const std::string& run_dir() const { return run_dir_; }
  const std::string& root() const { return options_.root; }
  Registry& registry() { return registry_; }
  bool quiet() const { return options_.quiet; }

  // Prints "[NAME] message" to stdout unless quiet.
  void log(const std::string& message) const;

  // A resumable unit of work. When conditions/<id>.json exists (finished by an earlier, interrupted
  // attempt of this run) its stored value is returned and `work` is not called; otherwise `work` runs
  // and its value is stored atomically. `id` must be a safe file name ([A-Za-z0-9._=-]).
  nlohmann::json condition(const std::string& id, const std::function<nlohmann::json()>& work);

  // The artifact cache. Returns ROOT/cache/<kind>/<sha256 of {kind, key, husai_version}>/, calling
  // build(dir, resume) first unless a complete entry exists; `resume` is true when an incomplete entry is
  // there (build may continue it, e.g. from a training checkpoint). `key` must name everything that
  // determines the artifact, including the sha256 of every input file.
  std::string cached(const std::string& kind, const nlohmann::json& key,
                     const std::function<void(const std::string& dir, bool resume)>& build);

  // Typed cache entries. Each records its main files as inputs of this run.
  // The transformer run folder for this transformer config (train_transformer).
  std::string transformer(const Config& transformer_config);
  // The activation file extracted from a cached transformer folder (extract_activations).
  std::string activations(const std::string& transformer_dir, const ExtractSpec& spec);
  // A train-sae run folder (seed<S>/ SAELens folders) for this SAE config on this activation file.
  std::string sae_run(const Config& sae_config, const std::string& activations_path);

  // Adds a file to the manifest's inputs (hashed now), path as given.
  void add_input(const std::string& path);
  // A metric for the registry (and `husai runs show`).
  void metric(const std::string& name, double value, const std::string& condition = "");

  // Files in the run folder, written atomically. figure() renders NAME.png and NAME.svg (skipped when
  // options().figures is false).
  std::string path(const std::string& name) const;  // run_dir/name
  void write_json(const std::string& name, const nlohmann::json& value) const;
  void write_text(const std::string& name, const std::string& text) const;
  void figure(const std::string& name, const std::string& gnuplot_body) const;

  // What the cache did during this run: {kind, key, dir, reused}; recorded in the manifest as `cache`.
  const nlohmann::json& cache_events() const { return cache_events_; }

  // Everything added through add_input/metric (the runner writes them to the manifest and registry).
  const std::vector<std::string>& inputs() const { return inputs_; }
  const std::vector<MetricRecord>& metrics() const { return metrics_; }

 private:
  const Config& config_;
  ExperimentOptions options_;
  std::string name_, run_id_, run_dir_;
  Registry& registry_;
  std::vector<std::string> inputs_;
  std::vector<MetricRecord> metrics_;
  nlohmann::json cache_events_ = nlohmann::json::array();
};

struct ExperimentDef {
  std::string name;
  std::string summary;                         // one line, for --help
  std::function<ConfigSchema()> schema;        // every key of configs/experiments/NAME.yaml
  std::function<int(ExperimentContext&)> run;  // returns the exit code
};

// Every experiment, in catalog.cpp.
const std::vector<ExperimentDef>& experiment_catalog();
// The experiment called `name`; an Error listing the known names otherwise.
const ExperimentDef& find_experiment(const std::string& name);

struct ExperimentRunResult {
  std::string run_id;
  std::string run_dir;
  int exit_code = 0;
  bool resumed = false;
};

// Creates (or with options.resume continues) the run folder, runs the experiment, writes the manifest,
// registry rows and ROOT/EXPERIMENT_LOG.md. Throws Interrupted / Error after marking the run
// interrupted / failed.
ExperimentRunResult run_experiment(const ExperimentDef& def, const Config& config,
                                   const ExperimentOptions& options);

// Rewrites ROOT/EXPERIMENT_LOG.md from the registry; returns its path.
std::string write_experiment_log(const std::string& root);

// Config helpers for experiment schemas.
// Copies every field of `src` into `dst` under `prefix.` (defaults, bounds and help kept), so an
// experiment config can carry a whole transformer or SAE config (`transformer.training.epochs`).
void embed_schema(ConfigSchema& dst, const std::string& prefix, const ConfigSchema& src);
// The embedded section as a Config of `schema` (its cross-field checks run), values and their sources
// taken from `config`.
Config sub_config(const Config& config, const std::string& prefix, const ConfigSchema& schema);

// Common sections: `transformer.*` (train-transformer's schema, default configs/transformer/default.yaml),
// `extract.layer|site|position`, `sae.*` (train-sae's schema), `compare.bootstrap|confidence|nulls|seed`.
void add_transformer_section(ConfigSchema& schema);
void add_extract_section(ConfigSchema& schema);
void add_sae_section(ConfigSchema& schema);
// compare.*: bootstrap, confidence, seed, nulls, null_seeds, surrogate (default "gaussian" when
// surrogate_by_default, else "none"), metric.
void add_compare_section(ConfigSchema& schema, bool surrogate_by_default = false);
ExtractSpec extract_spec_from(const Config& config);

}  // namespace husai
