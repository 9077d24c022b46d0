// Philox4x32-10 against the Random123 known-answer vectors, and the properties husai relies on:
// element-wise independence from draw order, sane distributions, seeded permutations.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "husai/core/rng.hpp"

namespace husai {
namespace {

TEST(Philox, KnownAnswerVectors) {
  // Random123's kat_vectors: counter (4 words), key (2 words) -> output.
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}),
            (std::array<uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (std::array<uint32_t, 4>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (std::array<uint32_t, 4>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(Philox, ElementsDoNotDependOnDrawOrder) {
  const Philox rng(42, 7);
  std::vector<double> forward, backward;
  for (uint64_t i = 0; i < 100; ++i) forward.push_back(rng.normal(i));
  for (uint64_t i = 100; i-- > 0;) backward.push_back(rng.normal(i));
  std::reverse(backward.begin(), backward.end());
  EXPECT_EQ(forward, backward);
  EXPECT_NE(Philox(42, 7).normal(0), Philox(42, 8).normal(0));
  EXPECT_NE(Philox(42, 7).normal(0), Philox(43, 7).normal(0));
}

TEST(Philox, NormalMomentsAndUniformRange) {
  const Philox rng(1, 2);
  const int n = 200000;
  double sum = 0, sq = 0;
  for (int i = 0; i < n; ++i) {
    const double x = rng.normal(static_cast<uint64_t>(i));
    sum += x;
    sq += x * x;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sq / n, 1.0, 0.01);
  for (uint64_t i = 0; i < 10000; ++i) {
    const float u = rng.uniform_f32(i);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    const double d = rng.uniform_f64(i);
    ASSERT_GE(d, 0.0);
    ASSERT_LT(d, 1.0);
    ASSERT_LT(rng.below(i, 7), 7u);
  }
}

TEST(Permutation, IsAPermutationAndSeeded) {
  const auto p = permutation(1000, 5, 9);
  std::set<int64_t> seen(p.begin(), p.end());
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_EQ(*seen.begin(), 0);
  EXPECT_EQ(*seen.rbegin(), 999);
  EXPECT_EQ(p, permutation(1000, 5, 9));
  EXPECT_NE(p, permutation(1000, 6, 9));
  std::vector<int64_t> identity(1000);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(p, identity);
}

}  // namespace
}  // namespace husai
