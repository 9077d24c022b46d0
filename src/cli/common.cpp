#include "common.hpp"

#include <cstdio>

#include "husai/core/error.hpp"
#include "husai/core/threading.hpp"

namespace husai::cli {

void add_common(CLI::App* app, CommonOptions& common) {
  app->add_flag("-q,--quiet", common.quiet, "silence progress output");
  app->add_option("--threads", common.threads, "worker threads (default: OMP_NUM_THREADS or all cores)")
      ->check(CLI::NonNegativeNumber);
}

void apply_common(const CommonOptions& common) {
  set_num_threads(common.threads);
}

void add_config_options(CLI::App* app, ConfigOptions& opts) {
  app->add_option("-c,--config", opts.config_file, "YAML config file (unknown keys are errors)")
      ->check(CLI::ExistingFile);
  app->add_option("--set", opts.sets, "override a config key: --set section.key=value (repeatable)")
      ->take_all()
      ->allow_extra_args(false);
}

void add_config_flag(CLI::App* app, ConfigOptions& opts, const std::string& flag, const std::string& key,
                     const std::string& help) {
  auto& slot = opts.flags[key];
  slot.first = flag;
  app->add_option_function<std::string>(
      flag, [&slot](const std::string& v) { slot.second = v; }, help + " (config key " + key + ")");
}

void add_config_list_flag(CLI::App* app, ConfigOptions& opts, const std::string& flag, const std::string& key,
                          const std::string& help) {
  auto& slot = opts.flags[key];
  slot.first = flag;
  app->add_option_function<std::string>(
      flag,
      [&slot](const std::string& v) { slot.second = v.empty() || v.front() == '[' ? v : "[" + v + "]"; },
      help + " (config key " + key + ")");
}

Config build_config(ConfigSchema schema, const ConfigOptions& opts) {
  Config config(std::move(schema));
  if (!opts.config_file.empty()) config.merge_yaml_file(opts.config_file);
  for (const std::string& s : opts.sets) config.apply_override(s);
  for (const auto& [key, flag_value] : opts.flags) {
    if (flag_value.second) config.set_text(key, *flag_value.second, flag_value.first);
  }
  config.validate();
  return config;
}

void add_output_options(CLI::App* app, OutputOptions& opts, const std::string& what, bool required) {
  auto* o = app->add_option("-o,--out", opts.out, what);
  if (required) o->required();
  app->add_flag("--resume", opts.resume,
                "continue an interrupted run in --out (starts fresh when there is none)");
  app->add_flag("--overwrite", opts.overwrite, "replace the contents of a non-empty --out");
}

ExistingOutput existing_policy(const OutputOptions& opts) {
  if (opts.resume && opts.overwrite) throw Error("--resume and --overwrite exclude each other");
  if (opts.resume) return ExistingOutput::Resume;
  if (opts.overwrite) return ExistingOutput::Overwrite;
  return ExistingOutput::Refuse;
}

int report_experiment_interrupted(const char* what) {
  std::fprintf(stderr,
               "husai: %s. Finished conditions and cache entries are kept; continue with the same command "
               "plus --resume.\n",
               what);
  return 1;
}

int report_interrupted(const char* unit, int64_t count, const std::string& out_dir) {
  std::fprintf(stderr,
               "husai: interrupted after %s %lld; a checkpoint is in %s. Resume with the same command plus "
               "--resume.\n",
               unit, static_cast<long long>(count), out_dir.c_str());
  return 1;
}

}  // namespace husai::cli
