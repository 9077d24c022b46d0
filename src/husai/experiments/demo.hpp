#pragma once

// The main job (`make demo`): train the default transformer until it groks, extract its answer-position
// activations, and write a report. Later steps of the study (SAEs, stability) extend this.

#include <string>

#include "husai/io/config.hpp"

namespace husai {

struct DemoOptions {
  std::string root = "results";
  bool quiet = false;
};

struct DemoResult {
  std::string run_dir;
  std::string report_path;         // ROOT/demo/<run_id>/REPORT.md
  std::string latest_report_path;  // ROOT/demo/REPORT.md
  std::string activations_path;
};

DemoResult run_demo(const Config& transformer_config, const DemoOptions& options);

}  // namespace husai
