#include "husai/metrics/surrogate.hpp"

#include "husai/core/rng.hpp"
#include "husai/core/threading.hpp"

namespace husai {

std::vector<float> gaussian_surrogate_rows(const CovarianceNull& moments, int64_t n_rows, uint64_t seed) {
  const int64_t D = moments.d_in();
  const Philox rng(seed, stream_id("surrogate.gaussian"));
  const Eigen::MatrixXd& factor = moments.factor();
  const std::vector<double>& mean = moments.mean();
  std::vector<float> out(static_cast<size_t>(n_rows * D));
  // Each row is computed alone, in index order within the row: no dependence on the chunking.
  parallel_chunks(n_rows, 256, [&](int64_t r0, int64_t r1) {
    std::vector<double> g(static_cast<size_t>(D));
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t k = 0; k < D; ++k)
        g[static_cast<size_t>(k)] = rng.normal(static_cast<uint64_t>(r * D + k));
      for (int64_t d = 0; d < D; ++d) {
        double z = mean[static_cast<size_t>(d)];
        for (int64_t k = 0; k < D; ++k) z += factor(d, k) * g[static_cast<size_t>(k)];
        out[static_cast<size_t>(r * D + d)] = static_cast<float>(z);
      }
    }
  });
  return out;
}

}  // namespace husai
