#include "husai/io/registry.hpp"

#include <sqlite3.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/io/manifest.hpp"

namespace husai {

struct Registry::Impl {
  std::unique_ptr<SQLite::Database> db;
};

namespace {

constexpr int kBusyTimeoutMs = 5000;
constexpr int kMaxAttempts = 60;

bool is_busy(const SQLite::Exception& e) {
  const int code = e.getErrorCode() & 0xff;  // primary code of an extended one
  return code == SQLITE_BUSY || code == SQLITE_LOCKED;
}

// Runs `fn` (one complete unit of work), retrying with back-off while SQLite reports the database busy.
// Anything else becomes a husai::Error naming the database.
template <class Fn>
auto with_retry(const std::string& path, Fn&& fn) -> decltype(fn()) {
  for (int attempt = 1;; ++attempt) {
    try {
      return fn();
    } catch (const SQLite::Exception& e) {
      if (is_busy(e) && attempt < kMaxAttempts) {
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min(20 * attempt, 500)));
        continue;
      }
      throw Error(std::string("run registry: ") + e.what()).file(path);
    }
  }
}

// BEGIN IMMEDIATE takes the write lock up front, so two writers never deadlock upgrading read locks;
// the transaction rolls back unless commit() ran.
class WriteTransaction {
 public:
  explicit WriteTransaction(SQLite::Database& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }
  ~WriteTransaction() {
    if (!done_) {
      try {
        db_.exec("ROLLBACK");
      } catch (...) {  // NOLINT(bugprone-empty-catch): nothing more can be done while unwinding
      }
    }
  }
  WriteTransaction(const WriteTransaction&) = delete;
  WriteTransaction& operator=(const WriteTransaction&) = delete;
  void commit() {
    db_.exec("COMMIT");
    done_ = true;
  }

 private:
  SQLite::Database& db_;
  bool done_ = false;
};

// Run folders are stored relative to ROOT when they lie under it, so the registry stays valid whatever the
// working directory of the process that reads it, and when ROOT is moved; read back as ROOT / stored.
std::string stored_run_dir(const std::filesystem::path& root, const std::string& run_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path abs_root = fs::weakly_canonical(fs::absolute(root), ec);
  const fs::path abs_dir = fs::weakly_canonical(fs::absolute(run_dir), ec);
  const fs::path rel = abs_dir.lexically_relative(abs_root);
  if (ec || rel.empty() || *rel.begin() == "..") return run_dir;
  return rel.string();
}

RunRecord read_run(SQLite::Statement& q, const std::filesystem::path& root) {
  RunRecord r;
  r.id = q.getColumn(0).getString();
  r.experiment = q.getColumn(1).getString();
  r.status = q.getColumn(2).getString();
  r.config_hash = q.getColumn(3).getString();
  r.command = q.getColumn(4).getString();
  r.started_utc = q.getColumn(5).getString();
  r.finished_utc = q.getColumn(6).getString();
  r.git_commit = q.getColumn(7).getString();
  const std::filesystem::path stored = q.getColumn(8).getString();
  r.run_dir = stored.is_absolute() ? stored.string() : (root / stored).string();
  return r;
}

constexpr const char* kRunColumns =
    "id, experiment, status, config_hash, command, started_utc, finished_utc, git_commit, run_dir";

}  // namespace

std::string Registry::path_for_root(const std::string& root) {
  return (std::filesystem::path(root) / "registry.sqlite").string();
}

Registry::Registry(const std::string& root) : impl_(std::make_unique<Impl>()), path_(path_for_root(root)) {
  ensure_directory(root);
  with_retry(path_, [&] {
    impl_->db = std::make_unique<SQLite::Database>(path_, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE,
                                                   kBusyTimeoutMs);
    SQLite::Database& db = *impl_->db;
    db.exec("PRAGMA journal_mode=WAL");
    db.exec("PRAGMA synchronous=NORMAL");
    db.exec("PRAGMA foreign_keys=ON");
    WriteTransaction tx(db);
    db.exec(
        "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, experiment TEXT NOT NULL, status TEXT NOT "
        "NULL, config_hash TEXT NOT NULL, command TEXT NOT NULL, started_utc TEXT NOT NULL, finished_utc "
        "TEXT NOT NULL DEFAULT '', git_commit TEXT NOT NULL, run_dir TEXT NOT NULL)");
    db.exec(
        "CREATE TABLE IF NOT EXISTS artifacts (run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, "
        "path TEXT NOT NULL, kind TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, "
        "PRIMARY KEY (run_id, kind, path))");
    db.exec(
        "CREATE TABLE IF NOT EXISTS metrics (run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, "
        "name TEXT NOT NULL, value REAL, condition TEXT NOT NULL DEFAULT '', "
        "PRIMARY KEY (run_id, name, condition))");
    db.exec("CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs (experiment, status, started_utc)");
    tx.commit();
  });
}

Registry::~Registry() = default;

void Registry::begin_run(const RunRecord& run) {
  with_retry(path_, [&] {
    SQLite::Database& db = *impl_->db;
    WriteTransaction tx(db);
    SQLite::Statement q(
        db, fmt::format("INSERT OR REPLACE INTO runs ({}) VALUES (?,?,?,?,?,?,?,?,?)", kRunColumns));
    q.bind(1, run.id);
    q.bind(2, run.experiment);
    q.bind(3, run.status);
    q.bind(4, run.config_hash);
    q.bind(5, run.command);
    q.bind(6, run.started_utc);
    q.bind(7, run.finished_utc);
    q.bind(8, run.git_commit);
    q.bind(9, stored_run_dir(std::filesystem::path(path_).parent_path(), run.run_dir));
    q.exec();
    tx.commit();
  });
}

void Registry::finish_run(const std::string& run_id, const std::string& status) {
  with_retry(path_, [&] {
    SQLite::Database& db = *impl_->db;
    WriteTransaction tx(db);
    SQLite::Statement q(db, "UPDATE runs SET status = ?, finished_utc = ? WHERE id = ?");
    q.bind(1, status);
    q.bind(2, utc_timestamp_iso());
    q.bind(3, run_id);
    if (q.exec() != 1) throw Error("run registry: no run with id " + run_id).file(path_);
    tx.commit();
  });
}

void Registry::set_artifacts(const std::string& run_id, const std::vector<ArtifactRecord>& artifacts) {
  with_retry(path_, [&] {
    SQLite::Database& db = *impl_->db;
    WriteTransaction tx(db);
    SQLite::Statement del(db, "DELETE FROM artifacts WHERE run_id = ?");
    del.bind(1, run_id);
    del.exec();
    SQLite::Statement q(db, "INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?,?)");
    for (const ArtifactRecord& a : artifacts) {
      q.bind(1, run_id);
      q.bind(2, a.path);
      q.bind(3, a.kind);
      q.bind(4, a.sha256);
      q.bind(5, static_cast<int64_t>(a.bytes));
      q.exec();
      q.reset();
    }
    tx.commit();
  });
}

void Registry::add_metrics(const std::string& run_id, const std::vector<MetricRecord>& metrics) {
  with_retry(path_, [&] {
    SQLite::Database& db = *impl_->db;
    WriteTransaction tx(db);
    SQLite::Statement q(db, "INSERT OR REPLACE INTO metrics VALUES (?,?,?,?)");
    for (const MetricRecord& m : metrics) {
      q.bind(1, run_id);
      q.bind(2, m.name);
      if (std::isfinite(m.value)) {
        q.bind(3, m.value);
      } else {
        q.bind(3);  // NULL: SQLite has no NaN
      }
      q.bind(4, m.condition);
      q.exec();
      q.reset();
    }
    tx.commit();
  });
}

std::vector<RunRecord> Registry::list_runs(const std::string& experiment) const {
  return with_retry(path_, [&] {
    std::vector<RunRecord> out;
    SQLite::Statement q(*impl_->db, fmt::format("SELECT {} FROM runs WHERE ? = '' OR experiment = ? ORDER BY "
                                                "started_utc DESC, id DESC",
                                                kRunColumns));
    q.bind(1, experiment);
    q.bind(2, experiment);
    while (q.executeStep()) out.push_back(read_run(q, std::filesystem::path(path_).parent_path()));
    return out;
  });
}

std::optional<RunRecord> Registry::find_run(const std::string& run_id) const {
  return with_retry(path_, [&]() -> std::optional<RunRecord> {
    SQLite::Statement q(*impl_->db, fmt::format("SELECT {} FROM runs WHERE id = ?", kRunColumns));
    q.bind(1, run_id);
    if (q.executeStep()) return read_run(q, std::filesystem::path(path_).parent_path());
    return std::nullopt;
  });
}

std::vector<ArtifactRecord> Registry::artifacts(const std::string& run_id) const {
  return with_retry(path_, [&] {
    std::vector<ArtifactRecord> out;
    SQLite::Statement q(
        *impl_->db, "SELECT path, kind, sha256, bytes FROM artifacts WHERE run_id = ? ORDER BY kind, path");
    q.bind(1, run_id);
    while (q.executeStep()) {
      out.push_back({q.getColumn(0).getString(), q.getColumn(1).getString(), q.getColumn(2).getString(),
                     q.getColumn(3).getInt64()});
    }
    return out;
  });
}

std::vector<MetricRecord> Registry::metrics(const std::string& run_id) const {
  return with_retry(path_, [&] {
    std::vector<MetricRecord> out;
    SQLite::Statement q(
        *impl_->db, "SELECT name, value, condition FROM metrics WHERE run_id = ? ORDER BY condition, name");
    q.bind(1, run_id);
    while (q.executeStep()) {
      const double v = q.getColumn(1).isNull() ? std::nan("") : q.getColumn(1).getDouble();
      out.push_back({q.getColumn(0).getString(), v, q.getColumn(2).getString()});
    }
    return out;
  });
}

std::optional<RunRecord> Registry::latest_completed(const std::string& experiment,
                                                    const std::string& config_hash) const {
  return with_retry(path_, [&]() -> std::optional<RunRecord> {
    SQLite::Statement q(
        *impl_->db, fmt::format("SELECT {} FROM runs WHERE experiment = ? AND status = 'completed' AND "
                                "substr(config_hash, 1, length(?)) = ? ORDER BY started_utc DESC, id DESC "
                                "LIMIT 1",
                                kRunColumns));
    q.bind(1, experiment);
    q.bind(2, config_hash);
    q.bind(3, config_hash);
    if (q.executeStep()) return read_run(q, std::filesystem::path(path_).parent_path());
    return std::nullopt;
  });
}

std::string Registry::experiment_log_markdown() const {
  std::vector<RunRecord> runs = list_runs();
  std::string s =
      "# Experiment log\n\nRegenerated from `registry.sqlite` by `husai runs log`; do not edit by hand. One "
      "entry per run, oldest first: the command that produced it and the artifacts it wrote.\n";
  for (auto it = runs.rbegin(); it != runs.rend(); ++it) {
    const RunRecord& r = *it;
    s += fmt::format("\n## {} ({})\n\n", r.id, r.experiment);
    s += fmt::format("- status: {}\n- started: {}\n- finished: {}\n- git commit: {}\n- config hash: `{}`\n",
                     r.status, r.started_utc, r.finished_utc.empty() ? "-" : r.finished_utc, r.git_commit,
                     r.config_hash);
    s += fmt::format("- run folder: `{}`\n- command: `{}`\n", r.run_dir, r.command);
    const std::vector<ArtifactRecord> arts = artifacts(r.id);
    if (arts.empty()) {
      s += "- artifacts: none recorded\n";
      continue;
    }
    s += "\n| kind | path | bytes | sha256 |\n|---|---|---:|---|\n";
    for (const ArtifactRecord& a : arts) {
      s += fmt::format("| {} | `{}` | {} | `{}` |\n", a.kind, a.path, a.bytes, a.sha256.substr(0, 16));
    }
  }
  return s;
}

}  // namespace husai
