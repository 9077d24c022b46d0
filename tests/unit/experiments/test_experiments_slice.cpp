// End to end at tiny size: a random transformer saved as a run folder, its activations extracted, two SAEs
// trained, then run_benchmark_slice on them (consistency-sweep runs through `husai experiment` in
// tests/integration/experiments_slice.sh). Checks that every documented output exists and holds what its
// definition implies (key sets, ranges), not the values of a meaningful study.

#include <gtest/gtest.h>

#include <unistd.h>
#include <filesystem>
#include <fstream>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/data/modular_arithmetic.hpp"
#include "husai/experiments/benchmark_slice.hpp"
#include "husai/io/config.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/model/extract.hpp"
#include "husai/model/model_io.hpp"
#include "husai/model/params.hpp"
#include "husai/train/sae_run.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

class ExperimentsSlice : public ::testing::Test {
 protected:
  fs::path root;
  std::string model_dir, acts, sae_run;
  void SetUp() override {
    root = fs::temp_directory_path() / ("husai_slice_" + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(root / "model");
    model_dir = (root / "model").string();
    ModularTask task;
    task.modulus = 11;
    TransformerConfig cfg;
    cfg.n_layers = 1;
    cfg.d_model = 16;
    cfg.n_heads = 2;
    cfg.d_head = 8;
    cfg.d_mlp = 32;
    cfg.d_vocab = task.d_vocab();
    cfg.n_ctx = task.n_ctx();
    const ParamLayout layout = make_param_layout(cfg);
    std::vector<float> params(static_cast<size_t>(layout.total));
    init_params(layout, params.data(), 3, 1.0);
    save_model_safetensors(model_dir + "/model.safetensors", layout, params.data());
    write_file_atomic(model_dir + "/config.json",
                      transformer_config_json(cfg, task, nlohmann::json::object()).dump(2));
    const Split split = make_split(task.n_pairs(), 0.7, 1);
    SafetensorsFile sp;
    sp.put("train_idx",
           TensorData::i64({static_cast<int64_t>(split.train_idx.size())}, split.train_idx.data()));
    sp.put("val_idx", TensorData::i64({static_cast<int64_t>(split.val_idx.size())}, split.val_idx.data()));
    sp.save(model_dir + "/split.safetensors");
    acts = (root / "acts.safetensors").string();
    extract_activations(load_model_dir(model_dir), ExtractSpec{}, acts, true);
    sae_run = (root / "sae").string();
    TrainSaeOptions opt;
    opt.activations_path = acts;
    opt.out_dir = sae_run;
    opt.quiet = true;
    train_sae(sae_config(), opt);
  }
  void TearDown() override { fs::remove_all(root); }
  static std::vector<std::string> tiny_overrides() {
    return {"sae.d_sae=24",
            "sae.k=3",
            "training.steps=40",
            "training.batch_size=32",
            "training.checkpoint_every=0",
            "training.log_every=10",
            "training.lr_warmup_steps=0"};
  }
  static Config sae_config() {
    Config c(sae_config_schema());
    for (const std::string& s : tiny_overrides()) c.apply_override(s);
    c.apply_override("training.seeds=[1, 2]");
    c.validate();
    return c;
  }
};

TEST_F(ExperimentsSlice, BenchmarkSliceWritesEveryOutput) {
  BenchmarkSliceOptions o;
  o.model_dir = model_dir;
  o.activations_path = acts;
  o.sae_dirs = {sae_run + "/seed1", sae_run + "/seed2"};
  o.out_dir = (root / "slice").string();
  o.probe_k = {1, 2};
  o.n_key_frequencies = 2;
  o.fourier_m = {0, 4};
  o.causal_m = 3;
  o.causal_random_repeats = 2;
  o.quiet = true;
  const nlohmann::json r = run_benchmark_slice(o);
  for (const char* f : {"results.json", "summary.md", "saebench_core.csv", "sparse_probing.csv",
                        "fourier.csv", "causal_proxy.csv", "sparse_probing.png", "sparse_probing.svg",
                        "causal_proxy.png", "manifest.json"}) {
    EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / f)) << f;
  }
  ASSERT_EQ(r["saes"].size(), 2u);
  const nlohmann::json& core = r["saes"][0]["saebench_core"];
  for (const char* k :
       {"l0", "l1", "mse", "explained_variance", "cossim", "l2_ratio", "relative_reconstruction_bias",
        "ce_loss_score", "kl_div_score", "frac_alive", "feature_density"}) {
    EXPECT_TRUE(core.contains(k)) << k;
  }
  EXPECT_EQ(core["feature_density"].size(), 24u);
  EXPECT_LE(core["l0"].get<double>(), 3.0 + 1e-9);
  for (const char* label : {"a", "b", "c", "c_mod_2", "c_mod_3"}) {
    const double full = r["full_activation_probing"][label]["test_accuracy"].get<double>();
    EXPECT_GE(full, 0.0);
    EXPECT_LE(full, 1.0);
    EXPECT_EQ(r["saes"][1]["sparse_probing"][label]["top_k"].size(), 2u);
  }
  // The first layer's answer-position residual mixes the embeddings of a and b: a probe beats chance on a.
  EXPECT_GT(r["full_activation_probing"]["a"]["test_accuracy"].get<double>(),
            r["full_activation_probing"]["a"]["chance_accuracy"].get<double>());
  EXPECT_EQ(r["fourier_subspace"]["key_frequencies"].size(), 2u);
  EXPECT_EQ(r["fourier_subspace"]["embedding_power"].size(), 5u);
  const double rec = r["saes"][0]["fourier"]["key_subspace"][0]["variance_recovered"].get<double>();
  EXPECT_GE(rec, 0.0);
  EXPECT_LE(rec, 1.0 + 1e-9);
  const nlohmann::json& cp = r["saes"][0]["causal_proxy"];
  EXPECT_EQ(cp["conditions"]["most_stable"]["latents"].size(), 3u);
  EXPECT_EQ(cp["conditions"]["reconstruction_only"]["delta_ce_vs_reconstruction"].get<double>(), 0.0);
  // The most stable latents are at least as stable as the least stable ones.
  EXPECT_GE(cp["conditions"]["most_stable"]["mean_stability"].get<double>(),
            cp["conditions"]["least_stable"]["mean_stability"].get<double>());
  // A second run into the same folder is refused.
  EXPECT_THROW(run_benchmark_slice(o), Error);
}

}  // namespace
}  // namespace husai
