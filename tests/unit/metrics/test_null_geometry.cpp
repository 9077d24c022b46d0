// Geometry-matched nulls (second_moment, axis_reflection, rotation) and the within-dictionary nearest
// neighbour: their invariants and statistical properties, checked against direct double computations.
// Parity with an independent NumPy construction from the same seeds is in tests/parity/nulls_parity.py.

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/core/threading.hpp"
#include "husai/metrics/nulls.hpp"
#include "husai/metrics/stability.hpp"

namespace husai {
namespace {

double at(const std::vector<float>& v, int64_t k) {
  return static_cast<double>(v[static_cast<size_t>(k)]);
}

// Unit rows in double.
std::vector<double> unit(const std::vector<float>& w, int64_t n, int64_t d) {
  std::vector<double> out(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t k = 0; k < d; ++k) s += at(w, i * d + k) * at(w, i * d + k);
    const double inv = s > 0 ? 1.0 / std::sqrt(s) : 0.0;
    for (int64_t k = 0; k < d; ++k) out[static_cast<size_t>(i * d + k)] = at(w, i * d + k) * inv;
  }
  return out;
}

template <typename V>
double dot_rows(const V& a, int64_t i, const V& b, int64_t j, int64_t d) {
  double s = 0;
  for (int64_t k = 0; k < d; ++k) {
    s += static_cast<double>(a[static_cast<size_t>(i * d + k)]) *
         static_cast<double>(b[static_cast<size_t>(j * d + k)]);
  }
  return s;
}

// Anisotropic activations [n, d] with distinct variances along a rotated basis, plus an offset.
std::vector<float> anisotropic_rows(int64_t n, int64_t d, uint64_t seed) {
  const std::vector<double> basis = haar_orthogonal(d, seed + 99);
  const std::vector<float> g = gaussian_null_decoder(n, d, seed);  // unit rows: fine as raw material
  std::vector<float> x(static_cast<size_t>(n * d));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t j = 0; j < d; ++j) {
      double v = 0.5;
      for (int64_t k = 0; k < d; ++k)
        v += at(g, r * d + k) * std::pow(0.7, static_cast<double>(k)) * basis[static_cast<size_t>(j * d + k)];
      x[static_cast<size_t>(r * d + j)] = static_cast<float>(v);
    }
  }
  return x;
}

TEST(NullGeometry, NamesRoundTripAndTheErrorListsThemAll) {
  for (const NullKind k : {NullKind::Gaussian, NullKind::Untrained, NullKind::Covariance,
                           NullKind::SecondMoment, NullKind::AxisReflection, NullKind::Rotation}) {
    EXPECT_EQ(parse_null_kind(null_kind_name(k)), k);
  }
  EXPECT_EQ(null_kind_name(NullKind::SecondMoment), "second_moment");
  EXPECT_EQ(null_kind_name(NullKind::AxisReflection), "axis_reflection");
  EXPECT_EQ(null_kind_name(NullKind::Rotation), "rotation");
  try {
    parse_null_kind("haar");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* name :
         {"gaussian", "untrained", "covariance", "second_moment", "axis_reflection", "rotation"})
      EXPECT_NE(msg.find(name), std::string::npos) << msg;
  }
}

TEST(NullGeometry, AxisReflectionFlipsTheCoinAxesAndKeepsGramAndEnergy) {
  const int64_t n = 600, D = 6, F = 20;
  const std::vector<float> x = anisotropic_rows(n, D, 5);
  const CovarianceNull cov(x.data(), n, D);
  // Eigenvalues decreasing, axes orthonormal eigenvectors.
  for (int64_t k = 1; k < D; ++k) EXPECT_GT(cov.eigenvalues()(k - 1), cov.eigenvalues()(k));
  const Eigen::MatrixXd& V = cov.principal_axes();
  EXPECT_NEAR((V.transpose() * V - Eigen::MatrixXd::Identity(D, D)).cwiseAbs().maxCoeff(), 0.0, 1e-12);
  EXPECT_NEAR((cov.covariance() * V.col(0) - cov.eigenvalues()(0) * V.col(0)).norm(), 0.0, 1e-9);

  std::vector<float> w = gaussian_null_decoder(F, D, 11);
  for (float& v : w) v *= 3.0f;  // not unit: reflect normalises first
  const std::vector<double> wn = unit(w, F, D);
  const std::vector<int> s = reflection_signs(D, 42);
  int n_flipped = 0;
  for (const int v : s) n_flipped += v < 0 ? 1 : 0;
  ASSERT_GT(n_flipped, 0) << "pick a seed that flips an axis";
  ASSERT_LT(n_flipped, D) << "pick a seed that keeps an axis";
  const std::vector<float> r = cov.reflect(w.data(), F, 42);
  EXPECT_EQ(r, cov.reflect(w.data(), F, 42));
  EXPECT_NE(r, cov.reflect(w.data(), F, 43));
  for (int64_t i = 0; i < F; ++i) {
    // The component along axis k is multiplied by s_k.
    for (int64_t k = 0; k < D; ++k) {
      double before = 0, after = 0;
      for (int64_t j = 0; j < D; ++j) {
        before += wn[static_cast<size_t>(i * D + j)] * V(j, k);
        after += at(r, i * D + j) * V(j, k);
      }
      EXPECT_NEAR(after, s[static_cast<size_t>(k)] * before, 1e-6);
    }
    for (int64_t j = 0; j < F; ++j) EXPECT_NEAR(dot_rows(r, i, r, j, D), dot_rows(wn, i, wn, j, D), 1e-6);
  }
  for (int64_t k = 0; k < D; ++k) {
    double e_before = 0, e_after = 0;
    for (int64_t i = 0; i < F; ++i) {
      double b = 0, a = 0;
      for (int64_t j = 0; j < D; ++j) {
        b += wn[static_cast<size_t>(i * D + j)] * V(j, k);
        a += at(r, i * D + j) * V(j, k);
      }
      e_before += b * b;
      e_after += a * a;
    }
    EXPECT_NEAR(e_after, e_before, 1e-5);
  }
}

TEST(NullGeometry, ReflectionCoinsAreFair) {
  const std::vector<int> s = reflection_signs(20000, 3);
  double sum = 0;
  for (const int v : s) sum += v;
  EXPECT_NEAR(sum / 20000.0, 0.0, 0.03);  // sd of the mean 0.007
}

TEST(NullGeometry, HaarMatrixIsOrthogonalSignCorrectedAndUnbiased) {
  const int64_t d = 4;
  const std::vector<double> q = haar_orthogonal(d, 1000);
  for (int64_t i = 0; i < d; ++i) {
    for (int64_t j = 0; j < d; ++j) {
      double s = 0;
      for (int64_t k = 0; k < d; ++k)
        s += q[static_cast<size_t>(k * d + i)] * q[static_cast<size_t>(k * d + j)];
      EXPECT_NEAR(s, i == j ? 1.0 : 0.0, 1e-12);
    }
  }
  EXPECT_EQ(q, haar_orthogonal(d, 1000));
  EXPECT_NE(q, haar_orthogonal(d, 1001));
  // Haar: every entry has mean 0 and E[q^2] = 1/d. Householder QR without Mezzadri's sign correction gives
  // Q(0, 0) = -|G(0, 0)| / ||G(:, 0)|| < 0 always, so the mean test catches a missing correction.
  const int n_seeds = 2000;
  double m00 = 0, m00_sq = 0, m23 = 0;
  for (int s = 0; s < n_seeds; ++s) {
    const std::vector<double> r = haar_orthogonal(d, static_cast<uint64_t>(s));
    m00 += r[0];
    m00_sq += r[0] * r[0];
    m23 += r[static_cast<size_t>(2 * d + 3)];
  }
  EXPECT_NEAR(m00 / n_seeds, 0.0, 0.05);  // sd 0.011
  EXPECT_NEAR(m23 / n_seeds, 0.0, 0.05);
  EXPECT_NEAR(m00_sq / n_seeds, 0.25, 0.025);  // sd 0.0056
}

TEST(NullGeometry, RotationKeepsTheGramMatrixAndMovesTheAtoms) {
  const int64_t F = 30, D = 8;
  const std::vector<float> w = gaussian_null_decoder(F, D, 4);
  const std::vector<float> r = rotation_null_decoder(w.data(), F, D, 77);
  EXPECT_EQ(r, rotation_null_decoder(w.data(), F, D, 77));
  const std::vector<double> q = haar_orthogonal(D, 77);
  double moved = 0;
  for (int64_t i = 0; i < F; ++i) {
    for (int64_t j = 0; j < F; ++j) EXPECT_NEAR(dot_rows(r, i, r, j, D), dot_rows(w, i, w, j, D), 1e-6);
    for (int64_t k = 0; k < D; ++k) {
      double want = 0;
      for (int64_t j = 0; j < D; ++j) want += at(w, i * D + j) * q[static_cast<size_t>(j * D + k)];
      EXPECT_NEAR(at(r, i * D + k), want, 1e-6);
    }
    moved += 1.0 - std::fabs(dot_rows(r, i, w, i, D));
  }
  EXPECT_GT(moved / F, 0.1);
}

TEST(NullGeometry, SecondMomentMatchesTheDictionaryAndItsDrawsReproduceIt) {
  // W: unit atoms along e_0 .. e_3 of R^8 with signs and scales: M = diag(1/4 x 4, 0 x 4). On a subspace
  // where M is a multiple of the identity, the normalised draws are uniform on its sphere, so their sample
  // second moment converges to M itself.
  const int64_t D = 8, F = 8;
  std::vector<float> w(static_cast<size_t>(F * D), 0.0f);
  for (int64_t i = 0; i < F; ++i) w[static_cast<size_t>(i * D + i % 4)] = (i % 2 == 0 ? 2.0f : -0.5f);
  const SecondMomentNull null(w.data(), F, D);
  for (int64_t i = 0; i < D; ++i) {
    for (int64_t j = 0; j < D; ++j) {
      EXPECT_NEAR(null.second_moment()(i, j), (i == j && i < 4) ? 0.25 : 0.0, 1e-15);
      EXPECT_NEAR((null.root() * null.root())(i, j), null.second_moment()(i, j), 1e-12);
    }
  }
  const int64_t n = 20000;
  const std::vector<float> z = null.decoder(n, 1000);
  EXPECT_EQ(std::vector<float>(z.begin(), z.begin() + F * D),
            second_moment_null_decoder(w.data(), F, D, 1000));
  EXPECT_NE(z, null.decoder(n, 1001));
  for (int64_t i = 0; i < D; ++i) {
    for (int64_t j = 0; j < D; ++j) {
      double s = 0;
      for (int64_t r = 0; r < n; ++r) s += at(z, r * D + i) * at(z, r * D + j);
      EXPECT_NEAR(s / n, (i == j && i < 4) ? 0.25 : 0.0, 0.01) << i << "," << j;
    }
  }
  for (int64_t r = 0; r < 100; ++r) {
    for (int64_t k = 4; k < D; ++k) EXPECT_NEAR(at(z, r * D + k), 0.0, 1e-7);
  }
}

TEST(NullGeometry, SecondMomentOfAnAnisotropicDictionary) {
  // General anisotropic W: M = W^T W / F of the unit rows, its symmetric root squares to M (so z = root g has
  // E[z z^T] = M exactly), and the drawn atoms crowd where W's do.
  const int64_t D = 5, F = 40;
  std::vector<float> w = gaussian_null_decoder(F, D, 9);
  for (int64_t i = 0; i < F; ++i) w[static_cast<size_t>(i * D)] *= 4.0f;  // concentrate along e_0
  const SecondMomentNull null(w.data(), F, D);
  const std::vector<double> wn = unit(w, F, D);
  for (int64_t i = 0; i < D; ++i) {
    for (int64_t j = 0; j < D; ++j) {
      double m = 0;
      for (int64_t a = 0; a < F; ++a)
        m += wn[static_cast<size_t>(a * D + i)] * wn[static_cast<size_t>(a * D + j)];
      EXPECT_NEAR(null.second_moment()(i, j), m / F, 1e-14);
      EXPECT_NEAR((null.root() * null.root())(i, j), m / F, 1e-12);
      EXPECT_NEAR(null.root()(i, j), null.root()(j, i), 0.0);
    }
  }
  // The drawn atoms concentrate along e_0 as W's do (mean squared first coordinate well above 1 / D).
  const std::vector<float> z = null.decoder(4000, 5);
  double e0 = 0;
  for (int64_t r = 0; r < 4000; ++r) e0 += at(z, r * D) * at(z, r * D);
  EXPECT_GT(null.second_moment()(0, 0), 0.4);  // W's atoms: well above the isotropic 1 / D = 0.2
  EXPECT_GT(e0 / 4000, 0.4);
  EXPECT_THROW(SecondMomentNull(std::vector<float>(10, 0.0f).data(), 2, 5), Error);
}

TEST(NearestNeighbour, PlantedDuplicatesBlocksAndThreads) {
  // 600 atoms (three row blocks of 256) in R^24 with planted pairs across blocks; compared with a direct
  // double computation.
  const int64_t F = 600, D = 24;
  std::vector<float> w = gaussian_null_decoder(F, D, 21);
  for (int64_t k = 0; k < D; ++k) {
    w[static_cast<size_t>(500 * D + k)] = -3.0f * w[static_cast<size_t>(3 * D + k)];
    w[static_cast<size_t>(7 * D + k)] = 0.0f;  // a zero atom
  }
  const FeatureSet f = features_from_rows(w.data(), F, D);
  set_num_threads(1);
  const std::vector<float> one = nearest_neighbour_abs_cos(f);
  set_num_threads(2);
  const std::vector<float> two = nearest_neighbour_abs_cos(f);
  set_num_threads(0);
  EXPECT_EQ(one, two);
  const std::vector<double> wn = unit(w, F, D);
  for (int64_t i = 0; i < F; ++i) {
    double best = 0;
    for (int64_t j = 0; j < F; ++j) {
      if (j != i) best = std::max(best, std::fabs(dot_rows(wn, i, wn, j, D)));
    }
    EXPECT_NEAR(at(one, i), best, 1e-5) << i;
  }
  EXPECT_NEAR(at(one, 3), 1.0, 1e-6);
  EXPECT_NEAR(at(one, 500), 1.0, 1e-6);
  EXPECT_EQ(at(one, 7), 0.0);
  EXPECT_EQ(nearest_neighbour_abs_cos(features_from_rows(w.data(), 1, D)), std::vector<float>{0.0f});
}

}  // namespace
}  // namespace husai
