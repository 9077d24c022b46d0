// The TopK encoder kernel (src/husai/sae/encoder_kernel.hpp) against its definition, computed here element by
// element: z[r, i] = b[i] + xc[r, 0] W[0, i] + ... as one chain of fused multiply-adds in d order. Odd shapes
// exercise the partial latent panel and the row tiles of every height.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

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
void check_shape(int64_t M, int64_t D, int64_t L) {
  const std::vector<T> xc = normal<T>(M * D, 1), W = normal<T>(D * L, 2), b = normal<T>(L, 3);
  std::vector<T> pw, pb;
  const auto panels = sae_detail::pack_encoder_panels(W.data(), b.data(), D, L, pw, pb);
  const int64_t ldz = L + 3;  // a leading dimension wider than L: nothing past column L may be written
  std::vector<T> z(static_cast<size_t>(M * ldz), T(-7));
  sae_detail::encoder_block(panels, xc.data(), M, z.data(), ldz);
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

TEST(SaeEncoderKernel, DoubleMatchesFmaChainBitwise) {
  for (int64_t M : {1, 7, 64}) {
    for (int64_t L : {3, 64, 130}) check_shape<double>(M, 10, L);
  }
}

}  // namespace
}  // namespace husai
