// GCC 12's false -W(maybe-)uninitialized inside its AVX-512 intrinsics when inlining Eigen's packet
// transpose (see core/gemm.cpp): this file instantiates Eigen's double GEMM, QR and eigen solvers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "husai/metrics/probing.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

#include <LBFGS.h>
#include <Eigen/Dense>

#include "husai/core/error.hpp"
#include "husai/core/gemm.hpp"

namespace husai {
namespace {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// log(1 + exp(z)) without overflow.
double softplus(double z) {
  return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
}
double sigmoid(double z) {
  return z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z));
}

void check_labels(const int64_t* labels, int64_t n_rows, int64_t n_classes) {
  if (n_classes < 2) throw Error("a probe needs at least 2 classes, got " + std::to_string(n_classes));
  for (int64_t r = 0; r < n_rows; ++r) {
    if (labels[r] < 0 || labels[r] >= n_classes) {
      throw Error("probe label " + std::to_string(labels[r]) + " of row " + std::to_string(r) +
                  " is outside [0, " + std::to_string(n_classes) + ")");
    }
  }
}

// Rows of `x` (float or double) selected by `rows`, columns `cols` (all when empty), as double.
template <typename T>
std::vector<double> gather(const T* x, int64_t n_cols, const std::vector<int64_t>& rows,
                           const std::vector<int64_t>& cols) {
  const auto width = static_cast<int64_t>(cols.empty() ? n_cols : static_cast<int64_t>(cols.size()));
  std::vector<double> out(rows.size() * static_cast<size_t>(width));
  for (size_t i = 0; i < rows.size(); ++i) {
    const T* row = x + rows[i] * n_cols;
    double* dst = out.data() + static_cast<int64_t>(i) * width;
    for (int64_t j = 0; j < width; ++j) {
      dst[j] = static_cast<double>(cols.empty() ? row[j] : row[cols[static_cast<size_t>(j)]]);
    }
  }
  return out;
}

struct Split {
  std::vector<int64_t> train, test;
};
Split split_rows(const std::vector<int64_t>& is_train, int64_t n_rows) {
  if (static_cast<int64_t>(is_train.size()) != n_rows) {
    throw Error("is_train has " + std::to_string(is_train.size()) + " entries for " + std::to_string(n_rows) +
                " rows");
  }
  Split s;
  for (int64_t r = 0; r < n_rows; ++r)
    (is_train[static_cast<size_t>(r)] != 0 ? s.train : s.test).push_back(r);
  if (s.train.empty() || s.test.empty()) throw Error("probing needs both training and test rows");
  return s;
}

std::vector<int64_t> pick(const std::vector<int64_t>& values, const std::vector<int64_t>& rows) {
  std::vector<int64_t> out(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) out[i] = values[static_cast<size_t>(rows[i])];
  return out;
}

// Accuracy of always answering the training rows' most frequent class (lowest class on ties).
double chance_accuracy(const std::vector<int64_t>& train_y, const std::vector<int64_t>& test_y,
                       int64_t n_classes) {
  std::vector<int64_t> counts(static_cast<size_t>(n_classes), 0);
  for (const int64_t y : train_y) ++counts[static_cast<size_t>(y)];
  const auto majority = std::max_element(counts.begin(), counts.end()) - counts.begin();
  int64_t hits = 0;
  for (const int64_t y : test_y) hits += y == majority ? 1 : 0;
  return static_cast<double>(hits) / static_cast<double>(test_y.size());
}

// Fits on the train rows of `features` restricted to `cols` and scores on the test rows.
template <typename T>
nlohmann::json fit_and_score(const T* features, int64_t n_cols, const std::vector<int64_t>& cols,
                             const Split& split, const ProbeLabel& label, const LogisticOptions& options) {
  const auto width = static_cast<int64_t>(cols.empty() ? n_cols : static_cast<int64_t>(cols.size()));
  const std::vector<double> x_train = gather(features, n_cols, split.train, cols);
  const std::vector<double> x_test = gather(features, n_cols, split.test, cols);
  const std::vector<int64_t> y_train = pick(label.values, split.train);
  const std::vector<int64_t> y_test = pick(label.values, split.test);
  const LogisticModel model = fit_logistic(
      x_train.data(), y_train.data(), static_cast<int64_t>(y_train.size()), width, label.n_classes, options);
  const auto n_test = static_cast<int64_t>(y_test.size());
  const auto n_train = static_cast<int64_t>(y_train.size());
  return {
      {"test_accuracy", classification_accuracy(model.predict(x_test.data(), n_test), y_test.data(), n_test)},
      {"train_accuracy",
       classification_accuracy(model.predict(x_train.data(), n_train), y_train.data(), n_train)},
      {"iterations", model.iterations},
      {"converged", model.converged}};
}

}  // namespace

double logistic_objective(const double* x, const int64_t* labels, int64_t n_rows, int64_t n_features,
                          int64_t n_classes, double l2, const std::vector<double>& params,
                          std::vector<double>* grad) {
  const int64_t n_out = n_classes == 2 ? 1 : n_classes;
  const int64_t F = n_features;
  if (static_cast<int64_t>(params.size()) != n_out * (F + 1)) throw Error("logistic_objective: wrong size");
  const Eigen::Map<const RowMatrix> W(params.data(), n_out, F);
  const Eigen::Map<const Eigen::VectorXd> bias(params.data() + n_out * F, n_out);
  // The two products go through husai's fixed-tile gemm (its results depend on the shapes only), not an Eigen
  // product whose blocking follows the threads Eigen sees. Together with the fixed-order ||W||^2 below this
  // makes a fit identical from run to run: before, L-BFGS took a different number of iterations in two runs
  // of the same benchmark-slice.
  RowMatrix Z(n_rows, n_out);  // [n, n_out]
  gemm<double>(false, true, n_rows, n_out, F, 1.0, x, F, params.data(), F, 0.0, Z.data(), n_out);
  Z.rowwise() += bias.transpose();
  const double inv_n = 1.0 / static_cast<double>(n_rows);
  double loss = 0;
  // Z becomes dLoss/dZ * n (probabilities minus one-hot) in place.
  for (int64_t r = 0; r < n_rows; ++r) {
    const int64_t y = labels[r];
    if (n_out == 1) {
      const double z = Z(r, 0);
      loss += softplus(z) - (y == 1 ? z : 0.0);
      Z(r, 0) = sigmoid(z) - (y == 1 ? 1.0 : 0.0);
    } else {
      const double zmax = Z.row(r).maxCoeff();
      double sum = 0;
      for (int64_t c = 0; c < n_out; ++c) sum += std::exp(Z(r, c) - zmax);
      loss += zmax + std::log(sum) - Z(r, y);
      for (int64_t c = 0; c < n_out; ++c) Z(r, c) = std::exp(Z(r, c) - zmax) / sum - (c == y ? 1.0 : 0.0);
    }
  }
  // ||W||^2 summed in index order: Eigen's reduction over a Map peels elements up to the first aligned
  // address, so its summation order (and last bits) would follow where the heap put `params`.
  double w2 = 0;
  for (int64_t i = 0; i < n_out * F; ++i)
    w2 += params[static_cast<size_t>(i)] * params[static_cast<size_t>(i)];
  loss = loss * inv_n + 0.5 * l2 * w2;
  if (grad != nullptr) {
    grad->assign(params.size(), 0.0);
    Eigen::Map<RowMatrix> gW(grad->data(), n_out, F);
    Eigen::Map<Eigen::VectorXd> gb(grad->data() + n_out * F, n_out);
    gemm<double>(true, false, n_out, F, n_rows, inv_n, Z.data(), n_out, x, F, 0.0, gW.data(), F);
    gW += l2 * W;
    column_sums<double>(Z.data(), n_rows, n_out, n_out, gb.data(), false);
    gb *= inv_n;
  }
  return loss;
}

std::vector<int64_t> LogisticModel::predict(const double* x, int64_t n_rows) const {
  const int64_t F = n_features;
  std::vector<int64_t> out(static_cast<size_t>(n_rows));
  std::vector<double> xs(static_cast<size_t>(F));
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int64_t j = 0; j < F; ++j) {
      xs[static_cast<size_t>(j)] =
          (x[r * F + j] - mean[static_cast<size_t>(j)]) / scale[static_cast<size_t>(j)];
    }
    int64_t best = 0;
    double best_z = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < n_out(); ++c) {
      double z = bias[static_cast<size_t>(c)];
      for (int64_t j = 0; j < F; ++j)
        z += weights[static_cast<size_t>(c * F + j)] * xs[static_cast<size_t>(j)];
      if (n_out() == 1) {
        best = z > 0 ? 1 : 0;
      } else if (z > best_z) {
        best_z = z;
        best = c;
      }
    }
    out[static_cast<size_t>(r)] = best;
  }
  return out;
}

LogisticModel fit_logistic(const double* x, const int64_t* labels, int64_t n_rows, int64_t n_features,
                           int64_t n_classes, const LogisticOptions& options) {
  if (n_rows < 1 || n_features < 1) throw Error("a probe needs at least one row and one feature");
  check_labels(labels, n_rows, n_classes);
  const int64_t F = n_features;
  LogisticModel m;
  m.n_features = F;
  m.n_classes = n_classes;
  m.mean.assign(static_cast<size_t>(F), 0.0);
  m.scale.assign(static_cast<size_t>(F), 1.0);
  if (options.standardize) {
    for (int64_t j = 0; j < F; ++j) {
      double s = 0;
      for (int64_t r = 0; r < n_rows; ++r) s += x[r * F + j];
      const double mu = s / static_cast<double>(n_rows);
      double ss = 0;
      for (int64_t r = 0; r < n_rows; ++r) ss += (x[r * F + j] - mu) * (x[r * F + j] - mu);
      const double sd = std::sqrt(ss / static_cast<double>(n_rows));
      m.mean[static_cast<size_t>(j)] = mu;
      m.scale[static_cast<size_t>(j)] = sd > 0 ? sd : 1.0;
    }
  }
  std::vector<double> xs(static_cast<size_t>(n_rows * F));
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int64_t j = 0; j < F; ++j) {
      xs[static_cast<size_t>(r * F + j)] =
          (x[r * F + j] - m.mean[static_cast<size_t>(j)]) / m.scale[static_cast<size_t>(j)];
    }
  }
  const int64_t n_params = m.n_out() * (F + 1);
  std::vector<double> params(static_cast<size_t>(n_params), 0.0), grad;
  // Best point seen, so that a line search giving up at the limit of double precision keeps a valid optimum.
  std::vector<double> best = params;
  double best_f = std::numeric_limits<double>::infinity();
  auto objective = [&](const Eigen::VectorXd& p, Eigen::VectorXd& g) {
    std::copy(p.data(), p.data() + n_params, params.begin());
    const double f = logistic_objective(xs.data(), labels, n_rows, F, n_classes, options.l2, params, &grad);
    std::copy(grad.begin(), grad.end(), g.data());
    if (f < best_f) {
      best_f = f;
      best = params;
    }
    return f;
  };
  LBFGSpp::LBFGSParam<double> param;
  param.epsilon = options.epsilon;
  param.epsilon_rel = options.epsilon;
  param.max_iterations = options.max_iter;
  param.max_linesearch = 100;
  LBFGSpp::LBFGSSolver<double> solver(param);
  Eigen::VectorXd p = Eigen::VectorXd::Zero(n_params);
  double fx = 0;
  try {
    m.iterations = solver.minimize(objective, p, fx);
  } catch (const std::exception&) {
    m.iterations = options.max_iter;  // line search failed: keep the best point evaluated
  }
  m.weights.assign(best.begin(), best.begin() + m.n_out() * F);
  m.bias.assign(best.begin() + m.n_out() * F, best.end());
  m.objective = logistic_objective(xs.data(), labels, n_rows, F, n_classes, options.l2, best, &grad);
  double g2 = 0, p2 = 0;
  for (size_t i = 0; i < grad.size(); ++i) {
    g2 += grad[i] * grad[i];
    p2 += best[i] * best[i];
  }
  m.converged = std::sqrt(g2) <= 10 * options.epsilon * std::max(1.0, std::sqrt(p2));
  return m;
}

double classification_accuracy(const std::vector<int64_t>& predicted, const int64_t* labels, int64_t n_rows) {
  if (n_rows == 0) return std::numeric_limits<double>::quiet_NaN();
  int64_t hits = 0;
  for (int64_t r = 0; r < n_rows; ++r) hits += predicted[static_cast<size_t>(r)] == labels[r] ? 1 : 0;
  return static_cast<double>(hits) / static_cast<double>(n_rows);
}

std::vector<double> class_separation_scores(const float* features, int64_t n_rows, int64_t n_cols,
                                            const int64_t* labels, int64_t n_classes) {
  check_labels(labels, n_rows, n_classes);
  const auto C = static_cast<size_t>(n_classes);
  std::vector<int64_t> counts(C, 0);
  for (int64_t r = 0; r < n_rows; ++r) ++counts[static_cast<size_t>(labels[r])];
  std::vector<double> scores(static_cast<size_t>(n_cols), 0.0);
  std::vector<double> class_sum(C);
  for (int64_t j = 0; j < n_cols; ++j) {
    std::fill(class_sum.begin(), class_sum.end(), 0.0);
    double total = 0;
    for (int64_t r = 0; r < n_rows; ++r) {
      const auto v = static_cast<double>(features[r * n_cols + j]);
      class_sum[static_cast<size_t>(labels[r])] += v;
      total += v;
    }
    const double mu = total / static_cast<double>(n_rows);
    double ss_total = 0;
    for (int64_t r = 0; r < n_rows; ++r) {
      const double d = static_cast<double>(features[r * n_cols + j]) - mu;
      ss_total += d * d;
    }
    double ss_between = 0;
    for (size_t c = 0; c < C; ++c) {
      if (counts[c] == 0) continue;
      const double d = class_sum[c] / static_cast<double>(counts[c]) - mu;
      ss_between += static_cast<double>(counts[c]) * d * d;
    }
    scores[static_cast<size_t>(j)] = ss_total > 0 ? std::min(1.0, ss_between / ss_total) : 0.0;
  }
  return scores;
}

std::vector<int64_t> top_k_indices(const std::vector<double>& scores, int64_t k) {
  std::vector<int64_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  const auto n = std::min<int64_t>(k, static_cast<int64_t>(idx.size()));
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](int64_t i, int64_t j) {
    const double si = scores[static_cast<size_t>(i)], sj = scores[static_cast<size_t>(j)];
    return si != sj ? si > sj : i < j;
  });
  idx.resize(static_cast<size_t>(n));
  return idx;
}

std::vector<ProbeLabel> modular_probe_labels(const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                                             const std::vector<int64_t>& c, int64_t modulus) {
  if (a.size() != b.size() || a.size() != c.size()) throw Error("a, b and c differ in length");
  std::vector<ProbeLabel> labels = {
      {"a", modulus, a}, {"b", modulus, b}, {"c", modulus, c}, {"c_mod_2", 2, {}}, {"c_mod_3", 3, {}}};
  for (const int64_t v : c) {
    labels[3].values.push_back(v % 2);
    labels[4].values.push_back(v % 3);
  }
  return labels;
}

nlohmann::json sparse_probing(const float* latents, int64_t n_rows, int64_t d_sae,
                              const std::vector<ProbeLabel>& labels, const std::vector<int64_t>& is_train,
                              const SparseProbingOptions& options) {
  const Split split = split_rows(is_train, n_rows);
  const std::vector<double> train_latents_d = gather(latents, d_sae, split.train, {});
  std::vector<float> train_latents(train_latents_d.begin(), train_latents_d.end());
  nlohmann::json out = nlohmann::json::object();
  for (const ProbeLabel& label : labels) {
    const std::vector<int64_t> y_train = pick(label.values, split.train);
    const std::vector<int64_t> y_test = pick(label.values, split.test);
    const std::vector<double> scores =
        class_separation_scores(train_latents.data(), static_cast<int64_t>(split.train.size()), d_sae,
                                y_train.data(), label.n_classes);
    int64_t k_max = 0;
    for (const int64_t k : options.k_values) k_max = std::max(k_max, k);
    const std::vector<int64_t> ranked = top_k_indices(scores, k_max);
    nlohmann::json j = {{"n_classes", label.n_classes},
                        {"chance_accuracy", chance_accuracy(y_train, y_test, label.n_classes)},
                        {"top_latents", ranked}};
    nlohmann::json top_scores = nlohmann::json::array();
    for (const int64_t i : ranked) top_scores.push_back(scores[static_cast<size_t>(i)]);
    j["top_scores"] = top_scores;
    nlohmann::json by_k = nlohmann::json::object();
    for (const int64_t k : options.k_values) {
      const std::vector<int64_t> cols(ranked.begin(), ranked.begin() + std::min<int64_t>(k, d_sae));
      by_k[std::to_string(k)] = fit_and_score(latents, d_sae, cols, split, label, options.logistic);
    }
    j["top_k"] = by_k;
    out[label.name] = j;
  }
  return out;
}

nlohmann::json full_activation_probing(const float* x, int64_t n_rows, int64_t d_in,
                                       const std::vector<ProbeLabel>& labels,
                                       const std::vector<int64_t>& is_train, const LogisticOptions& options) {
  const Split split = split_rows(is_train, n_rows);
  nlohmann::json out = nlohmann::json::object();
  for (const ProbeLabel& label : labels) {
    nlohmann::json j = fit_and_score(x, d_in, {}, split, label, options);
    j["chance_accuracy"] =
        chance_accuracy(pick(label.values, split.train), pick(label.values, split.test), label.n_classes);
    j["n_classes"] = label.n_classes;
    out[label.name] = j;
  }
  return out;
}

}  // namespace husai
