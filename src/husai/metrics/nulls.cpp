// GCC 12's false -W(maybe-)uninitialized inside its AVX-512 intrinsics (see core/gemm.cpp) also surfaces in
// Eigen's matrix-vector kernels used by the symmetric eigensolver here.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "husai/metrics/nulls.hpp"

#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <cmath>
#include <string>

#include "husai/core/error.hpp"
#include "husai/core/gemm.hpp"
#include "husai/core/rng.hpp"
#include "husai/core/tensor.hpp"
#include "husai/core/threading.hpp"
#include "husai/sae/architecture.hpp"
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

// A dictionary's rows in double, each unit-normalised as FeatureSet rows are (a zero row stays zero);
// throws on a non-finite entry.
std::vector<double> unit_rows_double(const float* w, int64_t n, int64_t d, const char* what) {
  std::vector<double> out(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i) {
    double norm2 = 0;
    for (int64_t k = 0; k < d; ++k) {
      const auto v = static_cast<double>(w[i * d + k]);
      if (!std::isfinite(v)) {
        throw Error(std::string(what) + ": atom " + std::to_string(i) + " has a non-finite entry");
      }
      out[static_cast<size_t>(i * d + k)] = v;
      norm2 += v * v;
    }
    const double inv = norm2 > 0 ? 1.0 / std::sqrt(norm2) : 0.0;
    for (int64_t k = 0; k < d; ++k) out[static_cast<size_t>(i * d + k)] *= inv;
  }
  return out;
}

// out = unit rows of (unit rows of W) T, T [d, d] row-major, in double.
std::vector<float> transform_dictionary(const float* W_dec, int64_t d_sae, int64_t d_in, const double* T,
                                        const char* what) {
  if (d_sae < 1 || d_in < 1) throw Error(std::string(what) + ": empty dictionary");
  const std::vector<double> w = unit_rows_double(W_dec, d_sae, d_in, what);
  std::vector<double> t(static_cast<size_t>(d_sae * d_in));
  gemm<double>(false, false, d_sae, d_in, d_in, 1.0, w.data(), d_in, T, d_in, 0.0, t.data(), d_in);
  std::vector<float> out;
  normalise_rows_inplace(t, d_sae, d_in, out);
  return out;
}

// The training architecture of an SAE: husai's own metadata when present, else the one the table names for
// its inference kind (sae_architecture_exporting; an SAE trained elsewhere), else relu (only W_dec / W_enc
// are drawn, and every architecture initialises those alike).
const SaeArchitecture& training_arch_of(const SaeModel& sae) {
  const nlohmann::json& cfg = sae.cfg;
  if (cfg.is_object() && cfg.contains("metadata") && cfg["metadata"].is_object() &&
      cfg["metadata"].contains("training_architecture") &&
      cfg["metadata"]["training_architecture"].is_string()) {
    try {
      return sae_architecture(cfg["metadata"]["training_architecture"].get<std::string>());
    } catch (const Error&) {
      // not one of husai's names: fall back to the inference architecture
    }
  }
  const SaeArchitecture* a = sae_architecture_exporting(sae.architecture);
  return a != nullptr ? *a : sae_architecture("relu");
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
    case NullKind::SecondMoment:
      return "second_moment";
    case NullKind::AxisReflection:
      return "axis_reflection";
    case NullKind::Rotation:
      return "rotation";
  }
  return "unknown";
}

NullKind parse_null_kind(std::string_view name) {
  if (name == "gaussian") return NullKind::Gaussian;
  if (name == "untrained") return NullKind::Untrained;
  if (name == "covariance") return NullKind::Covariance;
  if (name == "second_moment") return NullKind::SecondMoment;
  if (name == "axis_reflection") return NullKind::AxisReflection;
  if (name == "rotation") return NullKind::Rotation;
  throw Error("unknown null '" + std::string(name) +
              "' (expected gaussian, untrained, covariance, second_moment, axis_reflection or rotation)");
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
  cfg.arch = &training_arch_of(like);
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
  // The inference tensors the architecture derives from its own parameters, as a freshly initialised SAE
  // exports them (a JumpReLU threshold at its init value), when it exports the same kind as `like`. State
  // kept outside the parameters (a running threshold) stays as `like` has it.
  if (!cfg.arch->extra_tensors.empty() && cfg.arch->export_tensors != nullptr &&
      cfg.arch->inference->name == sae.architecture) {
    cfg.arch->export_tensors(cfg, layout, params.data(), SaeRunningState{}, sae);
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
  mean_ = mean;
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
  decompose(sigma);
}

CovarianceNull::CovarianceNull(const std::function<void(int64_t, int64_t, float*)>& read, int64_t n_rows,
                               int64_t d_in, int64_t block_rows)
    : d_in_(d_in) {
  if (n_rows < 2) throw Error("the covariance null needs at least 2 activation rows");
  const int64_t D = d_in;
  std::vector<float> x(static_cast<size_t>(block_rows * D), 0.0f);
  std::vector<double> mean(static_cast<size_t>(D), 0.0);
  for (int64_t r0 = 0; r0 < n_rows; r0 += block_rows) {
    const int64_t n = std::min(block_rows, n_rows - r0);
    read(r0, n, x.data());
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t d = 0; d < D; ++d) mean[static_cast<size_t>(d)] += static_cast<double>(x[r * D + d]);
    }
  }
  for (double& m : mean) m /= static_cast<double>(n_rows);
  mean_ = mean;
  std::vector<double> xc(static_cast<size_t>(block_rows * D), 0.0);
  MatrixR<double> sigma = MatrixR<double>::Zero(D, D);
  for (int64_t r0 = 0; r0 < n_rows; r0 += block_rows) {
    const int64_t n = std::min(block_rows, n_rows - r0);
    read(r0, n, x.data());
    for (int64_t i = 0; i < n * D; ++i) {
      xc[static_cast<size_t>(i)] =
          static_cast<double>(x[static_cast<size_t>(i)]) - mean[static_cast<size_t>(i % D)];
    }
    gemm<double>(true, false, D, D, n, 1.0 / static_cast<double>(n_rows - 1), xc.data(), D, xc.data(), D, 1.0,
                 sigma.data(), D);
  }
  decompose(sigma);
}

void CovarianceNull::decompose(Eigen::MatrixXd sigma) {
  sigma = 0.5 * (sigma + sigma.transpose()).eval();  // exactly symmetric for the eigensolver
  sigma_ = sigma;
  if (!(sigma_.trace() > 0)) throw Error("the activations have zero variance: no covariance null");
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(sigma_);
  if (eig.info() != Eigen::Success) throw Error("eigendecomposition of the activation covariance failed");
  const Eigen::VectorXd root = eig.eigenvalues().cwiseMax(0.0).cwiseSqrt();
  factor_ = eig.eigenvectors() * root.asDiagonal();
  eigenvalues_ = eig.eigenvalues().reverse();
  axes_ = eig.eigenvectors().rowwise().reverse();
}

std::vector<float> CovarianceNull::reflect(const float* W_dec, int64_t d_sae, uint64_t seed) const {
  const int64_t D = d_in_;
  const std::vector<int> signs = reflection_signs(D, seed);
  // R = sum_k s_k v_k v_k^T = I - 2 sum_{s_k = -1} v_k v_k^T; formed as V diag(s) V^T in double.
  Eigen::MatrixXd scaled = axes_;
  for (int64_t k = 0; k < D; ++k) scaled.col(k) *= static_cast<double>(signs[static_cast<size_t>(k)]);
  MatrixR<double> R(D, D);
  R.noalias() = scaled * axes_.transpose();
  R = 0.5 * (R + R.transpose()).eval();  // exactly symmetric, as a reflection is
  return transform_dictionary(W_dec, d_sae, D, R.data(), "axis_reflection null");
}

std::vector<int> reflection_signs(int64_t d_in, uint64_t seed) {
  const Philox rng(seed, stream_id("null.axis_reflection"));
  std::vector<int> s(static_cast<size_t>(d_in));
  for (int64_t k = 0; k < d_in; ++k)
    s[static_cast<size_t>(k)] = rng.below(static_cast<uint64_t>(k), 2) == 1 ? -1 : 1;
  return s;
}

SecondMomentNull::SecondMomentNull(const float* W_dec, int64_t d_sae, int64_t d_in) : d_in_(d_in) {
  if (d_sae < 1 || d_in < 1) throw Error("second_moment null: empty dictionary");
  const std::vector<double> w = unit_rows_double(W_dec, d_sae, d_in, "second_moment null");
  MatrixR<double> m(d_in, d_in);
  gemm<double>(true, false, d_in, d_in, d_sae, 1.0 / static_cast<double>(d_sae), w.data(), d_in, w.data(),
               d_in, 0.0, m.data(), d_in);
  m = 0.5 * (m + m.transpose()).eval();  // exactly symmetric for the eigensolver
  moment_ = m;
  if (!(moment_.trace() > 0)) throw Error("second_moment null: every atom of the dictionary is zero");
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(moment_);
  if (eig.info() != Eigen::Success)
    throw Error("eigendecomposition of the dictionary's second moment failed");
  const Eigen::VectorXd root = eig.eigenvalues().cwiseMax(0.0).cwiseSqrt();
  root_ = eig.eigenvectors() * root.asDiagonal() * eig.eigenvectors().transpose();
  root_ = 0.5 * (root_ + root_.transpose()).eval();
}

std::vector<float> SecondMomentNull::decoder(int64_t n_atoms, uint64_t seed) const {
  const int64_t D = d_in_;
  const Philox rng(seed, stream_id("null.second_moment"));
  std::vector<double> g(static_cast<size_t>(n_atoms * D));
  for (size_t k = 0; k < g.size(); ++k) g[k] = rng.normal(k);
  // Rows z_i = M^{1/2} g_i, i.e. Z = G M^{1/2} (the root is symmetric).
  const MatrixR<double> root = root_;
  std::vector<double> z(g.size());
  gemm<double>(false, false, n_atoms, D, D, 1.0, g.data(), D, root.data(), D, 0.0, z.data(), D);
  std::vector<float> out;
  normalise_rows_inplace(z, n_atoms, D, out);
  return out;
}

std::vector<float> second_moment_null_decoder(const float* W_dec, int64_t d_sae, int64_t d_in,
                                              uint64_t seed) {
  return SecondMomentNull(W_dec, d_sae, d_in).decoder(d_sae, seed);
}

std::vector<double> haar_orthogonal(int64_t d, uint64_t seed) {
  if (d < 1) throw Error("rotation null: dimension must be >= 1");
  const Philox rng(seed, stream_id("null.rotation"));
  Eigen::MatrixXd G(d, d);
  for (int64_t i = 0; i < d; ++i) {
    for (int64_t j = 0; j < d; ++j) G(i, j) = rng.normal(static_cast<uint64_t>(i * d + j));
  }
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(G);
  Eigen::MatrixXd Q = qr.householderQ() * Eigen::MatrixXd::Identity(d, d);
  const Eigen::MatrixXd& packed = qr.matrixQR();  // R on and above the diagonal
  for (int64_t j = 0; j < d; ++j) {
    if (packed(j, j) < 0) Q.col(j) *= -1.0;
  }
  std::vector<double> out(static_cast<size_t>(d * d));
  for (int64_t i = 0; i < d; ++i) {
    for (int64_t j = 0; j < d; ++j) out[static_cast<size_t>(i * d + j)] = Q(i, j);
  }
  return out;
}

std::vector<float> rotation_null_decoder(const float* W_dec, int64_t d_sae, int64_t d_in, uint64_t seed) {
  const std::vector<double> Q = haar_orthogonal(d_in, seed);
  return transform_dictionary(W_dec, d_sae, d_in, Q.data(), "rotation null");
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
