// train-sae's stability snapshots (seed<S>/checkpoints/step_<N>/) and data order per seed, in-process on a
// small planted problem. Kill/resume of the snapshots is covered by tests/integration/kill_resume.sh and
// sae_train.sh.

#include <gtest/gtest.h>

#include <unistd.h>
#include <filesystem>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/data/synthetic.hpp"
#include "husai/io/config.hpp"
#include "husai/io/json_file.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/train/sae_run.hpp"
#include "husai/train/sae_trainer.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

TEST(SaeSnapshotPoints, RoundsSkipsAndSorts) {
  // 0.125 * 80 = 10, 0.25 * 80 = 20, 0.5 * 80 = 40, given out of order.
  const auto p = sae_snapshot_points({0.5, 0.125, 0.25}, 80);
  ASSERT_EQ(p.size(), 3U);
  EXPECT_EQ(p[0].step, 10);
  EXPECT_DOUBLE_EQ(p[0].fraction, 0.125);
  EXPECT_EQ(p[1].step, 20);
  EXPECT_EQ(p[2].step, 40);
  EXPECT_DOUBLE_EQ(p[2].fraction, 0.5);
  // 5 steps: 0.125 * 5 = 0.625 -> 1, 0.25 * 5 = 1.25 -> 1 (repeat, skipped), 0.99 * 5 = 4.95 -> 5 (the final
  // SAE, skipped); 0.05 * 5 = 0.25 -> 0 (skipped).
  const auto q = sae_snapshot_points({0.125, 0.25, 0.99, 0.05}, 5);
  ASSERT_EQ(q.size(), 1U);
  EXPECT_EQ(q[0].step, 1);
  EXPECT_DOUBLE_EQ(q[0].fraction, 0.125);
  EXPECT_TRUE(sae_snapshot_points({}, 100).empty());
  EXPECT_TRUE(sae_snapshot_points({0.5}, 1).empty());
}

TEST(SaeSnapshotPoints, LayoutPaths) {
  EXPECT_EQ(sae_seed_dir("runs/sae", 42), "runs/sae/seed42");
  EXPECT_EQ(sae_snapshot_dir("runs/sae", 42, 375), "runs/sae/seed42/checkpoints/step_375");
}

// Seeds trained in one pass with no shared order use their own seed as order seed: each equals a run of that
// seed alone with data_order_seed set to the seed, and differs from the shared order 0.
TEST(SaeDataOrder, DefaultIsEachSeedsOwnOrder) {
  const SynthData data = make_synthetic(SynthSpec{16, 24, 2, 2000, 3});
  SaeTrainSettings s;
  s.sae.arch = &sae_architecture("topk");
  s.sae.d_in = 16;
  s.sae.d_sae = 32;
  s.sae.k = 2;
  s.steps = 40;
  s.batch_size = 64;
  s.adam.lr = 3e-3;
  s.checkpoint_every = 0;
  s.log_every = 40;
  EXPECT_FALSE(s.data_order_seed.has_value());
  const auto train = [&](const SaeTrainSettings& st) {
    SaeTrainer t(st, data.activations.data(), 2000, std::vector<float>(16, 0.0f));
    t.init_fresh();
    EXPECT_TRUE(t.run([] { return false; }, [](int64_t) {}, [] {}));
    std::vector<std::vector<float>> out;
    for (const SaeSeedState& seed : t.seeds()) out.push_back(seed.params);
    return out;
  };
  s.seeds = {5, 9};
  const auto both = train(s);
  SaeTrainSettings alone = s;
  alone.seeds = {9};
  alone.data_order_seed = 9;
  EXPECT_EQ(train(alone)[0], both[1]);
  alone.data_order_seed = 0;
  EXPECT_NE(train(alone)[0], both[1]);
}

class SaeSnapshots : public ::testing::Test {
 protected:
  fs::path root;
  std::string acts;
  void SetUp() override {
    root = fs::temp_directory_path() / ("husai_snapshots_" + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(root);
    const SynthData data = make_synthetic(SynthSpec{16, 32, 2, 3000, 11});
    SafetensorsFile f;
    f.put("activations", TensorData::f32({3000, 16}, data.activations.data()));
    acts = (root / "acts.safetensors").string();
    f.save(acts);
  }
  void TearDown() override { fs::remove_all(root); }
  // lr constant after a short warm-up (no decay): the first N steps of a longer run are an N-step run.
  std::string train(const std::string& name, int64_t steps, const std::vector<std::string>& extra = {}) {
    Config c(sae_config_schema());
    for (const char* o :
         {"sae.architecture=topk", "sae.d_sae=48", "sae.k=2", "training.batch_size=64",
          "training.checkpoint_every=0", "training.log_every=10", "training.lr_warmup_steps=5",
          "training.lr_decay_fraction=0", "training.seeds=[3,8]"}) {
      c.apply_override(o);
    }
    c.apply_override("training.steps=" + std::to_string(steps));
    for (const std::string& o : extra) c.apply_override(o);
    c.validate();
    TrainSaeOptions opt;
    opt.activations_path = acts;
    opt.out_dir = (root / name).string();
    opt.quiet = true;
    EXPECT_TRUE(train_sae(c, opt).completed);
    return opt.out_dir;
  }
};

TEST_F(SaeSnapshots, SnapshotIsTheSaeAfterThoseSteps) {
  const std::string run = train("run80", 80);
  const std::string short_run = train("run40", 40, {"training.stability_checkpoints=[]"});
  for (const int64_t seed : {3, 8}) {
    for (const int64_t step : {10, 20, 40}) {
      const std::string dir = sae_snapshot_dir(run, seed, step);
      ASSERT_TRUE(fs::exists(dir + "/sae_weights.safetensors")) << dir;
      const nlohmann::json meta = read_json_file(dir + "/cfg.json")["metadata"];
      EXPECT_EQ(meta["steps"].get<int64_t>(), step);
      EXPECT_EQ(meta["samples"].get<int64_t>(), step * 64);
      EXPECT_EQ(meta["seed"].get<int64_t>(), seed);
      EXPECT_DOUBLE_EQ(meta["checkpoint_fraction"].get<double>(), static_cast<double>(step) / 80.0);
      EXPECT_EQ(read_json_file(dir + "/cfg.json")["architecture"], "topk");
    }
    // The step-40 snapshot of the 80-step run is the final SAE of the 40-step run, byte for byte.
    EXPECT_EQ(read_file(sae_snapshot_dir(run, seed, 40) + "/sae_weights.safetensors"),
              read_file(sae_seed_dir(short_run, seed) + "/sae_weights.safetensors"));
    EXPECT_NE(read_file(sae_snapshot_dir(run, seed, 20) + "/sae_weights.safetensors"),
              read_file(sae_seed_dir(short_run, seed) + "/sae_weights.safetensors"));
    // Each seed its own data order by default, recorded in the metadata.
    const nlohmann::json meta = read_json_file(sae_seed_dir(run, seed) + "/cfg.json")["metadata"];
    EXPECT_EQ(meta["data_order_seed"].get<int64_t>(), seed);
    EXPECT_FALSE(meta["data_order_shared"].get<bool>());
    EXPECT_TRUE(meta["training"]["data_order_seed"].is_null());
  }
  EXPECT_FALSE(fs::exists(sae_seed_dir(short_run, 3) + "/checkpoints"));
  // Listed in the manifest.
  const nlohmann::json manifest = read_json_file(run + "/manifest.json");
  bool listed = false;
  for (const auto& o : manifest["outputs"])
    listed |= o["path"] == "seed8/checkpoints/step_20/sae_weights.safetensors";
  EXPECT_TRUE(listed);
}

TEST_F(SaeSnapshots, FinalSaeDoesNotDependOnSnapshots) {
  const std::string with = train("with", 48);
  const std::string without = train("without", 48, {"training.stability_checkpoints=[]"});
  for (const int64_t seed : {3, 8}) {
    EXPECT_EQ(read_file(sae_seed_dir(with, seed) + "/sae_weights.safetensors"),
              read_file(sae_seed_dir(without, seed) + "/sae_weights.safetensors"));
  }
}

TEST_F(SaeSnapshots, SharedDataOrderIsRecorded) {
  const std::string run =
      train("shared", 16, {"training.data_order_seed=4", "training.stability_checkpoints=[]"});
  for (const int64_t seed : {3, 8}) {
    const nlohmann::json meta = read_json_file(sae_seed_dir(run, seed) + "/cfg.json")["metadata"];
    EXPECT_EQ(meta["data_order_seed"].get<int64_t>(), 4);
    EXPECT_TRUE(meta["data_order_shared"].get<bool>());
  }
}

TEST_F(SaeSnapshots, ListsCheckpointSetsPerFraction) {
  const std::string run = train("listed", 80, {"training.stability_checkpoints=[0.5,0.25]"});
  const std::vector<SaeCheckpointSet> sets = list_sae_checkpoints(run, {8, 3});
  ASSERT_EQ(sets.size(), 3U);
  EXPECT_DOUBLE_EQ(sets[0].fraction, 0.25);
  EXPECT_EQ(sets[0].step, 20);
  EXPECT_EQ(sets[0].sae_dirs,
            (std::vector<std::string>{sae_snapshot_dir(run, 8, 20), sae_snapshot_dir(run, 3, 20)}));
  EXPECT_DOUBLE_EQ(sets[1].fraction, 0.5);
  EXPECT_EQ(sets[1].step, 40);
  EXPECT_DOUBLE_EQ(sets[2].fraction, 1.0);
  EXPECT_EQ(sets[2].step, 80);
  EXPECT_EQ(sets[2].sae_dirs, (std::vector<std::string>{sae_seed_dir(run, 8), sae_seed_dir(run, 3)}));
  EXPECT_EQ(list_sae_checkpoints(run, {3}, false).size(), 2U);
  // A leftover temporary folder is not a snapshot.
  fs::create_directories(run + "/seed3/checkpoints/.step_60.tmp.123");
  EXPECT_EQ(list_sae_checkpoints(run, {3, 8}).size(), 3U);
  // A seed lacking a snapshot the first seed has: an error naming the folder.
  fs::remove_all(sae_snapshot_dir(run, 8, 40));
  try {
    list_sae_checkpoints(run, {3, 8});
    FAIL() << "a missing snapshot was accepted";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("step_40"), std::string::npos) << e.message();
  }
  EXPECT_THROW(list_sae_checkpoints(run, {}), Error);
}

}  // namespace
}  // namespace husai
