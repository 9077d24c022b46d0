// experiment, runs, audit: the experiment programme, the run registry and the audit.

#include <cstdio>
#include <memory>

#include "commands.hpp"
#include "common.hpp"
#include "husai/core/atomic_file.hpp"
#include "husai/core/cluster.hpp"
#include "husai/core/error.hpp"
#include "husai/experiments/claims.hpp"
#include "husai/experiments/runner.hpp"
#include "husai/io/registry.hpp"
#include "husai/train/sae_run.hpp"

namespace husai::cli {

Runner register_experiment(CLI::App& app) {
  std::string names;
  for (const ExperimentDef& d : experiment_catalog()) names += "\n  " + d.name + ": " + d.summary;
  CLI::App* sub = app.add_subcommand(
      "experiment",
      "Run an experiment of the runbook into ROOT/NAME/<run_id>/ (config.json, results.json, CSVs, "
      "summary.md, "
      "figures, manifest.json) with registry rows in ROOT/registry.sqlite and cached upstream artifacts in "
      "ROOT/cache/.");
  struct Opts {
    CommonOptions common;
    ConfigOptions config;
    std::string name;
    std::string root = "results";
    bool resume = false;
    bool fail_on_gate_fail = false;
    bool no_figures = false;
    bool keys = false;
  };
  auto o = std::make_shared<Opts>();
  add_common(sub, o->common);
  add_config_options(sub, o->config);
  sub->add_option("name", o->name, "experiment name")->required();
  sub->add_option("-o,--out", o->root, "results root ROOT (default: results)");
  sub->add_flag("--resume", o->resume, "continue the newest unfinished run of NAME with the same config");
  sub->add_flag("--fail-on-gate-fail", o->fail_on_gate_fail, "release-gate: exit 2 when a gate fails");
  sub->add_flag("--no-figures", o->no_figures, "skip the gnuplot figures");
  sub->add_flag("--keys", o->keys, "print NAME's config keys with defaults and exit");
  add_config_list_flag(sub, o->config, "--k-candidates", "adaptive.k_candidates",
                       "adaptive-l0: comma-separated k candidates; 32 = matched control");
  sub->footer(
      "Experiments:" + names +
      "\nConfigs: configs/experiments/NAME.yaml (equal to the built-in defaults); `husai experiment NAME "
      "--keys` lists every key.");
  return [o] {
    apply_common(o->common);
    // Under mpirun rank 0 runs the command and the other ranks take their share of each SAE training
    // (docs/cluster.md); the service's end releases them, however rank 0 finishes.
    if (cluster::rank() != 0) {
      serve_train_sae_calls();
      return 0;
    }
    const TrainSaeService service;
    const ExperimentDef& def = find_experiment(o->name);
    if (o->keys) {
      std::printf("%s", def.schema().describe().c_str());
      return 0;
    }
    const Config config = build_config(def.schema(), o->config);
    ExperimentOptions opts;
    opts.root = o->root;
    opts.resume = o->resume;
    opts.quiet = o->common.quiet;
    opts.fail_on_gate_fail = o->fail_on_gate_fail;
    opts.figures = !o->no_figures;
    try {
      const ExperimentRunResult r = run_experiment(def, config, opts);
      std::printf("%s run folder: %s\n", def.name.c_str(), r.run_dir.c_str());
      return r.exit_code;
    } catch (const Interrupted& e) {
      return report_experiment_interrupted(e.what());
    }
  };
}

Runner register_runs(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("runs", "The run registry ROOT/registry.sqlite: list, show, log.");
  sub->require_subcommand(1);
  struct Opts {
    CommonOptions common;
    std::string root = "results";
    std::string experiment;
    std::string id;
  };
  auto o = std::make_shared<Opts>();
  add_common(sub, o->common);
  sub->add_option("--root", o->root, "results root (default: results)");
  CLI::App* list = sub->add_subcommand("list", "every run, newest first");
  list->add_option("--experiment", o->experiment, "only runs of this experiment");
  list->add_option("--root", o->root, "results root (default: results)");
  CLI::App* show = sub->add_subcommand("show", "one run: record, metrics, artifacts");
  show->add_option("id", o->id, "run id")->required();
  show->add_option("--root", o->root, "results root (default: results)");
  CLI::App* log = sub->add_subcommand("log", "regenerate ROOT/EXPERIMENT_LOG.md (command -> artifacts)");
  log->add_option("--root", o->root, "results root (default: results)");
  return [o, list, show, log] {
    apply_common(o->common);
    if (*log) {
      std::printf("%s\n", write_experiment_log(o->root).c_str());
      return 0;
    }
    const Registry reg(o->root);
    if (*list) {
      std::printf("%-36s %-18s %-11s %-20s %s\n", "id", "experiment", "status", "started (UTC)",
                  "run folder");
      for (const RunRecord& r : reg.list_runs(o->experiment)) {
        std::printf("%-36s %-18s %-11s %-20s %s\n", r.id.c_str(), r.experiment.c_str(), r.status.c_str(),
                    r.started_utc.c_str(), r.run_dir.c_str());
      }
      return 0;
    }
    if (*show) {
      const auto r = reg.find_run(o->id);
      if (!r) throw Error("no run with id '" + o->id + "' in " + reg.path());
      std::printf(
          "id:          %s\nexperiment:  %s\nstatus:      %s\nconfig hash: %s\nstarted:     %s\nfinished:    "
          "%s\ngit commit:  %s\nrun folder:  %s\ncommand:     %s\n",
          r->id.c_str(), r->experiment.c_str(), r->status.c_str(), r->config_hash.c_str(),
          r->started_utc.c_str(), r->finished_utc.c_str(), r->git_commit.c_str(), r->run_dir.c_str(),
          r->command.c_str());
      const auto metrics = reg.metrics(o->id);
      if (!metrics.empty()) std::printf("metrics:\n");
      for (const MetricRecord& m : metrics) {
        std::printf("  %-28s %-24s %.6g\n", m.name.c_str(), m.condition.empty() ? "-" : m.condition.c_str(),
                    m.value);
      }
      const auto arts = reg.artifacts(o->id);
      if (!arts.empty()) std::printf("artifacts:\n");
      for (const ArtifactRecord& a : arts) {
        std::printf("  %-6s %12lld  %.16s  %s\n", a.kind.c_str(), static_cast<long long>(a.bytes),
                    a.sha256.c_str(), a.path.c_str());
      }
      return 0;
    }
    return 1;
  };
}

Runner register_audit(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("audit",
                                     "Re-derive each headline claim of the latest completed run of every "
                                     "experiment from its stored result files "
                                     "and print which still hold; writes ROOT/AUDIT.md.");
  struct Opts {
    CommonOptions common;
    std::string root = "results";
  };
  auto o = std::make_shared<Opts>();
  add_common(sub, o->common);
  sub->add_option("--root,-o,--out", o->root, "results root (default: results)");
  return [o] {
    apply_common(o->common);
    const AuditReport report = run_audit(o->root);
    const std::string path = o->root + "/AUDIT.md";
    write_file_atomic(path, report.markdown);
    size_t holds = 0;
    for (const AuditLine& l : report.lines) {
      holds += l.status == "holds" ? 1 : 0;
      if (!o->common.quiet) {
        std::printf("%-16s %-15s %-44s %s\n    %s\n", l.experiment.c_str(), l.status.c_str(),
                    l.claim_id.c_str(), l.statement.c_str(), l.detail.c_str());
      }
    }
    std::printf("audit: %zu of %zu claims hold; report %s\n", holds, report.lines.size(), path.c_str());
    return 0;
  };
}

}  // namespace husai::cli
