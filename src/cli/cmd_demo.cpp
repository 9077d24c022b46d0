// demo: the main job on built-in defaults.

#include <cstdio>
#include <memory>

#include "commands.hpp"
#include "common.hpp"
#include "husai/experiments/demo.hpp"
#include "husai/train/transformer_config.hpp"

namespace husai::cli {

Runner register_demo(CLI::App& app) {
  CLI::App* sub =
      app.add_subcommand("demo",
                         "The main job: train the default transformer until it groks, extract its "
                         "answer-position activations and "
                         "write ROOT/demo/<run_id>/REPORT.md (latest copied to ROOT/demo/REPORT.md).");
  struct Opts {
    CommonOptions common;
    ConfigOptions config;
    std::string root = "results";
  };
  auto o = std::make_shared<Opts>();
  add_common(sub, o->common);
  add_config_options(sub, o->config);
  sub->add_option("-o,--out", o->root, "results root (default: results)");
  return [o] {
    apply_common(o->common);
    const Config config = build_config(transformer_config_schema(), o->config);
    DemoOptions opts;
    opts.root = o->root;
    opts.quiet = o->common.quiet;
    const DemoResult r = run_demo(config, opts);
    std::printf("demo run folder: %s\nactivations:     %s\nreport:          %s\n", r.run_dir.c_str(),
                r.activations_path.c_str(), r.latest_report_path.c_str());
    return 0;
  };
}

}  // namespace husai::cli
