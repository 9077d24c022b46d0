// husai: one binary, one subcommand per runbook step. Parsing and printing only; the work lives in
// libhusai.

#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "commands.hpp"
#include "husai/core/cluster.hpp"
#include "husai/core/error.hpp"
#include "husai/core/version.hpp"
#include "husai/io/manifest.hpp"

namespace {

// " (rank R of N)" under mpirun, else nothing.
std::string rank_prefix() {
  if (!husai::cluster::active()) return "";
  return " (rank " + std::to_string(husai::cluster::rank()) + " of " +
         std::to_string(husai::cluster::size()) + ")";
}

int run_cli(int argc, char** argv) {
  husai::set_command_line(argc, argv);
  CLI::App app{
      "husai: reliability-first sparse-autoencoder research on a transformer that truly groks modular "
      "arithmetic.\nRun `husai <command> --help` for a command's options."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("husai ") + husai::version() + " (git " +
                                        husai::git_commit() + (husai::git_dirty() ? ", dirty" : "") + ")" +
                                        (husai::cluster::built_with_mpi() ? " with MPI" : " without MPI"));
  std::map<CLI::App*, husai::cli::Runner> runners;
  auto add = [&](husai::cli::Runner (*reg)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    husai::cli::Runner r = reg(app);
    runners[app.get_subcommands({})[before]] = std::move(r);
  };
  add(husai::cli::register_train_transformer);
  add(husai::cli::register_eval_transformer);
  add(husai::cli::register_extract);
  add(husai::cli::register_demo);
  add(husai::cli::register_train_sae);
  add(husai::cli::register_architectures);
  add(husai::cli::register_synth);
  add(husai::cli::register_eval_sae);
  add(husai::cli::register_compare);
  add(husai::cli::register_experiment);
  add(husai::cli::register_runs);
  add(husai::cli::register_audit);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // prints the message and the usage of the failing (sub)command
    return 1;
  }
  try {
    for (CLI::App* sub : app.get_subcommands()) {
      const std::string name = sub->get_name();
      if (husai::cluster::active() && name != "train-sae" && name != "experiment" && name != "demo") {
        throw husai::cluster::RankFailure("husai " + name +
                                          " runs as one process; under mpirun only train-sae, experiment and "
                                          "demo spread their SAE trainings over the ranks (docs/cluster.md)");
      }
      return runners.at(sub)();
    }
  } catch (const husai::cluster::RankFailure& e) {
    // Every rank knows it: rank 0 reports it once.
    if (husai::cluster::rank() == 0) std::fprintf(stderr, "husai: error: %s\n", e.message().c_str());
    return 1;
  } catch (const husai::Error& e) {
    std::fprintf(stderr, "husai%s: error: %s\n", rank_prefix().c_str(), e.message().c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "husai%s: error: %s\n", rank_prefix().c_str(), e.what());
    return 1;
  }
  return 1;
}

}  // namespace

// Building the command table can throw too (bad_alloc, CLI11 construction errors); nothing escapes main.
int main(int argc, char** argv) {
  try {
    // MPI, when started by mpirun or srun (husai/core/cluster.hpp), for the whole life of the process.
    const husai::cluster::Session session;
    return run_cli(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "husai: error: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "husai: error: unknown exception\n");
  }
  return 1;
}
