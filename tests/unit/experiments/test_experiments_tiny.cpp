// Every experiment of the catalog run in-process at the smallest size that exercises all of its steps (a p =
// 11 transformer trained 3 epochs and allowed to stay ungrokked, SAEs of 16 latents trained 20 steps, 50
// bootstrap resamples), one shared results root so the transformer and activations are built once. Each test
// checks what the experiment documents (docs/formats.md, docs/experiments.md): the run folder's files,
// results.json's keys, that every verdict is one of the four the rule allows and names its Holm family, and
// what each summary must say it cannot claim. The numbers of a meaningful study are the integration tests'
// and `make reproduce-*`'s.

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "husai/experiments/runner.hpp"
#include "husai/io/json_file.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

class TinyExperiments : public ::testing::Test {
 protected:
  static fs::path root_;
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("husai_tiny_experiments_" + std::to_string(::getpid()));
    fs::remove_all(root_);
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  // The upstream and SAE sizes every experiment shares.
  static std::vector<std::string> tiny() {
    return {"transformer.task.modulus=11",
            "transformer.training.epochs=3",
            "transformer.model.n_layers=1",
            "transformer.model.d_model=16",
            "transformer.model.d_mlp=32",
            "transformer.model.n_heads=2",
            "transformer.training.batch_size=64",
            "transformer.training.checkpoint_every=0",
            "experiment.allow_ungrokked=true",
            "sae.training.steps=20",
            "sae.training.batch_size=32",
            "sae.training.checkpoint_every=0",
            "sae.training.lr_warmup_steps=0",
            "sae.sae.l1_warmup_steps=5",
            "compare.bootstrap=100"};
  }

  // Runs experiment `name` with the tiny sizes (unless `upstream` is false) plus `extra`; returns its folder.
  static fs::path run(const std::string& name, const std::vector<std::string>& extra, bool upstream = true) {
    const ExperimentDef& def = find_experiment(name);
    const ConfigSchema schema = def.schema();
    Config config(schema);
    if (upstream) {  // the shared sizes of the sections this experiment has
      for (const std::string& s : tiny()) {
        if (schema.find(s.substr(0, s.find('='))) != nullptr) config.apply_override(s);
      }
    }
    for (const std::string& s : extra) config.apply_override(s);
    config.validate();
    ExperimentOptions o;
    o.root = root_.string();
    o.quiet = true;
    o.figures = false;
    const ExperimentRunResult r = run_experiment(def, config, o);
    EXPECT_EQ(r.exit_code, 0) << name;
    return fs::path(r.run_dir);
  }

  static std::string text(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  static void expect_files(const fs::path& dir, const std::vector<std::string>& names) {
    for (const std::string& n : names) {
      EXPECT_TRUE(fs::is_regular_file(dir / n) && fs::file_size(dir / n) > 0) << dir << "/" << n;
    }
  }

  // A stability verdict as the rule defines it: one of four kinds, with the Holm family it was adjusted in.
  static void expect_verdict(const nlohmann::json& stability, const std::string& where) {
    static const std::set<std::string> kinds = {"above", "below", "indistinguishable", "undecidable"};
    ASSERT_TRUE(stability.is_object()) << where;
    for (const auto& [metric, s] : stability.items()) {
      EXPECT_TRUE(kinds.count(s.at("verdict_kind").get<std::string>())) << where << " " << metric;
      EXPECT_GE(s.at("holm_family_size").get<int64_t>(), 1) << where << " " << metric;
      EXPECT_FALSE(s.at("null").get<std::string>().empty()) << where << " " << metric;
    }
  }
};
fs::path TinyExperiments::root_;

TEST_F(TinyExperiments, Phase4aComparesTopKAndL0MatchedReluAgainstTheirNulls) {
  const fs::path dir = run("phase4a", {"phase4a.seeds=[1,2,3]", "phase4a.d_sae=16", "phase4a.k=3",
                                       "phase4a.relu_tune_steps=10", "phase4a.relu_tune_iterations=2"});
  expect_files(dir, {"config.json", "results.json", "summary.md", "stability.csv", "manifest.json",
                     "compare/topk/stability.json", "compare/relu/stability.json"});
  const nlohmann::json r = read_json_file((dir / "results.json").string());
  EXPECT_EQ(r.at("experiment"), "phase4a");
  for (const char* cond : {"topk", "relu"}) {
    expect_verdict(r.at("conditions").at(cond).at("stability"), cond);
    EXPECT_TRUE(r.at("conditions").at(cond).at("settings").contains("sae.architecture"));
  }
  EXPECT_TRUE(r.at("relu_l0_match").contains("within_tolerance"));
  EXPECT_EQ(r.at("claims").size(), 2u);
  const std::string md = text(dir / "summary.md");
  EXPECT_NE(md.find("What this does not show"), std::string::npos);
  EXPECT_NE(md.find("## Stability against training steps"), std::string::npos);
}

TEST_F(TinyExperiments, AblationsSweepKAndWidthWithAPlateauTestEach) {
  const fs::path dir =
      run("ablations", {"ablations.seeds=[1,2]", "ablations.k_values=[2,4]", "ablations.k_sweep_d_sae=16",
                        "ablations.d_sae_values=[8]", "ablations.d_sae_sweep_k=2"});
  expect_files(dir, {"results.json", "summary.md", "ablations.csv", "manifest.json"});
  const std::string csv = text(dir / "ablations.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);  // header + 3 distinct conditions
  const std::string md = text(dir / "summary.md");
  EXPECT_NE(md.find("last change of pwmcc"), std::string::npos);
}

TEST_F(TinyExperiments, AdaptiveL0ChoosesOnSearchSeedsAndRetrainsOnFreshOnes) {
  const fs::path dir =
      run("adaptive-l0", {"adaptive.k_candidates=[2,4]", "adaptive.d_sae=16", "adaptive.search_seeds=[1,2]",
                          "adaptive.retrain_seeds=[3,4]", "adaptive.ev_floor=0"});
  expect_files(dir, {"results.json", "summary.md", "manifest.json"});
  const nlohmann::json r = read_json_file((dir / "results.json").string());
  const int64_t chosen = r.at("chosen_k").get<int64_t>();
  EXPECT_TRUE(chosen == 2 || chosen == 4) << chosen;
  expect_verdict(r.at("retrain").at("stability"), "retrain");
}

TEST_F(TinyExperiments, ConsistencySweepKeepsTheReferenceOutOfEveryPair) {
  const fs::path dir =
      run("consistency-sweep", {"consistency.d_sae=16", "consistency.k=3", "consistency.reference_seed=9",
                                "consistency.seeds=[1,2,3]", "consistency.lambda_ratios=[0.0,20.0]",
                                "consistency.max_ev_drop=1.0"});
  expect_files(dir, {"results.json", "summary.md", "manifest.json"});
  const nlohmann::json r = read_json_file((dir / "results.json").string());
  EXPECT_EQ(r.at("reference").at("seed"), 9);
  ASSERT_EQ(r.at("sweep").size(), 2u);
  for (const auto& row : r.at("sweep")) {
    expect_verdict(row.at("stability"), "ratio " + row.at("ratio").dump());
    ASSERT_EQ(row.at("pairs").size(), 3u);  // 3 seeds: 3 pairs, none with the reference
    for (const auto& pair : row.at("pairs")) {
      EXPECT_NE(pair.at("seed_a"), 9);
      EXPECT_NE(pair.at("seed_b"), 9);
    }
  }
}

TEST_F(TinyExperiments, TransformerSeedsComparesSaesAcrossTransformers) {
  const fs::path dir =
      run("transformer-seeds",
          {"transformer_seeds.transformer_seeds=[0,1]", "transformer_seeds.seeds=[1,2]",
           "transformer_seeds.d_sae=16", "transformer_seeds.k=3", "transformer_seeds.bootstrap=2000"});
  expect_files(dir, {"results.json", "summary.md", "pairs.csv", "manifest.json"});
}

TEST_F(TinyExperiments, ReleaseGateReadsTheLatestPhase4aRun) {
  // Needs a completed phase4a run in the same root (the first test's, or its own when run alone).
  run("phase4a", {"phase4a.seeds=[1,2,3]", "phase4a.d_sae=16", "phase4a.k=3", "phase4a.relu_tune_steps=10",
                  "phase4a.relu_tune_iterations=2"});
  const fs::path dir = run("release-gate", {"gate.reconstruction_ev_floor=1.0"}, false);
  const nlohmann::json r = read_json_file((dir / "results.json").string());
  bool reconstruction_failed = false;
  for (const auto& g : r.at("gates")) {
    const std::string status = g.at("status").get<std::string>();
    EXPECT_TRUE(status == "pass" || status == "fail") << g.dump();
    if (g.at("gate") == "reconstruction") reconstruction_failed = status == "fail";
  }
  EXPECT_TRUE(reconstruction_failed) << "an EV floor of 1.0 cannot be met";
}

}  // namespace
}  // namespace husai
