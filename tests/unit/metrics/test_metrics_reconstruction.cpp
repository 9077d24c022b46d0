// Reconstruction metrics: hand-computed values on tiny inputs, an Eigen re-implementation on random inputs,
// the degenerate cases (zero rows, constant data, dead and dense latents), dense vs sparse latents, and
// bitwise independence from batching and thread count.

// GCC 12 reports false -Wmaybe-uninitialized inside its own AVX-512 intrinsics when it inlines Eigen's
// double reductions (see src/husai/core/gemm.cpp); the Eigen oracle below instantiates them.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <cstring>
#include <set>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"
#include "husai/core/tensor.hpp"
#include "husai/core/threading.hpp"
#include "husai/metrics/reconstruction.hpp"

namespace husai {
namespace {

bool same_bits(double a, double b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

void expect_identical(const ReconstructionMetrics& a, const ReconstructionMetrics& b) {
  EXPECT_EQ(a.n_rows, b.n_rows);
  EXPECT_EQ(a.n_zero_norm_rows, b.n_zero_norm_rows);
  const double ReconstructionMetrics::*fields[] = {&ReconstructionMetrics::mse,
                                                   &ReconstructionMetrics::explained_variance,
                                                   &ReconstructionMetrics::explained_variance_per_dim,
                                                   &ReconstructionMetrics::explained_variance_uncentred,
                                                   &ReconstructionMetrics::l0,
                                                   &ReconstructionMetrics::l1,
                                                   &ReconstructionMetrics::frac_dead,
                                                   &ReconstructionMetrics::frac_dense,
                                                   &ReconstructionMetrics::cossim,
                                                   &ReconstructionMetrics::l2_ratio,
                                                   &ReconstructionMetrics::relative_reconstruction_bias};
  for (const auto field : fields) {
    EXPECT_TRUE(same_bits(a.*field, b.*field)) << a.*field << " vs " << b.*field;
  }
  EXPECT_EQ(a.feature_counts, b.feature_counts);
}

// Four rows of two dimensions, worked by hand:
//   x      = (1,0)  (0,2)  (0,0)  (3,4)
//   x_hat  = (1,1)  (0,1)  (1,0)  (0,0)
//   x-x_hat= (0,-1) (0,1) (-1,0)  (3,4)     sum ||e||^2 = 1 + 1 + 1 + 25 = 28
// mean(x) = (1, 1.5): sum ||x - mean||^2 = (0+1+1+4) + (2.25+0.25+2.25+6.25) = 17
// mean(e) = (0.5, 1): sum ||e - mean(e)||^2 = (0.25+0.25+2.25+6.25) + (4+0+1+9) = 23
// sum ||x||^2 = 30; sum ||x_hat||^2 = 2+1+1+0 = 4; sum <x,x_hat> = 1+2+0+0 = 3
// cos over rows with x != 0: 1/sqrt2, 1, 0 (x_hat = 0); norm ratios sqrt2, 1/2, 0.
// Latents [4, 3]: (0,1,0) (0,0,-2) (0,0,0) (0,3,0): latent 0 dead; every live latent fires on >= 25% > 10%.
struct HandCase {
  std::vector<float> x = {1, 0, 0, 2, 0, 0, 3, 4};
  std::vector<float> x_hat = {1, 1, 0, 1, 1, 0, 0, 0};
  std::vector<float> latents = {0, 1, 0, 0, 0, -2, 0, 0, 0, 0, 3, 0};
};

TEST(ReconstructionMetrics, HandComputedTinyCase) {
  const HandCase c;
  const ReconstructionMetrics m =
      reconstruction_metrics(c.x.data(), c.x_hat.data(), c.latents.data(), 4, 2, 3);
  EXPECT_EQ(m.n_rows, 4);
  EXPECT_DOUBLE_EQ(m.mse, 28.0 / 8.0);
  EXPECT_DOUBLE_EQ(m.explained_variance, 1.0 - 28.0 / 17.0);
  EXPECT_DOUBLE_EQ(m.explained_variance_per_dim, 1.0 - 23.0 / 17.0);
  EXPECT_DOUBLE_EQ(m.explained_variance_uncentred, 1.0 - 28.0 / 30.0);
  EXPECT_DOUBLE_EQ(m.relative_reconstruction_bias, 4.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.cossim, (1.0 / std::sqrt(2.0) + 1.0 + 0.0) / 3.0);
  EXPECT_DOUBLE_EQ(m.l2_ratio, (std::sqrt(2.0) + 0.5 + 0.0) / 3.0);
  EXPECT_EQ(m.n_zero_norm_rows, 1);
  EXPECT_DOUBLE_EQ(m.l0, 3.0 / 4.0);
  EXPECT_DOUBLE_EQ(m.l1, (1.0 + 2.0 + 3.0) / 4.0);
  EXPECT_EQ(m.feature_counts, (std::vector<int64_t>{0, 2, 1}));
  EXPECT_DOUBLE_EQ(m.frac_dead, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.frac_dense, 2.0 / 3.0);
  EXPECT_EQ(m.feature_density(), (std::vector<double>{0.0, 0.5, 0.25}));
}

// 20 rows, 4 latents: latent 0 never fires; latent 1 fires on exactly 2 rows (10%: not dense, the rule is
// strictly more than 10%); latent 2 on 3 rows (15%: dense); latent 3 on every row with a negative value
// (signed latents fire too). An explicit 0 in the sparse form does not count.
TEST(ReconstructionMetrics, DeadAndDenseLatentsSparseAndDense) {
  const int64_t N = 20, F = 4;
  std::vector<float> x(N, 1.0f), x_hat(N, 1.0f), dense(static_cast<size_t>(N * F), 0.0f);
  std::vector<int64_t> offsets{0}, indices;
  std::vector<float> values;
  for (int64_t r = 0; r < N; ++r) {
    auto put = [&](int64_t j, float v) {
      dense[static_cast<size_t>(r * F + j)] = v;
      indices.push_back(j);
      values.push_back(v);
    };
    put(0, 0.0f);  // stored, but zero
    if (r == 3) put(1, 1.0f);
    if (r == 11) put(1, 2.0f);
    if (r % 7 == 0) put(2, 0.5f);  // rows 0, 7, 14
    put(3, -0.5f);
    offsets.push_back(static_cast<int64_t>(indices.size()));
  }
  const ReconstructionMetrics md = reconstruction_metrics(x.data(), x_hat.data(), dense.data(), N, 1, F);
  ReconstructionAccumulator acc(1, F);
  acc.add(x.data(), x_hat.data(), SparseLatents{offsets.data(), indices.data(), values.data()}, N);
  const ReconstructionMetrics ms = acc.finish();
  for (const ReconstructionMetrics* m : {&md, &ms}) {
    EXPECT_EQ(m->feature_counts, (std::vector<int64_t>{0, 2, 3, 20}));
    EXPECT_DOUBLE_EQ(m->frac_dead, 0.25);
    EXPECT_DOUBLE_EQ(m->frac_dense, 0.5);
    EXPECT_DOUBLE_EQ(m->l0, 25.0 / 20.0);
    EXPECT_DOUBLE_EQ(m->l1, (1.0 + 2.0 + 3 * 0.5 + 20 * 0.5) / 20.0);
    EXPECT_EQ(m->mse, 0.0);
    EXPECT_EQ(m->explained_variance_uncentred, 1.0);
    EXPECT_EQ(m->cossim, 1.0);
    EXPECT_EQ(m->l2_ratio, 1.0);
  }
  expect_identical(md, ms);
}

// Constant x: no variance, so both centred explained variances are undefined (NaN -> JSON null); the
// uncentred one is still defined. All-zero x: cossim and l2_ratio have no row to average.
TEST(ReconstructionMetrics, DegenerateDataGivesNaNAndNull) {
  const std::vector<float> x = {2, -1, 2, -1, 2, -1};
  const std::vector<float> x_hat = {1, -1, 2, 0, 2, -1};
  const std::vector<float> f = {1, 0, 1};
  const ReconstructionMetrics m = reconstruction_metrics(x.data(), x_hat.data(), f.data(), 3, 2, 1);
  EXPECT_TRUE(std::isnan(m.explained_variance));
  EXPECT_TRUE(std::isnan(m.explained_variance_per_dim));
  EXPECT_DOUBLE_EQ(m.explained_variance_uncentred, 1.0 - 2.0 / 15.0);
  const nlohmann::json j = m.to_json();
  EXPECT_TRUE(j.at("explained_variance").is_null());
  EXPECT_TRUE(j.at("explained_variance_per_dim").is_null());
  EXPECT_TRUE(j.at("explained_variance_uncentred").is_number());

  const std::vector<float> zeros(6, 0.0f);
  const ReconstructionMetrics z = reconstruction_metrics(zeros.data(), x_hat.data(), f.data(), 3, 2, 1);
  EXPECT_EQ(z.n_zero_norm_rows, 3);
  EXPECT_TRUE(std::isnan(z.cossim));
  EXPECT_TRUE(std::isnan(z.l2_ratio));
  EXPECT_TRUE(std::isnan(z.explained_variance_uncentred));
  EXPECT_TRUE(std::isnan(z.relative_reconstruction_bias));  // sum <x, x_hat> = 0
  EXPECT_DOUBLE_EQ(z.mse, (1 + 1 + 4 + 0 + 4 + 1) / 6.0);
}

TEST(ReconstructionMetrics, JsonHasExactlyTheContractKeys) {
  const HandCase c;
  const ReconstructionMetrics m =
      reconstruction_metrics(c.x.data(), c.x_hat.data(), c.latents.data(), 4, 2, 3);
  const nlohmann::json j = m.to_json();
  std::set<std::string> keys;
  for (const auto& item : j.items()) keys.insert(item.key());
  const std::set<std::string> expected = {"n_rows",
                                          "mse",
                                          "explained_variance",
                                          "explained_variance_per_dim",
                                          "explained_variance_uncentred",
                                          "l0",
                                          "l1",
                                          "frac_dead",
                                          "frac_dense",
                                          "cossim",
                                          "l2_ratio",
                                          "relative_reconstruction_bias"};
  EXPECT_EQ(keys, expected);
  const nlohmann::json with_density = m.to_json(true);
  EXPECT_EQ(with_density.at("feature_density"), nlohmann::json(std::vector<double>{0.0, 0.5, 0.25}));
  EXPECT_EQ(with_density.at("n_rows"), 4);
  EXPECT_DOUBLE_EQ(with_density.at("mse").get<double>(), 3.5);
}

// Random data whose mean is far from 0 (so a naive sum-of-squares variance would lose digits), a
// reconstruction with error, a dead latent, a dense latent and a few zero rows; 1000 rows cross several
// 256-row chunks.
struct RandomCase {
  int64_t N = 1000, D = 16, F = 40;
  std::vector<float> x, x_hat, latents;
  RandomCase() {
    const Philox rng(2024, 1);
    uint64_t k = 0;
    x.resize(static_cast<size_t>(N * D));
    x_hat.resize(x.size());
    latents.assign(static_cast<size_t>(N * F), 0.0f);
    for (int64_t r = 0; r < N; ++r) {
      const bool zero_row = r % 97 == 5;
      for (int64_t d = 0; d < D; ++d) {
        const auto i = static_cast<size_t>(r * D + d);
        x[i] = zero_row ? 0.0f : static_cast<float>(30.0 + 3.0 * static_cast<double>(d) + rng.normal(k++));
        x_hat[i] = static_cast<float>(0.9 * static_cast<double>(x[i]) + 0.5 * rng.normal(k++));
      }
      for (int64_t j = 1; j < F; ++j) {  // latent 0 dead
        const double u = rng.uniform_f64(k++);
        const bool fires = j == 1 ? u < 0.5 : u < 0.05;  // latent 1 dense
        if (fires) latents[static_cast<size_t>(r * F + j)] = static_cast<float>(rng.normal(k++));
      }
    }
  }
};

TEST(ReconstructionMetrics, RandomMatchesEigenReimplementation) {
  const RandomCase c;
  using Mat = Eigen::MatrixXd;
  const Mat X = Eigen::Map<const MatrixR<float>>(c.x.data(), c.N, c.D).cast<double>();
  const Mat H = Eigen::Map<const MatrixR<float>>(c.x_hat.data(), c.N, c.D).cast<double>();
  const Mat Fl = Eigen::Map<const MatrixR<float>>(c.latents.data(), c.N, c.F).cast<double>();
  const Mat E = X - H;
  const Mat Xc = X.rowwise() - X.colwise().mean();
  const Mat Ec = E.rowwise() - E.colwise().mean();
  const Eigen::VectorXd nx = X.rowwise().norm(), nh = H.rowwise().norm();
  const Eigen::VectorXd dots = X.cwiseProduct(H).rowwise().sum();
  double cos_sum = 0, ratio_sum = 0;
  int64_t live_rows = 0;
  for (int64_t r = 0; r < c.N; ++r) {
    if (nx(r) == 0) continue;
    ++live_rows;
    cos_sum += nh(r) == 0 ? 0.0 : dots(r) / (nx(r) * nh(r));
    ratio_sum += nh(r) / nx(r);
  }
  // Latent statistics column by column.
  std::vector<double> counts(static_cast<size_t>(c.F), 0.0);
  double fired = 0, abs_sum = 0, dot_sum = 0;
  for (int64_t j = 0; j < c.F; ++j) {
    for (int64_t r = 0; r < c.N; ++r) {
      counts[static_cast<size_t>(j)] += Fl(r, j) != 0 ? 1.0 : 0.0;
      abs_sum += std::abs(Fl(r, j));
    }
    fired += counts[static_cast<size_t>(j)];
  }
  for (int64_t r = 0; r < c.N; ++r) dot_sum += dots(r);
  const double n = static_cast<double>(c.N);

  const ReconstructionMetrics m =
      reconstruction_metrics(c.x.data(), c.x_hat.data(), c.latents.data(), c.N, c.D, c.F);
  auto near = [](double got, double want) { EXPECT_NEAR(got, want, 1e-12 * std::max(1.0, std::abs(want))); };
  near(m.mse, E.squaredNorm() / (n * static_cast<double>(c.D)));
  near(m.explained_variance, 1.0 - E.squaredNorm() / Xc.squaredNorm());
  near(m.explained_variance_per_dim, 1.0 - Ec.squaredNorm() / Xc.squaredNorm());
  near(m.explained_variance_uncentred, 1.0 - E.squaredNorm() / X.squaredNorm());
  near(m.relative_reconstruction_bias, H.squaredNorm() / dot_sum);
  near(m.cossim, cos_sum / static_cast<double>(live_rows));
  near(m.l2_ratio, ratio_sum / static_cast<double>(live_rows));
  near(m.l0, fired / n);
  near(m.l1, abs_sum / n);
  EXPECT_EQ(m.n_zero_norm_rows, c.N - live_rows);
  EXPECT_GT(m.n_zero_norm_rows, 0);
  int64_t dead = 0, dense = 0;
  for (int64_t j = 0; j < c.F; ++j) {
    EXPECT_EQ(m.feature_counts[static_cast<size_t>(j)], static_cast<int64_t>(counts[static_cast<size_t>(j)]));
    dead += counts[static_cast<size_t>(j)] == 0 ? 1 : 0;
    dense += counts[static_cast<size_t>(j)] / n > 0.1 ? 1 : 0;
  }
  EXPECT_EQ(dead, 1);
  EXPECT_EQ(dense, 1);
  near(m.frac_dead, static_cast<double>(dead) / static_cast<double>(c.F));
  near(m.frac_dense, static_cast<double>(dense) / static_cast<double>(c.F));
  // The explained variances really differ here (the error has a mean), so the names matter.
  EXPECT_GT(std::abs(m.explained_variance - m.explained_variance_per_dim), 1e-3);
  EXPECT_GT(m.explained_variance_uncentred, m.explained_variance);
}

TEST(ReconstructionMetrics, BatchingDoesNotChangeABit) {
  const RandomCase c;
  const ReconstructionMetrics whole =
      reconstruction_metrics(c.x.data(), c.x_hat.data(), c.latents.data(), c.N, c.D, c.F);
  for (const std::vector<int64_t>& sizes :
       {std::vector<int64_t>{1, 7, 255, 256, 300, 181}, std::vector<int64_t>{513, 0, 487},
        std::vector<int64_t>(1000, 1)}) {
    ReconstructionAccumulator acc(c.D, c.F);
    int64_t r = 0;
    for (const int64_t size : sizes) {
      acc.add(c.x.data() + r * c.D, c.x_hat.data() + r * c.D, c.latents.data() + r * c.F, size);
      r += size;
    }
    ASSERT_EQ(r, c.N);
    expect_identical(acc.finish(), whole);
  }
}

TEST(ReconstructionMetrics, SparseFormMatchesDenseBitwise) {
  const RandomCase c;
  std::vector<int64_t> offsets{0}, indices;
  std::vector<float> values;
  for (int64_t r = 0; r < c.N; ++r) {
    for (int64_t j = 0; j < c.F; ++j) {
      const float v = c.latents[static_cast<size_t>(r * c.F + j)];
      if (v != 0.0f) {
        indices.push_back(j);
        values.push_back(v);
      }
    }
    offsets.push_back(static_cast<int64_t>(indices.size()));
  }
  ReconstructionAccumulator acc(c.D, c.F);
  // Two batches; the second's offsets do not start at 0.
  const int64_t split = 300;
  acc.add(c.x.data(), c.x_hat.data(), SparseLatents{offsets.data(), indices.data(), values.data()}, split);
  acc.add(c.x.data() + split * c.D, c.x_hat.data() + split * c.D,
          SparseLatents{offsets.data() + split, indices.data(), values.data()}, c.N - split);
  expect_identical(acc.finish(),
                   reconstruction_metrics(c.x.data(), c.x_hat.data(), c.latents.data(), c.N, c.D, c.F));
}

TEST(ReconstructionMetrics, SameBitsWithOneAndTwoThreads) {
  const RandomCase c;
  const int saved = num_threads();
  set_num_threads(1);
  const ReconstructionMetrics one =
      reconstruction_metrics(c.x.data(), c.x_hat.data(), c.latents.data(), c.N, c.D, c.F);
  set_num_threads(2);
  const ReconstructionMetrics two =
      reconstruction_metrics(c.x.data(), c.x_hat.data(), c.latents.data(), c.N, c.D, c.F);
  set_num_threads(saved);
  expect_identical(one, two);
}

TEST(ReconstructionMetrics, BadInputIsRefusedAndLeavesTheSumsAlone) {
  EXPECT_THROW(ReconstructionAccumulator(0, 4), Error);
  EXPECT_THROW(ReconstructionAccumulator(4, 0), Error);
  ReconstructionAccumulator acc(2, 3);
  EXPECT_THROW(acc.finish(), Error);
  const HandCase c;
  acc.add(c.x.data(), c.x_hat.data(), c.latents.data(), 4);
  const ReconstructionMetrics before = acc.finish();

  const std::vector<int64_t> offsets = {0, 1, 3};
  const std::vector<int64_t> out_of_range = {0, 1, 3};
  const std::vector<int64_t> repeated = {0, 2, 2};
  const std::vector<float> values = {1, 1, 1};
  try {
    acc.add(c.x.data(), c.x_hat.data(), SparseLatents{offsets.data(), out_of_range.data(), values.data()}, 2);
    ADD_FAILURE() << "index 3 of 3 latents accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 5"), std::string::npos) << e.what();
  }
  EXPECT_THROW(
      acc.add(c.x.data(), c.x_hat.data(), SparseLatents{offsets.data(), repeated.data(), values.data()}, 2),
      Error);
  const std::vector<int64_t> decreasing = {2, 1, 3};
  EXPECT_THROW(acc.add(c.x.data(), c.x_hat.data(),
                       SparseLatents{decreasing.data(), repeated.data(), values.data()}, 2),
               Error);
  EXPECT_EQ(acc.n_rows(), 4);
  expect_identical(acc.finish(), before);
}

}  // namespace
}  // namespace husai
