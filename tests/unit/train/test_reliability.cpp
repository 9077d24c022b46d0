// Failure behaviour (issue 6): the divergence guard of both trainers, SAE cfg.json values of the wrong type
// or range refused with the key named, and Error::extended.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "husai/core/error.hpp"
#include "husai/data/modular_arithmetic.hpp"
#include "husai/data/synthetic.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/sae/saelens_io.hpp"
#include "husai/train/sae_trainer.hpp"
#include "husai/train/transformer_trainer.hpp"

namespace husai {
namespace {

// The message of the husai::Error `f` throws ("" and a test failure when it throws nothing).
template <typename F>
Error caught(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no husai::Error thrown";
  return Error("");
}

TEST(DivergenceGuard, TransformerStopsAtTheStepWhoseLossIsNotFinite) {
  ModularTask task;
  task.modulus = 7;
  TransformerConfig model;
  model.n_layers = 1;
  model.d_model = 8;
  model.n_heads = 2;
  model.d_head = 4;
  model.d_mlp = 16;
  model.d_vocab = task.d_vocab();
  model.n_ctx = task.n_ctx();
  TransformerTrainConfig train;
  train.epochs = 5;
  train.batch_size = 10;  // 25 training pairs: 3 steps per epoch
  const Split split = make_split(task.n_pairs(), 0.5, 0);
  TransformerTrainer trainer(model, task, train, split);
  trainer.init_fresh();
  int checkpoints = 0;
  int epochs = 0;
  // Poison the weights at the end of epoch 1: the first step of epoch 2 (step 4) gives a NaN loss.
  const auto on_epoch = [&](const EpochMetrics&) {
    if (++epochs == 1) {
      std::fill(trainer.state().params.begin(), trainer.state().params.end(),
                std::numeric_limits<float>::quiet_NaN());
    }
  };
  const Error e = caught([&] { trainer.run([] { return false; }, on_epoch, [&] { ++checkpoints; }); });
  const std::string what = e.what();
  EXPECT_NE(what.find("training diverged"), std::string::npos) << what;
  EXPECT_NE(what.find("at step 4 (epoch 2)"), std::string::npos) << what;
  EXPECT_EQ(trainer.state().epochs_done, 1);
  EXPECT_EQ(checkpoints, 0);  // no checkpoint is written after the divergence
}

TEST(DivergenceGuard, SaeStopsBeforeUpdatingWithANonFiniteLoss) {
  const SynthData data = make_synthetic(SynthSpec{8, 16, 2, 512, 3});
  SaeTrainSettings s;
  s.sae.arch = &sae_architecture("topk");
  s.sae.d_in = 8;
  s.sae.d_sae = 16;
  s.sae.k = 2;
  s.steps = 20;
  s.batch_size = 64;
  s.seeds = {5, 6};
  s.checkpoint_every = 0;
  s.log_every = 1;
  SaeTrainer t(s, data.activations.data(), 512, std::vector<float>(8, 0.0f));
  t.init_fresh();
  int logged = 0;
  // After step 3 poison seed 6's weights: step 4 of seed 6 must stop training.
  const auto on_log = [&](int64_t step) {
    ++logged;
    if (step == 3) {
      std::fill(t.seeds()[1].params.begin(), t.seeds()[1].params.end(),
                std::numeric_limits<float>::quiet_NaN());
    }
  };
  const Error e = caught([&] { t.run([] { return false; }, on_log, [] {}); });
  const std::string what = e.what();
  EXPECT_NE(what.find("training diverged"), std::string::npos) << what;
  EXPECT_NE(what.find("at step 4 (seed 6)"), std::string::npos) << what;
  EXPECT_EQ(logged, 3);
  EXPECT_EQ(t.step(), 3);
}

// cfg.json + weights for a 2 x 3 SAE, the weights parsed from bytes as load_sae does.
SafetensorsFile weights_2x3() {
  SafetensorsFile f;
  const std::vector<float> w(6, 0.5f), b3(3, 0.1f), b2(2, 0.0f);
  f.put("W_enc", TensorData::f32({2, 3}, w.data()));
  f.put("W_dec", TensorData::f32({3, 2}, w.data()));
  f.put("b_enc", TensorData::f32({3}, b3.data()));
  f.put("b_dec", TensorData::f32({2}, b2.data()));
  f.put("encoder.weight", TensorData::f32({3, 2}, w.data()));  // sparsify names
  f.put("encoder.bias", TensorData::f32({3}, b3.data()));
  return SafetensorsFile::parse(f.serialize(), "sae/sae_weights.safetensors");
}

TEST(SaeCfgJson, ValuesOfTheWrongTypeOrRangeNameTheKey) {
  const SafetensorsFile w = weights_2x3();
  EXPECT_EQ(saelens_from_parts("sae", R"({"d_in": 2, "d_sae": 3, "architecture": "topk", "k": 2})", w).k, 2);
  struct Case {
    const char* cfg;
    const char* key;
    const char* text;
  };
  for (const Case& c : {
           Case{R"({"d_in": "2", "d_sae": 3})", "d_in", "lacks an integer"},
           Case{R"({"d_in": -2, "d_sae": 3})", "d_in", "[1, 16777216]"},
           Case{R"({"d_in": 2, "d_sae": 99999999999})", "d_sae", "[1, 16777216]"},
           Case{R"({"d_in": 2, "d_sae": 3, "architecture": 7})", "architecture", "must be a string"},
           Case{R"({"d_in": 2, "d_sae": 3, "architecture": "topk", "k": 4})", "k", "exceeds d_sae = 3"},
           Case{R"({"d_in": 2, "d_sae": 3, "architecture": "topk", "k": "2"})", "k", "lacks an integer"},
           Case{R"({"d_in": 2, "d_sae": 3, "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 2.5}})",
                "k", "lacks an integer"},
           Case{R"({"d_in": 2, "d_sae": 3, "apply_b_dec_to_input": "yes"})", "apply_b_dec_to_input",
                "true or false"},
           Case{R"({"d_in": 2, "d_sae": 3, "normalize_activations": 1})", "normalize_activations",
                "must be a string"},
       }) {
    const Error e = caught([&] { saelens_from_parts("sae", c.cfg, w); });
    EXPECT_EQ(e.key().value_or(""), c.key) << c.cfg;
    EXPECT_EQ(e.file().value_or(""), "sae/cfg.json") << c.cfg;
    EXPECT_NE(std::string(e.what()).find(c.text), std::string::npos) << c.cfg << ": " << e.what();
  }
  const Error not_object = caught([&] { saelens_from_parts("sae", "[1, 2]", w); });
  EXPECT_NE(std::string(not_object.what()).find("must be a JSON object"), std::string::npos);
  const Error sparsify = caught([&] { sparsify_from_parts("sae", R"({"k": 1, "d_in": "two"})", w); });
  EXPECT_EQ(sparsify.key().value_or(""), "d_in") << sparsify.message();
  EXPECT_EQ(sparsify_from_parts("sae", R"({"k": 2, "d_in": 2})", w).d_sae, 3);
}

TEST(ErrorExtended, KeepsFileKeyAndLine) {
  Error e("bad value");
  e.file("a.yaml").key("training.lr").line(3);
  const Error x = e.extended("; more");
  EXPECT_EQ(std::string(x.what()), "bad value; more");
  EXPECT_EQ(x.message(), "a.yaml:3: key 'training.lr': bad value; more");
}

}  // namespace
}  // namespace husai
