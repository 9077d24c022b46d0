#pragma once

// Sparse probing (SAEBench's `sparse_probing`, adapted to the modular-addition task): how much of a label
// can a linear classifier read from the k SAE latents most related to it, against one that reads the whole
// activation vector?
//
// Probe: L2-regularised logistic regression on standardised features (train-split mean and standard
// deviation; a constant feature keeps scale 1), fitted by L-BFGS (LBFGSpp) from zero weights:
//   binary (2 classes):  minimise  mean_n [softplus(z_n) - y_n z_n] + (l2 / 2) ||w||^2,  z = w.x + b
//   C > 2 classes:       minimise  mean_n [-log softmax(W x_n + b)_{y_n}] + (l2 / 2) ||W||_F^2
// (multinomial, not one-vs-rest); biases are not penalised. The objective is strictly convex in the weights,
// so the optimum is unique; with sklearn's C it is the same objective at l2 = 1 / (C * n_train). Everything
// runs in double on one thread in a fixed order: results do not depend on the thread count.
//
// Latent selection (per label, on the training split only): the class-separation score
//   eta^2_i = sum_c n_c (mean_c(f_i) - mean(f_i))^2 / sum_n (f_ni - mean(f_i))^2
// (between-class over total sum of squares; 0 for a latent constant on the split). For two classes it is
// the squared point-biserial correlation, a scale-free form of SAEBench's mean-difference ranking. The top-k
// latents by score (ties to the lower latent index) feed the probe.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace husai {

struct LogisticOptions {
  double l2 = 1e-4;       // weight of (1/2)||W||^2 next to the mean cross-entropy
  int max_iter = 1000;    // L-BFGS iterations
  double epsilon = 1e-7;  // stop when ||grad|| < epsilon * max(1, ||params||)
  bool standardize = true;
};

struct LogisticModel {
  int64_t n_features = 0;
  int64_t n_classes = 0;            // 2: one sigmoid output; > 2: softmax over n_classes outputs
  std::vector<double> weights;      // [n_out, n_features] in standardised units (n_out = 1 if binary)
  std::vector<double> bias;         // [n_out]
  std::vector<double> mean, scale;  // [n_features]: feature standardisation from the training rows
  int iterations = 0;
  bool converged = false;
  double objective = 0;  // final regularised training objective

  int64_t n_out() const { return n_classes == 2 ? 1 : n_classes; }
  // Predicted class of each row of x [n_rows, n_features] (arg-max, lowest class on ties; binary: z > 0).
  std::vector<int64_t> predict(const double* x, int64_t n_rows) const;
};

// The regularised objective above and, when grad is non-null, its gradient, at params = [weights (row-major
// [n_out, n_features]), bias [n_out]] for features x [n_rows, n_features] (already standardised) and labels
// in [0, n_classes). Exposed for the finite-difference test.
double logistic_objective(const double* x, const int64_t* labels, int64_t n_rows, int64_t n_features,
                          int64_t n_classes, double l2, const std::vector<double>& params,
                          std::vector<double>* grad);

// Fits a probe on x [n_rows, n_features] (row-major) with labels in [0, n_classes); n_classes >= 2.
LogisticModel fit_logistic(const double* x, const int64_t* labels, int64_t n_rows, int64_t n_features,
                           int64_t n_classes, const LogisticOptions& options = {});

double classification_accuracy(const std::vector<int64_t>& predicted, const int64_t* labels, int64_t n_rows);

// eta^2 of every column of features [n_rows, n_cols] for labels in [0, n_classes).
std::vector<double> class_separation_scores(const float* features, int64_t n_rows, int64_t n_cols,
                                            const int64_t* labels, int64_t n_classes);

// The k columns with the largest score, in decreasing score order (ties: lower index first).
std::vector<int64_t> top_k_indices(const std::vector<double>& scores, int64_t k);

// A label the modular-addition task defines, for every pair (row = a * p + b).
struct ProbeLabel {
  std::string name;  // "a", "b", "c", "c_mod_2", "c_mod_3"
  int64_t n_classes = 0;
  std::vector<int64_t> values;  // [n_rows]
};
// The labels a, b, c = (a + b) mod p, c mod 2, c mod 3 from the per-row operands (c is given, so a task with
// another operation works too).
std::vector<ProbeLabel> modular_probe_labels(const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                                             const std::vector<int64_t>& c, int64_t modulus);

struct SparseProbingOptions {
  std::vector<int64_t> k_values = {1, 2, 5};
  LogisticOptions logistic;
};

// Per label: the top-k latents (chosen on the training rows), test accuracy of the probe on them for each k,
// and the chance level (majority class of the training rows, scored on the test rows). `latents` [n_rows,
// d_sae] are the SAE's latents of every row; is_train [n_rows] splits rows (1 = train, 0 = test).
nlohmann::json sparse_probing(const float* latents, int64_t n_rows, int64_t d_sae,
                              const std::vector<ProbeLabel>& labels, const std::vector<int64_t>& is_train,
                              const SparseProbingOptions& options);

// Per label: test accuracy of a probe on the full activations x [n_rows, d_in] (the reference line for
// sparse_probing).
nlohmann::json full_activation_probing(const float* x, int64_t n_rows, int64_t d_in,
                                       const std::vector<ProbeLabel>& labels,
                                       const std::vector<int64_t>& is_train, const LogisticOptions& options);

}  // namespace husai
