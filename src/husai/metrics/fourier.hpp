#pragma once

// Fourier ground truth for modular addition (Nanda et al. 2023, "Progress measures for grokking"): a network
// that has learned c = (a + b) mod p represents its operands and answer through cos/sin(2 pi f x / p) at a
// few "key" frequencies f. This file finds those frequencies, the subspace of the activation space they
// occupy, and how much of that subspace an SAE's decoder rows recover. docs/experiments.md (benchmark-slice)
// has the definitions with their rationale; in short:
//
// Frequencies f = 1 .. (p - 1) / 2. Over the tokens t = 0 .. p-1, cos_f(t) = cos(2 pi f t / p) and sin_f(t)
// likewise, each scaled to unit norm.
//   embedding power  P(f) = sum_d <cos_f, W_E[:, d]>^2 + <sin_f, W_E[:, d]>^2   (W_E rows 0..p-1 = digits)
//   key frequencies  the n_key frequencies of largest P(f) (ties: lower f).
//
// Key-frequency subspace of activations x [N, D] (one row per pair, with its a, b and c): least squares of
// the centred rows on the design Phi = [cos_f(a), sin_f(a), cos_f(b), sin_f(b), cos_f(c), sin_f(c)] for every
// key f (plus an intercept); X_F = Phi B is the key-frequency component of the activations and
//   Sigma_F = X_F^T X_F / N  (D x D),   S = range(Sigma_F) (eigenvalues above 1e-9 of the largest)
// Its rank is at most 6 n_key. fourier_fraction = tr(Sigma_F) / tr(Cov(x)): how much of the activations'
// variance the key frequencies explain.
//
// Recovery by a dictionary (decoder rows d_i, unit-normalised; zero rows ignored):
//   alignment_i                 = ||P_S d_i||  (cos of the angle between d_i and S), random: sqrt(r / D)
//   variance_recovered(m)       = tr(P_Q Sigma_F) / tr(Sigma_F), Q = span of the m rows of largest alignment
//                                 (ties: lower index); 1 = the subspace's variance lies in the span of m
//                                 features. A random m-dimensional subspace gives m / D in expectation.
//   mean_top_alignment(m)       = mean alignment of those m rows
// Only quantities invariant to the choice of basis inside S are reported: cos/sin pairs have equal variance
// by symmetry, so Sigma_F's eigenvectors are not unique and "the best feature per principal direction"
// would depend on an arbitrary rotation.
// Per key frequency the same numbers for that frequency's own component (its 6 columns of Phi).

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace husai {

// P(f) for f = 1 .. (p - 1) / 2 (index f - 1) of the digit embedding rows W_E [p, d_model] (row-major).
std::vector<double> embedding_frequency_power(const float* w_e_digits, int64_t modulus, int64_t d_model);

// The n_key frequencies (1-based) of largest power, in decreasing power order (ties: lower frequency).
std::vector<int64_t> key_frequencies(const std::vector<double>& power, int64_t n_key);

// A component's covariance and its range.
struct FourierComponent {
  int64_t frequency = 0;            // 0 for the union of all key frequencies
  int64_t rank = 0;                 // dimension of the range
  std::vector<double> eigenvalues;  // [rank], decreasing
  std::vector<double> basis;        // [rank, D] orthonormal rows (the eigenvectors)
  double variance = 0;              // tr(Sigma) = sum of the eigenvalues
};

struct FourierSubspace {
  int64_t modulus = 0;
  int64_t d_in = 0;
  std::vector<int64_t> frequencies;             // the key frequencies used
  FourierComponent all;                         // every key frequency together
  std::vector<FourierComponent> per_frequency;  // in the order of `frequencies`
  double total_variance = 0;                    // tr(Cov(x))
  double fourier_fraction() const { return total_variance > 0 ? all.variance / total_variance : 0.0; }
};

// The key-frequency subspace of x [n_rows, d_in] whose row r has operands a[r], b[r] and answer c[r] (all in
// [0, p)). Needs n_rows > 6 * |frequencies| + 1.
FourierSubspace fourier_subspace(const float* x, int64_t n_rows, int64_t d_in, const std::vector<int64_t>& a,
                                 const std::vector<int64_t>& b, const std::vector<int64_t>& c,
                                 int64_t modulus, const std::vector<int64_t>& frequencies);

struct FourierRecovery {
  double variance_recovered = 0;  // at m
  int64_t m = 0;
  double random_baseline = 0;     // m / D
  double mean_top_alignment = 0;  // mean alignment of the m chosen rows
  std::vector<int64_t> top_features;
};

// Recovery of one component by decoder rows w_dec [d_sae, d_in]; m <= 0 means m = the component's rank.
FourierRecovery fourier_recovery(const FourierComponent& component, int64_t d_in, const float* w_dec,
                                 int64_t d_sae, int64_t m);

// Every number of this file for one SAE decoder: the union at each m of m_values (0 = rank) and each key
// frequency at m = its rank, as JSON (docs/formats.md, benchmark-slice results).
nlohmann::json fourier_recovery_json(const FourierSubspace& subspace, const float* w_dec, int64_t d_sae,
                                     const std::vector<int64_t>& m_values);

// The subspace's description (frequencies, ranks, variances, fraction) as JSON.
nlohmann::json fourier_subspace_json(const FourierSubspace& subspace, const std::vector<double>& power);

}  // namespace husai
