#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace husai::cli {

// Each subcommand registers itself on the app and returns the function that runs it after parsing.
using Runner = std::function<int()>;

Runner register_train_transformer(CLI::App& app);
Runner register_eval_transformer(CLI::App& app);
Runner register_extract(CLI::App& app);
Runner register_demo(CLI::App& app);
Runner register_train_sae(CLI::App& app);
Runner register_architectures(CLI::App& app);
Runner register_synth(CLI::App& app);
Runner register_eval_sae(CLI::App& app);
Runner register_compare(CLI::App& app);
Runner register_experiment(CLI::App& app);
Runner register_runs(CLI::App& app);
Runner register_audit(CLI::App& app);

}  // namespace husai::cli
