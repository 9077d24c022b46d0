#pragma once

// The run registry: ROOT/registry.sqlite, one row per experiment run, its artifacts (with sha256 and size)
// and its headline metrics. `husai runs list|show|log`, the release gate and the audit read it.
//
// Several processes may write at once (two experiments sharing a ROOT): the database runs in WAL mode
// with a busy timeout, every write is one IMMEDIATE transaction, and a write that still meets
// SQLITE_BUSY/SQLITE_LOCKED is retried with back-off. Each Registry object owns its own connection; do
// not share one object between threads (open one per thread instead).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace husai {

struct RunRecord {
  std::string id;  // YYYYmmddTHHMMSSZ-<config hash 8 hex>[-N]
  std::string experiment;
  std::string status;  // running | completed | failed | interrupted
  std::string config_hash;
  std::string command;  // argv joined with spaces
  std::string started_utc;
  std::string finished_utc;  // "" while running
  std::string git_commit;
  std::string run_dir;  // stored relative to ROOT when under it; read back as ROOT / stored (or absolute)
};

struct ArtifactRecord {
  std::string path;  // as recorded in the run's manifest (relative to the run folder or as given)
  std::string kind;  // "output" | "input"
  std::string sha256;
  int64_t bytes = 0;
};

struct MetricRecord {
  std::string name;
  double value = 0;
  std::string condition;  // "" for run-level metrics
};

class Registry {
 public:
  // Opens (creating when missing) ROOT/registry.sqlite; creates ROOT too.
  explicit Registry(const std::string& root);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  static std::string path_for_root(const std::string& root);
  const std::string& path() const { return path_; }

  // Inserts the run, or (a resumed run) resets an existing row with this id to the new values.
  void begin_run(const RunRecord& run);
  // Sets status and finished_utc (now).
  void finish_run(const std::string& run_id, const std::string& status);
  // Replaces the run's artifacts / adds its metrics (a metric with the same name and condition is
  // replaced), each call one transaction.
  void set_artifacts(const std::string& run_id, const std::vector<ArtifactRecord>& artifacts);
  void add_metrics(const std::string& run_id, const std::vector<MetricRecord>& metrics);

  // Newest first (by started_utc, then id). Empty experiment = all.
  std::vector<RunRecord> list_runs(const std::string& experiment = "") const;
  std::optional<RunRecord> find_run(const std::string& run_id) const;
  std::vector<ArtifactRecord> artifacts(const std::string& run_id) const;
  std::vector<MetricRecord> metrics(const std::string& run_id) const;

  // "Latest matching result": the newest completed run of `experiment`, optionally with this config hash
  // (full hash, or a prefix of it).
  std::optional<RunRecord> latest_completed(const std::string& experiment,
                                            const std::string& config_hash = "") const;

  // EXPERIMENT_LOG.md regenerated from the registry: per run, oldest first, the command and its artifacts.
  std::string experiment_log_markdown() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

}  // namespace husai
