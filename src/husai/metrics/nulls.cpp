// GCC 12's false -W(maybe-)uninitialized inside its AVX-512 intrinsics (see core/gemm.cpp) also surfaces in
// Eigen's matrix-vector kernels used by the symmetric eigensolver here.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "husai/metrics/nulls.hpp"

#include <Eigen/Eigenvalues>
#include <cmath>
#include <string>

#include "husai/core/error.hpp"
#include "husai/core/gemm.hpp"
#include "husai/core/rng.hpp"
#include "husai/core/tensor.hpp"
#include "husai/core/threading.hpp"
#include "husai/sae/sae.hpp"

namespace husai {

namespace {

// Unit-normalises each row of w [n, d] in double (a zero row, probability 0, stays zero).
void normalise_rows_inplace(std::vector<double>& w, int64_t n, int64_t d, std::vector<float>& out) {
  out.resize(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i) {
    double norm2 = 0;
    for (int64_t k = 0; k < d; ++k)
      norm2 += w[static_cast<size_t>(i * d + k)] * w[static_cast<size_t>(i * d + k)];
    const double inv = norm2 > 0 ? 1.0 / std::sqrt(norm2) : 0.0;
    for (int64_t k = 0; k < d; ++k) {
      out[static_cast<size_t>(i * d + k)] = static_cast<float>(w[static_cast<size_t>(i * d + k)] * inv);
    }
  }
}

SaeArch training_arch_of(const SaeModel& sae) {
  const nlohmann::json& cfg = sae.cfg;
  if (cfg.is_object() && cfg.contains("metadata") && cfg["metadata"].is_object() &&
      cfg["metadata"].contains("training_architecture") &&
      cfg["metadata"]["training_architecture"].is_string()) {
    try {
      return parse_sae_arch(cfg["metadata"]["training_architecture"].get<std::string>());
    } catch (const Error&) {
      // not one of husai's names: fall back to the inference architecture
    }
  }
  if (sae.architecture == "topk") return SaeArch::TopK;
  if (sae.architecture == "jumprelu") return SaeArch::JumpReLU;
  return SaeArch::ReLU;  // standard and gated: the same initialisation of W_dec / W_enc
}

}  // namespace

std::string_view null_kind_name(NullKind kind) {
  switch (kind) {
    case NullKind::Gaussian:
      return "gaussian";
    case NullKind::Untrained:
      return "untrained";
    case NullKind::Covariance:
      return "covariance";
  }
  return "unknown";
}

NullKind parse_null_kind(std::string_view name) {
  if (name == "gaussian") return NullKind::Gaussian;
  if (name == "untrained") return NullKind::Untrained;
  if (name == "covariance") return NullKind::Covariance;
  throw Error("unknown null '" + std::string(name) + "' (expected gaussian, untrained or covariance)");
}

std::vector<float> gaussian_null_decoder(int64_t d_sae, int64_t d_in, uint64_t seed) {
  const Philox rng(seed, stream_id("null.gaussian"));
  std::vector<double> w(static_cast<size_t>(d_sae * d_in));
  for (size_t k = 0; k < w.size(); ++k) w[k] = rng.normal(k);
  std::vector<float> out;
  normalise_rows_inplace(w, d_sae, d_in, out);
  return out;
}

SaeModel untrained_null_sae(const SaeModel& like, uint64_t seed) {
  SaeConfig cfg;
  cfg.arch = training_arch_of(like);
  cfg.d_in = like.d_in;
  cfg.d_sae = like.d_sae;
  const SaeLayout layout = make_sae_layout(cfg);
  std::vector<float> params(static_cast<size_t>(layout.total));
  const std::vector<float> b_dec =
      like.b_dec.size() == static_cast<size_t>(like.d_in) ? like.b_dec : std::vector<float>(like.d_in, 0.0f);
  init_sae_params(cfg, layout, params.data(), seed, b_dec);
  SaeModel sae = like;
  sae.cfg = nlohmann::json::object();
  sae.source_format = "";
  sae.W_enc.assign(params.begin() + layout.W_enc, params.begin() + layout.W_enc + like.d_in * like.d_sae);
  sae.W_dec.assign(params.begin() + layout.W_dec, params.begin() + layout.W_dec + like.d_in * like.d_sae);
  sae.b_enc.assign(params.begin() + layout.b_enc, params.begin() + layout.b_enc + like.d_sae);
  sae.b_dec = b_dec;
  if (layout.n_log_threshold > 0 && sae.architecture == "jumprelu") {
    sae.threshold.assign(static_cast<size_t>(like.d_sae), static_cast<float>(cfg.init_threshold));
  }
  return sae;
}

CovarianceNull::CovarianceNull(const float* x, int64_t n_rows, int64_t d_in) : d_in_(d_in) {
  if (n_rows < 2) throw Error("the covariance null needs at least 2 activation rows");
  const int64_t D = d_in;
  std::vector<double> mean(static_cast<size_t>(D), 0.0);
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int64_t d = 0; d < D; ++d) mean[static_cast<size_t>(d)] += static_cast<double>(x[r * D + d]);
  }
  for (double& m : mean) m /= static_cast<double>(n_rows);
  std::vector<double> xc(static_cast<size_t>(n_rows * D));
  parallel_chunks(n_rows, 1024, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t d = 0; d < D; ++d) {
        xc[static_cast<size_t>(r * D + d)] = static_cast<double>(x[r * D + d]) - mean[static_cast<size_t>(d)];
      }
    }
  });
  MatrixR<double> sigma(D, D);
  gemm<double>(true, false, D, D, n_rows, 1.0 / static_cast<double>(n_rows - 1), xc.data(), D, xc.data(), D,
               0.0, sigma.data(), D);
  sigma = 0.5 * (sigma + sigma.transpose()).eval();  // exactly symmetric for the eigensolver
  sigma_ = sigma;
  if (!(sigma_.trace() > 0)) throw Error("the activations have zero variance: no covariance null");
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(sigma_);
  if (eig.info() != Eigen::Success) throw Error("eigendecomposition of the activation covariance failed");
  const Eigen::VectorXd root = eig.eigenvalues().cwiseMax(0.0).cwiseSqrt();
  factor_ = eig.eigenvectors() * root.asDiagonal();
}

std::vector<float> CovarianceNull::decoder(int64_t d_sae, uint64_t seed) const {
  const int64_t D = d_in_;
  const Philox rng(seed, stream_id("null.covariance"));
  std::vector<double> w(static_cast<size_t>(d_sae * D));
  std::vector<double> g(static_cast<size_t>(D));
  for (int64_t i = 0; i < d_sae; ++i) {
    for (int64_t k = 0; k < D; ++k) g[static_cast<size_t>(k)] = rng.normal(static_cast<uint64_t>(i * D + k));
    for (int64_t r = 0; r < D; ++r) {
      double z = 0;
      for (int64_t k = 0; k < D; ++k) z += factor_(r, k) * g[static_cast<size_t>(k)];
      w[static_cast<size_t>(i * D + r)] = z;
    }
  }
  std::vector<float> out;
  normalise_rows_inplace(w, d_sae, D, out);
  return out;
}

SaeModel null_sae_from_decoder(const SaeModel& like, std::vector<float> W_dec) {
  if (W_dec.size() != static_cast<size_t>(like.d_sae * like.d_in))
    throw Error("null decoder has the wrong size");
  SaeModel sae = like;
  sae.cfg = nlohmann::json::object();
  sae.source_format = "";
  sae.W_enc.assign(W_dec.size(), 0.0f);
  for (int64_t i = 0; i < like.d_sae; ++i) {
    for (int64_t d = 0; d < like.d_in; ++d) {
      sae.W_enc[static_cast<size_t>(d * like.d_sae + i)] = W_dec[static_cast<size_t>(i * like.d_in + d)];
    }
  }
  sae.W_dec = std::move(W_dec);
  sae.b_enc.assign(static_cast<size_t>(like.d_sae), 0.0f);
  return sae;
}

}  // namespace husai
