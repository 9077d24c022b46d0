// Run registry: round trips, the latest-matching query, the log, and concurrent writers losing no rows.

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/io/registry.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("husai_registry_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  return dir;
}

RunRecord make_run(const std::string& id, const std::string& experiment, const std::string& started,
                   const std::string& hash = "abcdef0123456789") {
  RunRecord r;
  r.id = id;
  r.experiment = experiment;
  r.status = "running";
  r.config_hash = hash;
  r.command = "husai experiment " + experiment;
  r.started_utc = started;
  r.git_commit = "deadbeef";
  r.run_dir = "results/" + experiment + "/" + id;
  return r;
}

TEST(Registry, RoundTripAndLatestMatching) {
  const fs::path root = fresh_dir("roundtrip");
  Registry reg(root.string());
  EXPECT_TRUE(fs::exists(root / "registry.sqlite"));
  reg.begin_run(make_run("r1", "phase4a", "2026-01-01T00:00:00Z", "aaaa1111"));
  reg.begin_run(make_run("r2", "phase4a", "2026-01-02T00:00:00Z", "bbbb2222"));
  reg.begin_run(make_run("r3", "ablations", "2026-01-03T00:00:00Z"));
  reg.finish_run("r1", "completed");
  reg.finish_run("r2", "completed");
  EXPECT_THROW(reg.finish_run("nope", "completed"), Error);

  reg.set_artifacts("r1", {{"results.json", "output", "00ff", 12}, {"in.safetensors", "input", "11ee", 99}});
  reg.set_artifacts("r1", {{"results.json", "output", "00ff", 13}});  // replaces, not appends
  reg.add_metrics("r1", {{"delta", 0.5, "k=8"}, {"delta", 0.25, "k=16"}, {"nan", std::nan(""), ""}});
  reg.add_metrics("r1", {{"delta", 0.75, "k=8"}});  // same (name, condition): replaced

  const auto arts = reg.artifacts("r1");
  ASSERT_EQ(arts.size(), 1U);
  EXPECT_EQ(arts[0].bytes, 13);
  const auto mets = reg.metrics("r1");
  ASSERT_EQ(mets.size(), 3U);
  EXPECT_EQ(mets[0].name, "nan");
  EXPECT_TRUE(std::isnan(mets[0].value));
  EXPECT_EQ(mets[1].condition, "k=16");
  EXPECT_DOUBLE_EQ(mets[2].value, 0.75);

  const auto runs = reg.list_runs();
  ASSERT_EQ(runs.size(), 3U);
  EXPECT_EQ(runs[0].id, "r3");  // newest first
  EXPECT_EQ(reg.list_runs("phase4a").size(), 2U);

  ASSERT_TRUE(reg.latest_completed("phase4a"));
  EXPECT_EQ(reg.latest_completed("phase4a")->id, "r2");
  EXPECT_EQ(reg.latest_completed("phase4a", "aaaa")->id, "r1");  // by config-hash prefix
  EXPECT_FALSE(reg.latest_completed("phase4a", "cccc"));
  EXPECT_FALSE(reg.latest_completed("ablations"));  // still running

  const auto r1 = reg.find_run("r1");
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->status, "completed");
  EXPECT_FALSE(r1->finished_utc.empty());

  // A second connection sees the same rows; the log lists commands and artifacts oldest first.
  Registry again(root.string());
  const std::string log = again.experiment_log_markdown();
  EXPECT_NE(log.find("husai experiment phase4a"), std::string::npos);
  EXPECT_NE(log.find("`results.json`"), std::string::npos);
  EXPECT_LT(log.find("## r1"), log.find("## r3"));
  fs::remove_all(root);
}

void write_many(const std::string& root, const std::string& tag, int n_runs) {
  Registry reg(root);
  for (int i = 0; i < n_runs; ++i) {
    const std::string id = tag + "-" + std::to_string(i);
    reg.begin_run(make_run(id, "concurrency", "2026-01-01T00:00:00Z"));
    reg.set_artifacts(id, {{"a.json", "output", "00", 1}, {"b.csv", "output", "11", 2}});
    reg.add_metrics(id, {{"m", static_cast<double>(i), ""}, {"m", 1.0, "c"}});
    reg.finish_run(id, "completed");
  }
}

void expect_all_rows(const std::string& root, const std::vector<std::string>& tags, int n_runs) {
  Registry reg(root);
  const auto runs = reg.list_runs("concurrency");
  EXPECT_EQ(runs.size(), tags.size() * static_cast<size_t>(n_runs));
  for (const auto& tag : tags) {
    for (int i = 0; i < n_runs; ++i) {
      const std::string id = tag + "-" + std::to_string(i);
      const auto run = reg.find_run(id);
      ASSERT_TRUE(run) << id;
      EXPECT_EQ(run->status, "completed") << id;
      EXPECT_EQ(reg.artifacts(id).size(), 2U) << id;
      EXPECT_EQ(reg.metrics(id).size(), 2U) << id;
    }
  }
}

TEST(Registry, ConcurrentThreadsWithOwnConnectionsLoseNoRows) {
  const fs::path root = fresh_dir("threads");
  const int n_threads = 6, n_runs = 25;
  std::vector<std::string> tags;
  std::vector<std::thread> workers;
  for (int t = 0; t < n_threads; ++t) tags.push_back("t" + std::to_string(t));
  for (const auto& tag : tags) workers.emplace_back(write_many, root.string(), tag, n_runs);
  for (auto& w : workers) w.join();
  expect_all_rows(root.string(), tags, n_runs);
  fs::remove_all(root);
}

TEST(Registry, ConcurrentProcessesLoseNoRows) {
  const fs::path root = fresh_dir("procs");
  const int n_procs = 4, n_runs = 25;
  std::vector<std::string> tags;
  std::vector<pid_t> pids;
  for (int p = 0; p < n_procs; ++p) tags.push_back("p" + std::to_string(p));
  for (const auto& tag : tags) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int code = 0;
      try {
        write_many(root.string(), tag, n_runs);
      } catch (...) {
        code = 3;
      }
      _exit(code);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
  expect_all_rows(root.string(), tags, n_runs);
  fs::remove_all(root);
}

}  // namespace
}  // namespace husai
