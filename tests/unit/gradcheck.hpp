#pragma once

// Finite-difference gradient checking in double precision, shared by the layer and model tests.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "husai/core/rng.hpp"

namespace husai::gradcheck {

// Fills v with N(0, scale^2) numbers from a fixed stream.
inline void fill_normal(std::vector<double>& v, uint64_t seed, double scale = 1.0) {
  const Philox rng(seed, 77);
  for (size_t i = 0; i < v.size(); ++i) v[i] = scale * rng.normal(i);
}

// Compares analytic[i] with the central difference (f(x + h) - f(x - h)) / 2h for every `stride`-th
// element of x. Fails with the element, both values and the error. Relative error is measured against
// max(|analytic|, |numeric|, floor) so that near-zero gradients are judged absolutely.
inline void expect_gradient_matches(const std::string& what, const std::function<double()>& f, double* x,
                                    const double* analytic, int64_t n, int64_t stride = 1, double h = 1e-6,
                                    double tol = 1e-6, double floor = 1e-3) {
  double worst = 0.0;
  int64_t checked = 0;
  for (int64_t i = 0; i < n; i += stride) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = f();
    x[i] = saved - h;
    const double down = f();
    x[i] = saved;
    const double numeric = (up - down) / (2.0 * h);
    const double denom = std::max({std::abs(numeric), std::abs(analytic[i]), floor});
    // The central difference carries rounding noise of a few ulps of f divided by h: for an exactly zero
    // gradient (attention's b_K) it reads about 1e-9, which the floor alone turns into a relative error above
    // tol on some builds (FMA contraction changes the last bits of f). Discount that noise, 16 ulps of |f|.
    const double noise =
        16.0 * std::numeric_limits<double>::epsilon() * std::max(std::abs(up), std::abs(down)) / h;
    const double err = std::max(0.0, std::abs(numeric - analytic[i]) - noise) / denom;
    worst = std::max(worst, err);
    ++checked;
    ASSERT_LE(err, tol) << what << "[" << i << "]: analytic " << analytic[i] << " vs numeric " << numeric;
  }
  ASSERT_GT(checked, 0) << what;
  ::testing::Test::RecordProperty(what + "_worst_rel_err", std::to_string(worst));
}

}  // namespace husai::gradcheck
