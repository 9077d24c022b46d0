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
// Every null has decoder rows that are unit vectors, and its encoder is the transpose of its decoder (as SAE
// initialisation sets W_enc = W_dec^T), so a null's encoder features equal its decoder features.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "husai/sae/saelens_io.hpp"

namespace husai {

enum class NullKind { Gaussian, Untrained, Covariance };

std::string_view null_kind_name(NullKind kind);   // "gaussian", "untrained", "covariance"
NullKind parse_null_kind(std::string_view name);  // throws husai::Error on an unknown name

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

  int64_t d_in() const { return d_in_; }
  // W_dec [d_sae, d_in], unit rows.
  std::vector<float> decoder(int64_t d_sae, uint64_t seed) const;
  // The sample covariance (for tests).
  const Eigen::MatrixXd& covariance() const { return sigma_; }

 private:
  int64_t d_in_ = 0;
  Eigen::MatrixXd sigma_;
  Eigen::MatrixXd factor_;  // V diag(sqrt(lambda)), [d_in, d_in]
};

// An SaeModel holding a null decoder (and its transpose as the encoder) of shape `like`, for code that takes
// SAEs: architecture and biases copied from `like`.
SaeModel null_sae_from_decoder(const SaeModel& like, std::vector<float> W_dec);

}  // namespace husai
