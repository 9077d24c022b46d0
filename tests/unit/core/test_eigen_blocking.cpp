// Eigen's GEMM blocking is fixed at start-up (core/eigen_blocking.hpp), so products do not depend on the
// cache sizes of the machine: the sizes are the constants, and the test shows that they matter (other sizes
// give other bits for a deep product) and that restoring them restores the bits.

// GCC 12's false -W(maybe-)uninitialized inside Eigen's packet code (see src/husai/core/gemm.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <gtest/gtest.h>

#include <Eigen/Core>
#include <cstring>
#include <vector>

#include "husai/core/eigen_blocking.hpp"
#include "husai/core/gemm.hpp"
#include "husai/core/rng.hpp"

namespace husai {
namespace {

std::vector<float> normal(int64_t n, uint64_t seed) {
  const Philox rng(seed, 3);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[static_cast<size_t>(i)] = static_cast<float>(rng.normal(static_cast<uint64_t>(i)));
  return v;
}

std::vector<float> product(const std::vector<float>& a, const std::vector<float>& b, int64_t M, int64_t N,
                           int64_t K) {
  std::vector<float> c(static_cast<size_t>(M * N));
  gemm_serial<float>(false, false, M, N, K, 1.0F, a.data(), K, b.data(), N, 0.0F, c.data(), N);
  return c;
}

TEST(EigenBlocking, CacheSizesAreTheFixedConstantsFromStartUp) {
  // No call here: the static initialiser in core/threading.cpp has already run.
  EXPECT_EQ(Eigen::l1CacheSize(), kEigenL1CacheBytes);
  EXPECT_EQ(Eigen::l2CacheSize(), kEigenL2CacheBytes);
  EXPECT_EQ(Eigen::l3CacheSize(), kEigenL3CacheBytes);
}

TEST(EigenBlocking, OtherCacheSizesGiveOtherBitsAndTheFixedOnesRestoreThem) {
  constexpr int64_t M = 48, N = 64, K = 4096;  // K far above the k-block (a few hundred) of a 32 KiB L1
  const std::vector<float> a = normal(M * K, 1), b = normal(K * N, 2);
  const std::vector<float> fixed = product(a, b, M, N, K);
  Eigen::setCpuCacheSizes(8 * 1024, 256 * 1024, 8 * 1024 * 1024);  // a smaller L1: a smaller k-block
  const std::vector<float> other = product(a, b, M, N, K);
  Eigen::setCpuCacheSizes(kEigenL1CacheBytes, kEigenL2CacheBytes, kEigenL3CacheBytes);
  const std::vector<float> again = product(a, b, M, N, K);
  EXPECT_NE(std::memcmp(fixed.data(), other.data(), fixed.size() * sizeof(float)), 0)
      << "the cache sizes did not change the summation order: this test no longer shows why they are fixed";
  EXPECT_EQ(std::memcmp(fixed.data(), again.data(), fixed.size() * sizeof(float)), 0);
}

}  // namespace
}  // namespace husai
