#pragma once

// Fixed-order reductions that the compiler can vectorise: kLanes independent partial sums (lane l takes
// elements l, l + kLanes, ...) folded pairwise in a fixed order at the end. The summation order depends only
// on n, never on the thread count or on which thread runs the call, so results stay bitwise reproducible.

#include <cstdint>

namespace husai {

inline constexpr int kLanes = 16;

// sum_i a[i] * b[i].
template <typename T>
inline T dot_lanes(const T* a, const T* b, int64_t n) {
  T part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) part[l] += a[i + l] * b[i + l];
  }
  for (int l = 0; i < n; ++i, ++l) part[l] += a[i] * b[i];
  for (int w = kLanes / 2; w > 0; w /= 2) {
    for (int l = 0; l < w; ++l) part[l] += part[l + w];
  }
  return part[0];
}

}  // namespace husai
