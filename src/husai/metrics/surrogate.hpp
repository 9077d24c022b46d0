#pragma once

// Surrogate data for the surrogate-data control of a stability study (docs/statistics.md): activations
// without any structure beyond their first two moments. An SAE family trained on the real activations that
// is no more reproducible across seeds than the same family trained on such surrogate data (same rows, same
// steps, same seeds) gives no evidence that its reproducible features reflect the *data*: the method alone,
// applied to a Gaussian with the same mean and covariance, produces them.

#include <cstdint>
#include <vector>

#include "husai/metrics/nulls.hpp"

namespace husai {

// n_rows draws from N(mean, Sigma) of the activations behind `moments` (CovarianceNull: sample mean and
// covariance in double), [n_rows, d_in] row-major float. Row r, column k uses Philox(seed,
// stream_id("surrogate.gaussian")) normal draw r * d_in + k, so the result is a pure function of the inputs
// and the seed, whatever the thread count.
std::vector<float> gaussian_surrogate_rows(const CovarianceNull& moments, int64_t n_rows, uint64_t seed);

}  // namespace husai
