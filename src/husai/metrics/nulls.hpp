#pragma once

// Null dictionaries for stability: what similarity would SAEs show by chance? (REFERENCE.md section 5: the
// reference had one, mislabelled, null.) Each null dictionary has the shape of a trained SAE (d_sae features
// in R^d_in) and is drawn from its own seed; husai compare uses null seeds 1000, 1001, ... (CONTRACTS.md).
//
//   gaussian    isotropic Gaussian features, N(0, I): the reference's "random baseline".
//   untrained   the SAE architecture's initialisation (init_sae_params in sae/sae.hpp, exactly what
//               `husai train-sae --seeds S` starts from), never trained.
//   covariance  features drawn from N(0, Sigma), Sigma the covariance of the activations: chance alignment
//               for vectors that live where the data lives.
//
// Geometry-matched nulls (issue 11): the three above differ from a trained dictionary in how its atoms spread
// over the activation space (a covariance null's atoms crowd into the top principal directions, and
// concentrated random atoms find a good best match among many candidates by chance alone). These keep the
// trained dictionary's own geometry and remove only what training on the data could have made reproducible:
//   second_moment    atoms drawn from N(0, M), M = W^T W / d_sae the second-moment matrix of ONE trained
//                    dictionary W (rows unit-normalised first): the same spread over directions (the same
//                    participation ratio and energy per principal axis of W, in expectation) but no atom
//                    placed anywhere in particular. Controls for "similar because both dictionaries crowd
//                    into the same subspace with the same anisotropy".
//   axis_reflection  W' = W R, R = V diag(s) V^T with V the principal axes of the activations and s_k = +-1
//                    fair coins: a reflection along a random subset of principal axes. Keeps W's Gram matrix
//                    W W^T (the internal geometry: norms, angles between atoms, duplicates) and its energy
//                    per principal axis, sum_i (w_i . v_k)^2, exactly; only the sign of each atom's component
//                    along each flipped axis changes. Controls for "similar because atoms are spread over the
//                    data's principal axes in the same proportions". (Which null is the most conservative,
//                    i.e. gives the highest chance similarity, is an empirical matter that husai compare
//                    reports; no ordering is assumed here.)
//   rotation         W' = W Q with Q Haar-random orthogonal: keeps the Gram matrix but not the relation to
//   the
//                    data's axes. Controls for the dictionary's internal geometry alone.
// For axis_reflection and rotation, the dictionary transformed is a trained one of the *same* family (the
// caller picks which); compare its transform to the other trained dictionaries.
// The within-dictionary nearest-neighbour |cos| (stability.hpp) is the reference line beside them: how alike
// a dictionary's atoms are to each other.
// Every null has decoder rows that are unit vectors, and its encoder is the transpose of its decoder (as SAE
// initialisation sets W_enc = W_dec^T), so a null's encoder features equal its decoder features.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "husai/sae/saelens_io.hpp"

namespace husai {

enum class NullKind { Gaussian, Untrained, Covariance, SecondMoment, AxisReflection, Rotation };

// "gaussian", "untrained", "covariance", "second_moment", "axis_reflection", "rotation"
std::string_view null_kind_name(NullKind kind);
NullKind parse_null_kind(
    std::string_view name);  // throws husai::Error (listing every name) on an unknown one

// W_dec [d_sae, d_in] with unit rows drawn from N(0, I) by Philox(seed, stream_id("null.gaussian")).
std::vector<float> gaussian_null_decoder(int64_t d_sae, int64_t d_in, uint64_t seed);

// The untrained SAE with `like`'s architecture and shape, initialised with `seed` (b_dec copied from `like`;
// it does not affect the features).
SaeModel untrained_null_sae(const SaeModel& like, uint64_t seed);

// Draws from N(0, Sigma) of a set of activation rows. Sigma is the sample covariance (rows centred, divided
// by n_rows - 1) in double; draws are z = V diag(sqrt(max(lambda, 0))) g with Sigma = V diag(lambda) V^T and
// g ~ N(0, I) from Philox(seed, stream_id("null.covariance")), so a singular Sigma is fine.
class CovarianceNull {
 public:
  // x: [n_rows, d_in] row-major. Throws husai::Error for fewer than 2 rows or zero variance.
  CovarianceNull(const float* x, int64_t n_rows, int64_t d_in);
  // The same from rows read block_rows at a time (two passes: the mean, then the centred products summed
  // block by block), for rows larger than memory. read(first, count, x) fills rows [first, first + count).
  // The mean equals the in-memory one bit for bit; Sigma can differ in the last bits (the products are
  // summed in blocks).
  CovarianceNull(const std::function<void(int64_t, int64_t, float*)>& read, int64_t n_rows, int64_t d_in,
                 int64_t block_rows);

  int64_t d_in() const { return d_in_; }
  // W_dec [d_sae, d_in], unit rows.
  std::vector<float> decoder(int64_t d_sae, uint64_t seed) const;
  // The sample covariance (for tests) and mean.
  const Eigen::MatrixXd& covariance() const { return sigma_; }
  const std::vector<double>& mean() const { return mean_; }
  // V diag(sqrt(lambda)), [d_in, d_in]: a draw from N(mean, Sigma) is mean + factor * g, g ~ N(0, I).
  const Eigen::MatrixXd& factor() const { return factor_; }
  // Its eigenvalues in decreasing order [d_in], and the principal axes V [d_in, d_in], column k the unit
  // eigenvector of eigenvalue k (the sign of a column is the solver's; nothing here depends on it).
  const Eigen::VectorXd& eigenvalues() const { return eigenvalues_; }
  const Eigen::MatrixXd& principal_axes() const { return axes_; }

  // The axis_reflection null of a dictionary W_dec [d_sae, d_in] (rows unit-normalised first): W' = W R with
  // R = V diag(s) V^T, s = reflection_signs(d_in, seed) assigned to the principal axes in decreasing
  // eigenvalue order; R is formed and applied in double, and the rows of W' are unit-normalised (they are
  // unit up to rounding). Where eigenvalues are repeated (a rank-deficient covariance), the axes inside that
  // eigenspace are the solver's choice: W' is still a reflection that keeps the Gram matrix and the energy on
  // each returned axis, but another solver could pick other axes there.
  std::vector<float> reflect(const float* W_dec, int64_t d_sae, uint64_t seed) const;

 private:
  void decompose(Eigen::MatrixXd sigma);  // sets sigma_, factor_, eigenvalues_, axes_

  int64_t d_in_ = 0;
  Eigen::MatrixXd sigma_;
  std::vector<double> mean_;
  Eigen::MatrixXd factor_;       // V diag(sqrt(lambda)), [d_in, d_in] (solver order: increasing eigenvalues)
  Eigen::VectorXd eigenvalues_;  // decreasing
  Eigen::MatrixXd axes_;         // columns in decreasing eigenvalue order
};

// The axis_reflection coins: s_k = -1 when Philox(seed, stream_id("null.axis_reflection")).below(k, 2) is 1,
// else +1, for k = 0 .. d_in - 1 (k = 0 is the top principal axis).
std::vector<int> reflection_signs(int64_t d_in, uint64_t seed);

// The second_moment null of one trained dictionary. M = W^T W / d_sae with W's rows unit-normalised (as
// FeatureSet rows are), in double; draws z = M^{1/2} g with M^{1/2} = V diag(sqrt(max(lambda, 0))) V^T the
// symmetric square root (unique, so the draws do not depend on the eigensolver's choice of eigenvector signs
// or of a basis inside a repeated eigenvalue) and g ~ N(0, I) from Philox(seed,
// stream_id("null.second_moment")), element (i, k) of the draw matrix at index i * d_in + k. E[z z^T] = M, so
// the atoms have W's spread over directions; each drawn atom is then unit-normalised.
class SecondMomentNull {
 public:
  // W_dec: [d_sae, d_in] row-major. Throws husai::Error for an empty dictionary, non-finite entries or one
  // whose rows are all zero.
  SecondMomentNull(const float* W_dec, int64_t d_sae, int64_t d_in);

  int64_t d_in() const { return d_in_; }
  // [n_atoms, d_in], unit rows.
  std::vector<float> decoder(int64_t n_atoms, uint64_t seed) const;
  // M = W^T W / d_sae and its symmetric square root (for tests).
  const Eigen::MatrixXd& second_moment() const { return moment_; }
  const Eigen::MatrixXd& root() const { return root_; }

 private:
  int64_t d_in_ = 0;
  Eigen::MatrixXd moment_;
  Eigen::MatrixXd root_;
};

// Convenience: SecondMomentNull(W_dec, d_sae, d_in).decoder(d_sae, seed).
std::vector<float> second_moment_null_decoder(const float* W_dec, int64_t d_sae, int64_t d_in, uint64_t seed);

// A Haar-random orthogonal matrix Q [d, d] (row-major, double): G [d, d] with G(i, j) =
// Philox(seed, stream_id("null.rotation")).normal(i * d + j), G = QR by Householder QR, then each column j of
// Q multiplied by sign(R(j, j)) (sign 0 counts as +1). Without that correction Q is not Haar-distributed
// (Mezzadri 2007, "How to generate random matrices from the classical compact groups"); with it the
// factorisation is unique, so any QR routine gives the same Q up to rounding.
std::vector<double> haar_orthogonal(int64_t d, uint64_t seed);

// The rotation null of a dictionary W_dec [d_sae, d_in] (rows unit-normalised first): W' = W Q,
// Q = haar_orthogonal(d_in, seed), in double; rows of W' unit-normalised.
std::vector<float> rotation_null_decoder(const float* W_dec, int64_t d_sae, int64_t d_in, uint64_t seed);

// An SaeModel holding a null decoder (and its transpose as the encoder) of shape `like`, for code that takes
// SAEs: architecture and biases copied from `like`.
SaeModel null_sae_from_decoder(const SaeModel& like, std::vector<float> W_dec);

}  // namespace husai
