// The experiment framework: run folders and ids, manifest and registry rows, conditions kept on resume,
// and the artifact cache (reuse, key changes, incomplete and tampered entries).

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "husai/core/atomic_file.hpp"
#include "husai/experiments/runner.hpp"
#include "husai/io/registry.hpp"
#include "husai/train/transformer_config.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

fs::path fresh_root(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("husai_runner_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  return dir;
}

ConfigSchema toy_schema() {
  ConfigSchema s;
  s.add_int("toy.value", 1, "a number");
  return s;
}

bool g_interrupt_at_b = false;  // simulates a stop between conditions a and b
int g_a_runs = 0;

int toy_run(ExperimentContext& ctx) {
  const nlohmann::json a = ctx.condition("a", [&] {
    ++g_a_runs;
    return nlohmann::json{{"v", ctx.config().get_int("toy.value")}};
  });
  const nlohmann::json b = ctx.condition("b", [&] {
    if (g_interrupt_at_b) throw Interrupted("stopped between conditions");
    return nlohmann::json{{"v", 2}};
  });
  ctx.metric("sum", a["v"].get<double>() + b["v"].get<double>(), "all");
  ctx.write_json("results.json", {{"schema_version", 1}, {"a", a}, {"b", b}});
  return 0;
}

const ExperimentDef kToy{"toy", "a test experiment", toy_schema, toy_run};

TEST(ExperimentRunner, RunFolderManifestRegistryAndDistinctIds) {
  const fs::path root = fresh_root("folder");
  Config config(toy_schema());
  ExperimentOptions o;
  o.root = root.string();
  o.quiet = true;
  const ExperimentRunResult r1 = run_experiment(kToy, config, o);
  const ExperimentRunResult r2 = run_experiment(kToy, config, o);  // very likely the same second
  EXPECT_NE(r1.run_id, r2.run_id);
  EXPECT_EQ(r1.run_id.substr(17, 8), config.hash().substr(0, 8));
  EXPECT_EQ(r1.run_id.size() >= 25, true);
  for (const auto* r : {&r1, &r2}) {
    EXPECT_TRUE(fs::exists(fs::path(r->run_dir) / "config.json"));
    EXPECT_TRUE(fs::exists(fs::path(r->run_dir) / "results.json"));
    const nlohmann::json m =
        nlohmann::json::parse(read_file((fs::path(r->run_dir) / "manifest.json").string()));
    for (const char* key : {"schema_version", "timestamp_utc", "git_commit", "git_dirty", "command",
                            "husai_version", "threads", "config_hash", "inputs", "outputs"}) {
      EXPECT_TRUE(m.contains(key)) << key;
    }
    EXPECT_EQ(m["config_hash"], config.hash());
    bool has_results = false;
    for (const auto& f : m["outputs"]) has_results = has_results || f["path"] == "results.json";
    EXPECT_TRUE(has_results);
  }
  const Registry reg(root.string());
  ASSERT_EQ(reg.list_runs("toy").size(), 2U);
  EXPECT_EQ(reg.find_run(r1.run_id)->status, "completed");
  EXPECT_EQ(reg.metrics(r1.run_id).size(), 1U);
  EXPECT_FALSE(reg.artifacts(r1.run_id).empty());
  EXPECT_TRUE(fs::exists(root / "EXPERIMENT_LOG.md"));
  EXPECT_EQ(reg.latest_completed("toy", config.hash().substr(0, 8))->experiment, "toy");
  fs::remove_all(root);
}

TEST(ExperimentRunner, ResumeKeepsFinishedConditions) {
  const fs::path root = fresh_root("resume");
  Config config(toy_schema());
  ExperimentOptions o;
  o.root = root.string();
  o.quiet = true;
  g_a_runs = 0;
  g_interrupt_at_b = true;
  EXPECT_THROW(run_experiment(kToy, config, o), Interrupted);
  const Registry reg(root.string());
  const auto runs = reg.list_runs("toy");
  ASSERT_EQ(runs.size(), 1U);
  EXPECT_EQ(runs[0].status, "interrupted");
  EXPECT_TRUE(fs::exists(fs::path(runs[0].run_dir) / "conditions" / "a.json"));
  EXPECT_EQ(g_a_runs, 1);

  g_interrupt_at_b = false;
  o.resume = true;
  const ExperimentRunResult r = run_experiment(kToy, config, o);
  EXPECT_TRUE(r.resumed);
  EXPECT_EQ(r.run_id, runs[0].id);
  EXPECT_EQ(g_a_runs, 1);  // condition a was kept, not redone
  const nlohmann::json res =
      nlohmann::json::parse(read_file((fs::path(r.run_dir) / "results.json").string()));
  EXPECT_EQ(res["b"]["v"], 2);
  EXPECT_EQ(reg.find_run(r.run_id)->status, "completed");
  // Nothing unfinished is left: another --resume starts a new run.
  EXPECT_FALSE(run_experiment(kToy, config, o).resumed);
  EXPECT_EQ(g_a_runs, 2);
  fs::remove_all(root);
}

TEST(ExperimentRunner, CacheReusesOnlyCompleteMatchingEntries) {
  const fs::path root = fresh_root("cache");
  Config config(toy_schema());
  ExperimentOptions o;
  o.root = root.string();
  o.quiet = true;
  Registry reg(root.string());
  ExperimentContext ctx(config, o, "toy", "id", (root / "run").string(), reg);
  int builds = 0;
  auto build = [&](const std::string& dir, bool) {
    ++builds;
    write_file_atomic(dir + "/artifact.txt", "payload");
  };
  const std::string d1 = ctx.cached("thing", {{"x", 1}}, build);
  const std::string d2 = ctx.cached("thing", {{"x", 1}}, build);
  EXPECT_EQ(d1, d2);
  EXPECT_EQ(builds, 1);
  const std::string d3 = ctx.cached("thing", {{"x", 2}}, build);  // changed key: new entry
  EXPECT_NE(d3, d1);
  EXPECT_EQ(builds, 2);
  // An incomplete entry (no COMPLETE marker) is continued, with resume = true.
  fs::remove(fs::path(d1) / "COMPLETE");
  bool saw_resume = false;
  ctx.cached("thing", {{"x", 1}}, [&](const std::string& dir, bool resume) {
    saw_resume = resume;
    build(dir, resume);
  });
  EXPECT_TRUE(saw_resume);
  EXPECT_EQ(builds, 3);
  // A completed entry whose files changed is rebuilt from scratch.
  write_file_atomic(d1 + "/artifact.txt", "tampered");
  ctx.cached("thing", {{"x", 1}}, build);
  EXPECT_EQ(builds, 4);
  EXPECT_EQ(read_file(d1 + "/artifact.txt"), "payload");
  ASSERT_EQ(ctx.cache_events().size(), 5U);
  EXPECT_TRUE(ctx.cache_events()[1]["reused"].get<bool>());
  EXPECT_FALSE(ctx.cache_events()[4]["reused"].get<bool>());
  fs::remove_all(root);
}

TEST(ExperimentRunner, EmbeddedSchemaKeepsConstraintsAndChecks) {
  ConfigSchema s;
  embed_schema(s, "transformer", transformer_config_schema());
  Config c(s);
  c.apply_override("transformer.training.epochs=7");
  EXPECT_THROW(c.apply_override("transformer.model.d_model=-3"), Error);
  EXPECT_THROW(c.apply_override("transformer.training.nope=1"), Error);
  const Config sub = sub_config(c, "transformer", transformer_config_schema());
  EXPECT_EQ(sub.get_int("training.epochs"), 7);
  Config plain(transformer_config_schema());
  plain.apply_override("training.epochs=7");
  EXPECT_EQ(sub.hash(), plain.hash());
}

}  // namespace
}  // namespace husai
