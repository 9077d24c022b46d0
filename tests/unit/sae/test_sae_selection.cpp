// TopK selection (src/husai/sae/topk.cpp) against a brute-force sort, on the distributions that stress its
// fast paths: Gaussian rows (lane bound + rank counting), heavy tails and mostly-tiny rows (value bisection),
// many ties (the lower latent index must win), and k that is not a multiple of the lane count.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "husai/core/rng.hpp"
#include "husai/sae/sparse_path.hpp"

namespace {

template <typename T>
void check_rows(int kind, int64_t L, int64_t k) {
  const int64_t B = 67;
  const husai::Philox rng(static_cast<uint64_t>(kind * 1000 + k), 7);
  std::vector<T> z(static_cast<size_t>(B * L));
  for (int64_t i = 0; i < B * L; ++i) {
    const double g = rng.normal(static_cast<uint64_t>(i));
    double v = g;
    if (kind == 1) v = g * g * g * g * g;                           // heavy tails
    if (kind == 2) v = std::round(g * 4) / 4;                       // many ties
    if (kind == 3) v = (i % 53 == 0) ? 10 * g : 1e-3 * g;           // a few large values
    if (kind == 4) v = -std::abs(g) + ((i % 97 == 0) ? 2.0 : 0.0);  // mostly negative
    z[static_cast<size_t>(i)] = static_cast<T>(v);
  }
  husai::SaeWorkspace<T> ws;
  husai::sae_detail::select_topk_per_row<T>(z.data(), B, L, k, ws);
  for (int64_t r = 0; r < B; ++r) {
    const T* zr = z.data() + r * L;
    std::vector<int32_t> order(static_cast<size_t>(L));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](int32_t a, int32_t b) { return zr[a] > zr[b] || (zr[a] == zr[b] && a < b); });
    std::vector<int32_t> want;
    for (int64_t j = 0; j < k; ++j) {
      if (zr[order[static_cast<size_t>(j)]] > T(0)) want.push_back(order[static_cast<size_t>(j)]);
    }
    std::sort(want.begin(), want.end());
    const std::vector<int32_t> got(ws.idx.begin() + ws.row_ptr[static_cast<size_t>(r)],
                                   ws.idx.begin() + ws.row_ptr[static_cast<size_t>(r + 1)]);
    ASSERT_EQ(got, want) << "kind " << kind << " L " << L << " k " << k << " row " << r;
    for (size_t j = 0; j < got.size(); ++j) {
      EXPECT_EQ(ws.act[static_cast<size_t>(ws.row_ptr[static_cast<size_t>(r)]) + j], zr[got[j]]);
    }
  }
}

TEST(SaeSelection, TopKMatchesBruteForceFloat) {
  for (int kind = 0; kind < 5; ++kind) {
    for (const int64_t k : {1, 5, 32, 33, 100}) {
      check_rows<float>(kind, 1024, k);
      check_rows<float>(kind, 1031, k);
    }
  }
}

TEST(SaeSelection, TopKMatchesBruteForceDouble) {
  for (int kind = 0; kind < 5; ++kind) {
    for (const int64_t k : {3, 32, 70}) check_rows<double>(kind, 517, k);
  }
}

}  // namespace
