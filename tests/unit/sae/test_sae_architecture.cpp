// The architecture table: every entry complete, names unique, and the train-sae schema derived from it with
// SaeConfig's defaults as the only source (a default that disagreed would fail DefaultsComeFromSaeConfig).

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "husai/core/error.hpp"
#include "husai/io/config.hpp"
#include "husai/sae/architecture.hpp"
#include "husai/train/sae_run.hpp"

namespace husai {
namespace {

TEST(SaeArchitectureTable, EveryEntryIsCompleteAndNamedOnce) {
  std::set<std::string_view> names;
  for (const SaeArchitecture* a : sae_architectures()) {
    SCOPED_TRACE(std::string(a->name));
    EXPECT_TRUE(names.insert(a->name).second);
    EXPECT_FALSE(a->summary.empty());
    ASSERT_NE(a->inference, nullptr);
    EXPECT_NE(a->inference->activate, nullptr);
    EXPECT_NE(a->loss_backward_f32, nullptr);
    EXPECT_NE(a->loss_backward_f64, nullptr);
    EXPECT_GT(a->default_lr, 0.0);
    EXPECT_EQ(&sae_architecture(a->name), a);
    // An architecture that keeps running state must export it (or nobody could use it at inference).
    if (a->running_threshold) {
      EXPECT_NE(a->after_step, nullptr);
      EXPECT_NE(a->export_tensors, nullptr);
    }
    // Own parameter tensors beyond the common four must reach the exported SAE.
    if (!a->extra_tensors.empty()) {
      EXPECT_NE(a->export_tensors, nullptr);
    }
  }
  std::set<std::string_view> kinds;
  for (const SaeInferenceKind* k : sae_inference_kinds())
    EXPECT_TRUE(kinds.insert(k->name).second) << k->name;
  EXPECT_EQ(sae_architecture_exporting("standard")->name, "relu");
  EXPECT_EQ(sae_architecture_exporting("jumprelu")->name, "jumprelu");
  EXPECT_EQ(sae_architecture_exporting("nonexistent"), nullptr);
  EXPECT_EQ(default_sae_architecture().name, "topk");
  EXPECT_THROW(sae_architecture("crosscoder"), Error);
}

TEST(SaeArchitectureTable, SchemaDeclaresEveryKeyOnceNamingItsUsers) {
  const ConfigSchema schema = sae_config_schema();
  const FieldSpec* arch = schema.find("sae.architecture");
  ASSERT_NE(arch, nullptr);
  EXPECT_EQ(arch->allowed.size(), sae_architectures().size());
  for (const SaeArchitecture* a : sae_architectures()) {
    for (const SaeKey& key : a->keys) {
      const FieldSpec* spec = schema.find(key.path);
      ASSERT_NE(spec, nullptr) << key.path;
      EXPECT_NE(spec->help.find(std::string(a->name)), std::string::npos) << key.path << " omits " << a->name;
    }
  }
  const FieldSpec* l1 = schema.find("sae.l1_coefficient");
  ASSERT_NE(l1, nullptr);
  EXPECT_NE(l1->help.find("[relu, gated]"), std::string::npos) << l1->help;
}

// The schema's defaults, read back through each architecture's keys, are SaeConfig{}'s: one source.
TEST(SaeArchitectureTable, DefaultsComeFromSaeConfig) {
  const SaeConfig d{};
  for (const SaeArchitecture* a : sae_architectures()) {
    SCOPED_TRACE(std::string(a->name));
    Config config(sae_config_schema());
    config.set("sae.architecture", std::string(a->name), "test");
    SaeConfig m;
    m.arch = a;
    m.d_in = 16;
    m.d_sae = 128;
    apply_sae_architecture_keys(config, m);
    EXPECT_EQ(m.k, d.k);
    EXPECT_EQ(m.k_aux, d.k_aux);
    EXPECT_EQ(m.aux_coefficient, d.aux_coefficient);
    EXPECT_EQ(m.dead_window, d.dead_window);
    EXPECT_EQ(m.threshold_lr, d.threshold_lr);
    EXPECT_EQ(m.l1_coefficient, d.l1_coefficient);
    EXPECT_EQ(m.l1_warmup_steps, d.l1_warmup_steps);
    EXPECT_EQ(m.bandwidth, d.bandwidth);
    EXPECT_EQ(m.init_threshold, d.init_threshold);
    EXPECT_EQ(m.l0_coefficient, d.l0_coefficient);
    EXPECT_EQ(m.tanh_penalty, d.tanh_penalty);
    EXPECT_EQ(m.tanh_scale, d.tanh_scale);
    if (a->name == "matryoshka") {
      EXPECT_EQ(m.group_sizes, (std::vector<int64_t>{8, 8, 16, 32, 64}));
    } else {
      EXPECT_TRUE(m.group_sizes.empty());
    }
    EXPECT_NO_THROW(m.validate());
  }
}

// A layout holds the common four tensors, then d_sae values per extra tensor of the architecture.
TEST(SaeArchitectureTable, LayoutFollowsExtraTensors) {
  for (const SaeArchitecture* a : sae_architectures()) {
    SaeConfig cfg;
    cfg.arch = a;
    cfg.d_in = 4;
    cfg.d_sae = 10;
    const SaeLayout l = make_sae_layout(cfg);
    EXPECT_EQ(l.extra, 2 * 4 * 10 + 10 + 4) << a->name;
    EXPECT_EQ(l.n_extra, static_cast<int64_t>(a->extra_tensors.size()) * 10) << a->name;
    EXPECT_EQ(l.total, l.extra + l.n_extra) << a->name;
  }
}

}  // namespace
}  // namespace husai
