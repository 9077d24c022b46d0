// The TopK encoder kernel (src/husai/sae/encoder_kernel.hpp) against its definition, computed here element by
// element: z[r, i] = b[i] + xc[r, 0] W[0, i] + ... as one chain of fused multiply-adds in d order. Odd shapes
// exercise the partial latent panel and the row tiles of every height. Every code path (portable, AVX2 + FMA,
// and AVX-512 chosen at run time) must give these bits, so that a result is the same on CPUs with and without
// AVX-512.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"
#include "husai/sae/encoder_kernel.hpp"

namespace husai {
namespace {

template <typename T>
std::vector<T> normal(int64_t n, uint64_t seed) {
  const Philox rng(seed, 7);
  std::vector<T> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[static_cast<size_t>(i)] = static_cast<T>(rng.normal(static_cast<uint64_t>(i)));
  return v;
}

template <typename T>
void check_shape(int64_t M, int64_t D, int64_t L,
                 sae_detail::EncoderPath path = sae_detail::EncoderPath::Auto) {
  const std::vector<T> xc = normal<T>(M * D, 1), W = normal<T>(D * L, 2), b = normal<T>(L, 3);
  std::vector<T> pw, pb;
  const auto panels = sae_detail::pack_encoder_panels(W.data(), b.data(), D, L, pw, pb);
  const int64_t ldz = L + 3;  // a leading dimension wider than L: nothing past column L may be written
  std::vector<T> z(static_cast<size_t>(M * ldz), T(-7));
  sae_detail::encoder_block(panels, xc.data(), M, z.data(), ldz, path);
  for (int64_t r = 0; r < M; ++r) {
    for (int64_t i = 0; i < L; ++i) {
      T ref = b[static_cast<size_t>(i)];
      for (int64_t d = 0; d < D; ++d)
        ref = std::fma(xc[static_cast<size_t>(r * D + d)], W[static_cast<size_t>(d * L + i)], ref);
      const T got = z[static_cast<size_t>(r * ldz + i)];
      ASSERT_EQ(std::memcmp(&got, &ref, sizeof(T)), 0) << "M " << M << " D " << D << " L " << L << " at ("
                                                       << r << ", " << i << "): " << got << " vs " << ref;
    }
    for (int64_t i = L; i < ldz; ++i) ASSERT_EQ(z[static_cast<size_t>(r * ldz + i)], T(-7)) << "wrote past L";
  }
}

TEST(SaeEncoderKernel, FloatMatchesFmaChainBitwise) {
  for (int64_t M : {1, 5, 6, 13, 64}) {
    for (int64_t L : {1, 17, 64, 100, 256}) check_shape<float>(M, 24, L);
  }
  check_shape<float>(64, 128, 1024);
}

TEST(SaeEncoderKernel, PortablePathMatchesFmaChainBitwise) {
  for (int64_t M : {1, 5, 6, 13, 64}) {
    for (int64_t L : {1, 17, 64, 100, 256}) check_shape<float>(M, 24, L, sae_detail::EncoderPath::Generic);
  }
  check_shape<float>(64, 128, 1024, sae_detail::EncoderPath::Generic);
}

TEST(SaeEncoderKernel, Avx2PathMatchesFmaChainBitwise) {
  if (!sae_detail::encoder_avx2_available()) GTEST_SKIP() << "this build has no AVX2 kernel";
  for (int64_t M : {1, 5, 6, 7, 13, 64}) {
    for (int64_t L : {1, 8, 17, 33, 64, 100, 256})
      check_shape<float>(M, 24, L, sae_detail::EncoderPath::Avx2);
  }
  check_shape<float>(64, 128, 1024, sae_detail::EncoderPath::Avx2);
  check_shape<float>(13, 768, 200, sae_detail::EncoderPath::Avx2);
}

// Skips on a CPU without AVX-512F (the AMD EPYC Zen 3 development machine is one): there only the portable
// path runs, and the check runs wherever CI has AVX-512.
TEST(SaeEncoderKernel, Avx512PathMatchesPortablePathBitwise) {
  if (!sae_detail::encoder_avx512_available()) GTEST_SKIP() << "this CPU has no AVX-512F";
  for (int64_t M : {1, 5, 6, 13, 64}) {
    for (int64_t L : {1, 17, 64, 100, 256}) check_shape<float>(M, 24, L, sae_detail::EncoderPath::Avx512);
  }
  check_shape<float>(64, 128, 1024, sae_detail::EncoderPath::Avx512);
}

TEST(SaeEncoderKernel, Avx512PathRefusedWithoutAvx512) {
  if (sae_detail::encoder_avx512_available()) GTEST_SKIP() << "this CPU has AVX-512F";
  std::vector<float> pw, pb;
  const std::vector<float> W(8, 1.0F), b(4, 0.0F), xc(2, 1.0F);
  const auto panels = sae_detail::pack_encoder_panels(W.data(), b.data(), 2, 4, pw, pb);
  std::vector<float> z(4);
  EXPECT_THROW(sae_detail::encoder_block(panels, xc.data(), 1, z.data(), 4, sae_detail::EncoderPath::Avx512),
               Error);
}

TEST(SaeEncoderKernel, DoubleMatchesFmaChainBitwise) {
  for (int64_t M : {1, 7, 64}) {
    for (int64_t L : {3, 64, 130}) check_shape<double>(M, 10, L);
  }
}

}  // namespace
}  // namespace husai
