// Logistic probes and sparse probing: the objective's gradient against finite differences, the fitted optimum
// against SciPy's L-BFGS-B on the same objective (tests/parity/probe_oracle.py printed the numbers below),
// the class-separation score against a hand computation, and sparse probing on planted latents.

#include <gtest/gtest.h>

#include <cmath>
#include <thread>
#include <vector>

#include "gradcheck.hpp"
#include "husai/core/error.hpp"
#include "husai/core/threading.hpp"
#include "husai/metrics/probing.hpp"

namespace husai {
namespace {

constexpr int64_t kN = 60, kF = 3;

// The formula data of probe_oracle.py.
void oracle_data(std::vector<double>& x, std::vector<int64_t>& y2, std::vector<int64_t>& y3) {
  x.resize(kN * kF);
  y2.resize(kN);
  y3.resize(kN);
  for (int64_t i = 0; i < kN; ++i) {
    for (int64_t j = 0; j < kF; ++j) {
      x[static_cast<size_t>(i * kF + j)] =
          std::sin(0.37 * static_cast<double>((i + 1) * (j + 1)) + 0.5 * static_cast<double>(j)) +
          0.1 * static_cast<double>(j);
    }
    const double* r = x.data() + i * kF;
    const double s = r[0] + 0.5 * r[1] - 0.3 * r[2] + 0.4 * std::sin(1.7 * static_cast<double>(i));
    y2[static_cast<size_t>(i)] = s > 0 ? 1 : 0;
    const double z[3] = {r[0], r[1] - r[2], 0.5 * std::cos(2.3 * static_cast<double>(i))};
    int64_t arg = 0;
    for (int64_t c = 1; c < 3; ++c) {
      if (z[c] > z[arg]) arg = c;
    }
    y3[static_cast<size_t>(i)] = arg;
  }
}

TEST(Probing, ObjectiveGradientMatchesFiniteDifferences) {
  std::vector<double> x;
  std::vector<int64_t> y2, y3;
  oracle_data(x, y2, y3);
  for (const int64_t classes : {2, 3}) {
    const std::vector<int64_t>& y = classes == 2 ? y2 : y3;
    const int64_t n_out = classes == 2 ? 1 : classes;
    std::vector<double> params(static_cast<size_t>(n_out * (kF + 1)));
    gradcheck::fill_normal(params, 5 + static_cast<uint64_t>(classes), 0.7);
    std::vector<double> grad;
    logistic_objective(x.data(), y.data(), kN, kF, classes, 0.05, params, &grad);
    const auto f = [&] {
      return logistic_objective(x.data(), y.data(), kN, kF, classes, 0.05, params, nullptr);
    };
    gradcheck::expect_gradient_matches("logistic C=" + std::to_string(classes), f, params.data(), grad.data(),
                                       static_cast<int64_t>(params.size()));
  }
}

TEST(Probing, OptimumMatchesScipy) {
  std::vector<double> x;
  std::vector<int64_t> y2, y3;
  oracle_data(x, y2, y3);
  LogisticOptions opt;
  opt.l2 = 0.05;
  opt.epsilon = 1e-10;
  struct Expect {
    int64_t classes;
    std::vector<double> params;
    double objective, accuracy;
  };
  const Expect cases[] = {
      {2,
       {1.55096754941, 0.766998462345, -0.589101875845, 0.477461941575},
       0.3737643918204,
       0.883333333333333},
      {3,
       {1.12244989661, -0.578850811802, 0.62633701603, -0.141684716217, 0.859283806326, -1.06252278506,
        -0.980765180398, -0.280432994524, 0.43618576903, -0.00977716550717, 0.138567450585, -0.128790285078},
       0.501147173093515,
       0.9},
  };
  for (const Expect& e : cases) {
    const std::vector<int64_t>& y = e.classes == 2 ? y2 : y3;
    const LogisticModel m = fit_logistic(x.data(), y.data(), kN, kF, e.classes, opt);
    EXPECT_TRUE(m.converged);
    EXPECT_NEAR(m.objective, e.objective, 1e-10);
    const int64_t n_out = m.n_out();
    ASSERT_EQ(static_cast<int64_t>(m.weights.size()), n_out * kF);
    for (int64_t i = 0; i < n_out * kF; ++i) {
      EXPECT_NEAR(m.weights[static_cast<size_t>(i)], e.params[static_cast<size_t>(i)], 1e-6) << i;
    }
    for (int64_t c = 0; c < n_out; ++c) {
      EXPECT_NEAR(m.bias[static_cast<size_t>(c)], e.params[static_cast<size_t>(n_out * kF + c)], 1e-6);
    }
    EXPECT_NEAR(classification_accuracy(m.predict(x.data(), kN), y.data(), kN), e.accuracy, 1e-12);
  }
}

// Same data, same fit, whatever the thread count, the heap layout or the calling thread. Two processes
// running one benchmark-slice once disagreed on L-BFGS iterations (fixed by husai's fixed-tile gemm and an
// index-order
// ||W||^2 in logistic_objective); this test did not reproduce that inside one process, so
// tests/integration/experiments_slice.sh runs the slice in a second process and compares. Large enough
// (4,000 x 64) that the products are tiled and threaded.
TEST(Probing, FitIsIdenticalWhateverTheThreadsAndHeapLayout) {
  constexpr int64_t n = 4000, f = 64;
  std::vector<double> x(static_cast<size_t>(n * f));
  gradcheck::fill_normal(x, 3, 1.0);
  std::vector<int64_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t j = 0; j < f; ++j) s += x[static_cast<size_t>(i * f + j)] * static_cast<double>(j % 5 - 2);
    y[static_cast<size_t>(i)] = s > 0 ? (s > 4 ? 2 : 1) : 0;
  }
  LogisticOptions opt;
  opt.max_iter = 200;
  set_num_threads(1);
  const LogisticModel first = fit_logistic(x.data(), y.data(), n, f, 3, opt);
  set_num_threads(2);
  for (int pad = 0; pad < 8; ++pad) {
    std::vector<std::vector<char>> held;
    for (int i = 0; i <= pad; ++i) held.emplace_back(static_cast<size_t>(8 + 16 * pad + i));
    const LogisticModel again = fit_logistic(x.data(), y.data(), n, f, 3, opt);
    EXPECT_EQ(first.iterations, again.iterations) << pad;
    EXPECT_EQ(first.weights, again.weights) << pad;
    EXPECT_EQ(first.bias, again.bias) << pad;
  }
  // On other threads (their own malloc arenas place buffers differently).
  for (int t = 0; t < 4; ++t) {
    LogisticModel other;
    std::thread worker([&] {
      std::vector<char> pad(static_cast<size_t>(24 + 8 * t));
      other = fit_logistic(x.data(), y.data(), n, f, 3, opt);
    });
    worker.join();
    EXPECT_EQ(first.iterations, other.iterations) << "thread " << t;
    EXPECT_EQ(first.weights, other.weights) << "thread " << t;
  }
  set_num_threads(0);
}

TEST(Probing, ClassSeparationByHand) {
  // Column 0: classes {0: 1, 3}, {1: 5, 7} -> means 2, 6, overall 4; SS_between = 2*4 + 2*4 = 16,
  // SS_total = 9 + 1 + 1 + 9 = 20 -> 0.8. Column 1 constant -> 0. Column 2 equals the label -> 1.
  const std::vector<float> f = {1, 2, 0, 3, 2, 0, 5, 2, 1, 7, 2, 1};
  const std::vector<int64_t> y = {0, 0, 1, 1};
  const std::vector<double> s = class_separation_scores(f.data(), 4, 3, y.data(), 2);
  EXPECT_NEAR(s[0], 0.8, 1e-12);
  EXPECT_EQ(s[1], 0.0);
  EXPECT_NEAR(s[2], 1.0, 1e-12);
  EXPECT_EQ(top_k_indices(s, 2), (std::vector<int64_t>{2, 0}));
  EXPECT_EQ(top_k_indices({0.5, 0.7, 0.5, 0.7}, 3), (std::vector<int64_t>{1, 3, 0}));  // ties: lower index
  EXPECT_THROW(class_separation_scores(f.data(), 4, 3, std::vector<int64_t>{0, 0, 1, 2}.data(), 2), Error);
}

TEST(Probing, ModularLabels) {
  const std::vector<ProbeLabel> labels = modular_probe_labels({0, 4, 2}, {3, 4, 0}, {3, 1, 2}, 7);
  ASSERT_EQ(labels.size(), 5u);
  EXPECT_EQ(labels[0].name, "a");
  EXPECT_EQ(labels[2].values, (std::vector<int64_t>{3, 1, 2}));
  EXPECT_EQ(labels[3].name, "c_mod_2");
  EXPECT_EQ(labels[3].values, (std::vector<int64_t>{1, 1, 0}));
  EXPECT_EQ(labels[4].values, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(labels[4].n_classes, 3);
}

TEST(Probing, SparseProbingFindsPlantedLatent) {
  // 7 x 7 pairs; latent 5 fires exactly when c is odd, latent 2 carries c mod 3 as a level, the rest is
  // deterministic clutter unrelated to c.
  const int64_t p = 7, n = p * p, L = 8;
  std::vector<int64_t> a, b, c, is_train;
  std::vector<float> lat(static_cast<size_t>(n * L), 0.0f);
  for (int64_t r = 0; r < n; ++r) {
    a.push_back(r / p);
    b.push_back(r % p);
    c.push_back((r / p + r % p) % p);
    is_train.push_back(r % 4 != 0 ? 1 : 0);
    for (int64_t i = 0; i < L; ++i) {
      lat[static_cast<size_t>(r * L + i)] =
          static_cast<float>(0.3 * std::abs(std::sin(1.3 * static_cast<double>(r * (i + 2)))));
    }
    lat[static_cast<size_t>(r * L + 5)] = c.back() % 2 == 1 ? 2.0f : 0.0f;
    lat[static_cast<size_t>(r * L + 2)] = static_cast<float>(c.back() % 3);
  }
  const std::vector<ProbeLabel> labels = modular_probe_labels(a, b, c, p);
  SparseProbingOptions opt;
  opt.k_values = {1, 2};
  const nlohmann::json out = sparse_probing(lat.data(), n, L, labels, is_train, opt);
  EXPECT_EQ(out["c_mod_2"]["top_latents"][0].get<int64_t>(), 5);
  EXPECT_DOUBLE_EQ(out["c_mod_2"]["top_k"]["1"]["test_accuracy"].get<double>(), 1.0);
  EXPECT_EQ(out["c_mod_3"]["top_latents"][0].get<int64_t>(), 2);
  EXPECT_DOUBLE_EQ(out["c_mod_3"]["top_k"]["1"]["test_accuracy"].get<double>(), 1.0);
  // Chance: the majority class of the training rows scored on the test rows, below 1.
  EXPECT_LT(out["c_mod_2"]["chance_accuracy"].get<double>(), 1.0);
  const nlohmann::json full = full_activation_probing(lat.data(), n, L, labels, is_train, LogisticOptions{});
  EXPECT_DOUBLE_EQ(full["c_mod_2"]["test_accuracy"].get<double>(), 1.0);
  EXPECT_THROW(sparse_probing(lat.data(), n, L, labels, std::vector<int64_t>(static_cast<size_t>(n), 1), opt),
               Error);
}

}  // namespace
}  // namespace husai
