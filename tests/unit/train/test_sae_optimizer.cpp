// The trainer's fused optimizer step (fused_sae_optimizer_step, train/sae_trainer.cpp) against the plain
// reference sequence it replaces (llm.c's pattern: the simple version stays beside the fast one as its
// oracle): clip -> remove_parallel_decoder_grad -> adamw_step -> normalize_decoder_rows. The fused pass must
// give the same bits, for every architecture's layout, with and without clipping and renormalisation, at any
// thread count. Shapes are chosen off the fast paths' multiples (d_in 37, d_sae 250: not multiples of the
// SIMD lanes or of the 64-row tasks) and large enough (> 16384 parameters) to cross the chunk boundary.

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "husai/core/rng.hpp"
#include "husai/core/threading.hpp"
#include "husai/sae/sae.hpp"
#include "husai/train/adamw.hpp"
#include "husai/train/sae_trainer.hpp"

namespace {

using husai::SaeArchitecture;

struct State {
  std::vector<float> p, g, m, v;
};

State random_state(const husai::SaeLayout& layout, uint64_t seed) {
  const husai::Philox rng(seed, 3);
  State s;
  const auto n = static_cast<size_t>(layout.total);
  s.p.resize(n);
  s.g.resize(n);
  s.m.resize(n);
  s.v.resize(n);
  for (size_t i = 0; i < n; ++i) {
    s.p[i] = static_cast<float>(rng.normal(4 * i));
    s.g[i] = static_cast<float>(0.1 * rng.normal(4 * i + 1));
    s.m[i] = static_cast<float>(0.01 * rng.normal(4 * i + 2));
    const double r = rng.normal(4 * i + 3);
    s.v[i] = static_cast<float>(1e-4 * r * r);
  }
  return s;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void check(const SaeArchitecture* arch, bool clip, bool renorm, int threads) {
  husai::SaeConfig cfg;
  cfg.arch = arch;
  cfg.d_in = 37;
  cfg.d_sae = 250;
  const husai::SaeLayout layout = husai::make_sae_layout(cfg);
  ASSERT_GT(layout.total, 16384);
  husai::AdamWConfig adam;
  adam.lr = 3e-3;
  adam.weight_decay = 0;  // as the trainer forces
  const int64_t step = 7;
  const float clip_scale = 0.37f;
  husai::set_num_threads(threads);

  State ref = random_state(layout, 11);
  State fused = ref;
  // Reference: the plain sequence.
  if (clip) {
    for (float& x : ref.g) x *= clip_scale;
  }
  if (renorm) husai::remove_parallel_decoder_grad(cfg, layout, ref.p.data(), ref.g.data());
  husai::adamw_step(ref.p.data(), ref.g.data(), ref.m.data(), ref.v.data(), layout.total, step, adam.lr,
                    adam);
  if (renorm) husai::normalize_decoder_rows(cfg, layout, ref.p.data());
  // Fused.
  husai::fused_sae_optimizer_step(cfg, layout, fused.p.data(), fused.g.data(), fused.m.data(), fused.v.data(),
                                  husai::adamw_scalars<float>(step, adam.lr, adam), clip, clip_scale, renorm);
  husai::set_num_threads(0);
  EXPECT_TRUE(same_bits(ref.p, fused.p)) << "parameters differ";
  EXPECT_TRUE(same_bits(ref.m, fused.m)) << "first moments differ";
  EXPECT_TRUE(same_bits(ref.v, fused.v)) << "second moments differ";
  EXPECT_TRUE(same_bits(ref.g, fused.g)) << "processed gradients differ";
  if (renorm) {
    // The constraint holds: every decoder row has unit norm afterwards.
    for (int64_t i = 0; i < cfg.d_sae; ++i) {
      double nn = 0;
      for (int64_t d = 0; d < cfg.d_in; ++d) {
        const double w = fused.p[static_cast<size_t>(layout.W_dec + i * cfg.d_in + d)];
        nn += w * w;
      }
      EXPECT_NEAR(nn, 1.0, 1e-5) << "row " << i;
    }
  }
}

TEST(SaeOptimizer, FusedStepMatchesThePlainSequenceBitForBit) {
  for (const SaeArchitecture* arch : husai::sae_architectures()) {
    for (const bool clip : {false, true}) {
      for (const bool renorm : {false, true}) {
        for (const int threads : {1, 2}) {
          SCOPED_TRACE(::testing::Message() << "arch " << arch->name << " clip " << clip << " renorm "
                                            << renorm << " threads " << threads);
          check(arch, clip, renorm, threads);
        }
      }
    }
  }
}

}  // namespace
