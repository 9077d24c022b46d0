#pragma once

// Option plumbing shared by the subcommands: --config/--set/--quiet/--threads, and the named flags
// that override config keys. No maths here.

#include <CLI/CLI.hpp>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "husai/io/config.hpp"
#include "husai/io/run_dir.hpp"

namespace husai::cli {

struct CommonOptions {
  bool quiet = false;
  int threads = 0;
};

void add_common(CLI::App* app, CommonOptions& common);
// Applies --threads (0 = default) before any work runs.
void apply_common(const CommonOptions& common);

// A subcommand driven by a config schema: --config FILE, repeated --set key=value, and named flags
// bound to config keys (their text parsed like a --set value).
struct ConfigOptions {
  std::string config_file;
  std::vector<std::string> sets;
  std::map<std::string, std::pair<std::string, std::optional<std::string>>> flags;  // key -> (flag, value)
};

void add_config_options(CLI::App* app, ConfigOptions& opts);
void add_config_flag(CLI::App* app, ConfigOptions& opts, const std::string& flag, const std::string& key,
                     const std::string& help);
// A flag bound to a list-valued key: "42,123" is read as the flow list "[42,123]" (a value already in
// brackets is kept as it is).
void add_config_list_flag(CLI::App* app, ConfigOptions& opts, const std::string& flag, const std::string& key,
                          const std::string& help);
Config build_config(ConfigSchema schema, const ConfigOptions& opts);

struct OutputOptions {
  std::string out;
  bool resume = false;
  bool overwrite = false;
};
void add_output_options(CLI::App* app, OutputOptions& opts, const std::string& what, bool required = true);
ExistingOutput existing_policy(const OutputOptions& opts);

// After SIGINT/SIGTERM: says where the checkpoint is and how to resume; returns the exit code (1).
int report_interrupted(const char* unit, int64_t count, const std::string& out_dir);
// After SIGINT/SIGTERM stopped an experiment (husai experiment, husai demo): says that finished conditions
// and cache entries are kept and how to resume; returns the exit code (1).
int report_experiment_interrupted(const char* what);

}  // namespace husai::cli
