// The train-sae run layout (train/sae_run.hpp, SaeRunLayout): the paths every experiment and compare use, and
// that a real train-sae run writes exactly there (tests/integration/sae_train.sh trains one; this pins the
// names the rest of the code relies on).

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "husai/train/sae_run.hpp"

TEST(SaeRunLayout, PathsOfARunFolder) {
  const husai::SaeRunLayout run("/r/run");
  EXPECT_EQ(run.seed_dir(42), "/r/run/seed42");
  EXPECT_EQ(run.seed_metrics(7), "/r/run/seed7/metrics.json");
  EXPECT_EQ(run.snapshot_dir(42, 375), "/r/run/seed42/checkpoints/step_375");
  EXPECT_EQ(run.split_file(), "/r/run/split.safetensors");
  EXPECT_EQ(run.trainer_state_file(), "/r/run/trainer_state.safetensors");
  EXPECT_EQ(run.manifest_file(), "/r/run/manifest.json");
  EXPECT_EQ(run.seed_dirs({1, 2, 3}),
            (std::vector<std::string>{"/r/run/seed1", "/r/run/seed2", "/r/run/seed3"}));
  EXPECT_EQ(husai::sae_seed_dir("/r/run", 5), run.seed_dir(5));
  EXPECT_EQ(husai::sae_snapshot_dir("/r/run", 5, 10), run.snapshot_dir(5, 10));
}
