// GCC 12's false -W(maybe-)uninitialized inside its AVX-512 intrinsics when inlining Eigen's packet
// transpose (see core/gemm.cpp): this file instantiates Eigen's double GEMM, QR and eigen solvers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "husai/metrics/fourier.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <numeric>

#include <Eigen/Dense>

#include "husai/core/error.hpp"

namespace husai {
namespace {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr double kRankTolerance = 1e-9;

double angle(int64_t f, int64_t t, int64_t p) {
  // (f t) mod p first keeps the argument small and exact for large p.
  return 2.0 * std::numbers::pi * static_cast<double>((f * t) % p) / static_cast<double>(p);
}

// Range and spectrum of the covariance of the centred rows of y [N, D].
FourierComponent component_of(const RowMatrix& y, int64_t frequency) {
  const auto n = static_cast<double>(y.rows());
  const RowMatrix centred = y.rowwise() - y.colwise().mean();
  const Eigen::MatrixXd cov = (centred.transpose() * centred) / n;
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(cov);
  FourierComponent c;
  c.frequency = frequency;
  const Eigen::VectorXd& values = eig.eigenvalues();  // ascending
  const double top = values.size() > 0 ? values(values.size() - 1) : 0.0;
  for (Eigen::Index k = values.size() - 1; k >= 0; --k) {
    if (top <= 0 || values(k) <= kRankTolerance * top) break;
    c.eigenvalues.push_back(values(k));
    for (Eigen::Index d = 0; d < values.size(); ++d) c.basis.push_back(eig.eigenvectors()(d, k));
    c.variance += values(k);
  }
  c.rank = static_cast<int64_t>(c.eigenvalues.size());
  return c;
}

}  // namespace

std::vector<double> embedding_frequency_power(const float* w_e_digits, int64_t modulus, int64_t d_model) {
  const int64_t p = modulus;
  if (p < 3) throw Error("Fourier analysis needs a modulus >= 3");
  std::vector<double> power;
  std::vector<double> cos_f(static_cast<size_t>(p)), sin_f(static_cast<size_t>(p));
  for (int64_t f = 1; f <= (p - 1) / 2; ++f) {
    double nc = 0, ns = 0;
    for (int64_t t = 0; t < p; ++t) {
      cos_f[static_cast<size_t>(t)] = std::cos(angle(f, t, p));
      sin_f[static_cast<size_t>(t)] = std::sin(angle(f, t, p));
      nc += cos_f[static_cast<size_t>(t)] * cos_f[static_cast<size_t>(t)];
      ns += sin_f[static_cast<size_t>(t)] * sin_f[static_cast<size_t>(t)];
    }
    nc = std::sqrt(nc);
    ns = std::sqrt(ns);
    double total = 0;
    for (int64_t d = 0; d < d_model; ++d) {
      double pc = 0, ps = 0;
      for (int64_t t = 0; t < p; ++t) {
        const auto w = static_cast<double>(w_e_digits[t * d_model + d]);
        pc += cos_f[static_cast<size_t>(t)] * w;
        ps += sin_f[static_cast<size_t>(t)] * w;
      }
      total += (pc / nc) * (pc / nc) + (ps / ns) * (ps / ns);
    }
    power.push_back(total);
  }
  return power;
}

std::vector<int64_t> key_frequencies(const std::vector<double>& power, int64_t n_key) {
  std::vector<int64_t> f(power.size());
  std::iota(f.begin(), f.end(), 1);
  std::stable_sort(f.begin(), f.end(), [&](int64_t i, int64_t j) {
    return power[static_cast<size_t>(i - 1)] > power[static_cast<size_t>(j - 1)];
  });
  f.resize(std::min(f.size(), static_cast<size_t>(std::max<int64_t>(0, n_key))));
  return f;
}

FourierSubspace fourier_subspace(const float* x, int64_t n_rows, int64_t d_in, const std::vector<int64_t>& a,
                                 const std::vector<int64_t>& b, const std::vector<int64_t>& c,
                                 int64_t modulus, const std::vector<int64_t>& frequencies) {
  const int64_t p = modulus;
  const auto K = static_cast<int64_t>(frequencies.size());
  if (K < 1) throw Error("Fourier subspace: no key frequencies");
  if (n_rows <= 6 * K + 1)
    throw Error("Fourier subspace: too few rows for " + std::to_string(K) + " frequencies");
  if (static_cast<int64_t>(a.size()) != n_rows || static_cast<int64_t>(b.size()) != n_rows ||
      static_cast<int64_t>(c.size()) != n_rows) {
    throw Error("Fourier subspace: a, b and c need one entry per row");
  }
  for (const int64_t f : frequencies) {
    if (f < 1 || 2 * f >= p) {
      throw Error("key frequency " + std::to_string(f) + " is outside 1 .. (p - 1) / 2");
    }
  }
  RowMatrix phi(n_rows, 1 + 6 * K);
  for (int64_t r = 0; r < n_rows; ++r) {
    phi(r, 0) = 1.0;
    const int64_t vars[3] = {a[static_cast<size_t>(r)], b[static_cast<size_t>(r)], c[static_cast<size_t>(r)]};
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t v = 0; v < 3; ++v) {
        const double th = angle(frequencies[static_cast<size_t>(k)], vars[v], p);
        phi(r, 1 + 6 * k + 2 * v) = std::cos(th);
        phi(r, 2 + 6 * k + 2 * v) = std::sin(th);
      }
    }
  }
  const Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> xf(x, n_rows,
                                                                                                   d_in);
  const RowMatrix X = xf.cast<double>();
  const RowMatrix B = phi.colPivHouseholderQr().solve(X);  // [1 + 6K, D]

  FourierSubspace s;
  s.modulus = p;
  s.d_in = d_in;
  s.frequencies = frequencies;
  const RowMatrix fitted = phi.rightCols(6 * K) * B.bottomRows(6 * K);
  s.all = component_of(fitted, 0);
  for (int64_t k = 0; k < K; ++k) {
    const RowMatrix part = phi.middleCols(1 + 6 * k, 6) * B.middleRows(1 + 6 * k, 6);
    s.per_frequency.push_back(component_of(part, frequencies[static_cast<size_t>(k)]));
  }
  const RowMatrix centred = X.rowwise() - X.colwise().mean();
  s.total_variance = centred.squaredNorm() / static_cast<double>(n_rows);
  return s;
}

FourierRecovery fourier_recovery(const FourierComponent& component, int64_t d_in, const float* w_dec,
                                 int64_t d_sae, int64_t m) {
  FourierRecovery out;
  const int64_t r = component.rank;
  out.m = m > 0 ? m : r;
  out.random_baseline = static_cast<double>(std::min(out.m, d_in)) / static_cast<double>(d_in);
  if (r == 0 || component.variance <= 0) return out;
  const Eigen::Map<const RowMatrix> U(component.basis.data(), r, d_in);
  // Unit decoder rows; zero rows stay zero (alignment 0).
  RowMatrix dec = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
                      w_dec, d_sae, d_in)
                      .cast<double>();
  for (int64_t i = 0; i < d_sae; ++i) {
    const double n = dec.row(i).norm();
    if (n > 0) dec.row(i) /= n;
  }
  const RowMatrix proj = U * dec.transpose();  // [r, d_sae]: <u_k, d_i>
  std::vector<double> alignment(static_cast<size_t>(d_sae));
  for (int64_t i = 0; i < d_sae; ++i) alignment[static_cast<size_t>(i)] = proj.col(i).norm();
  std::vector<int64_t> order(static_cast<size_t>(d_sae));
  std::iota(order.begin(), order.end(), 0);
  const auto m_used = std::min<int64_t>(out.m, d_sae);
  std::partial_sort(order.begin(), order.begin() + m_used, order.end(), [&](int64_t i, int64_t j) {
    const double ai = alignment[static_cast<size_t>(i)], aj = alignment[static_cast<size_t>(j)];
    return ai != aj ? ai > aj : i < j;
  });
  out.top_features.assign(order.begin(), order.begin() + m_used);
  Eigen::MatrixXd span(d_in, m_used);
  double sum_alignment = 0;
  for (int64_t j = 0; j < m_used; ++j) {
    span.col(j) = dec.row(out.top_features[static_cast<size_t>(j)]).transpose();
    sum_alignment += alignment[static_cast<size_t>(out.top_features[static_cast<size_t>(j)])];
  }
  out.mean_top_alignment = m_used > 0 ? sum_alignment / static_cast<double>(m_used) : 0.0;
  // Orthonormal basis of the span (rank-revealing QR: dependent rows add nothing).
  Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(span);
  qr.setThreshold(1e-10);
  const Eigen::Index q_rank = qr.rank();
  const Eigen::MatrixXd Q =
      (qr.householderQ() * Eigen::MatrixXd::Identity(d_in, d_in)).leftCols(q_rank);  // [D, q_rank]
  double captured = 0;
  for (int64_t k = 0; k < r; ++k) {
    captured +=
        component.eigenvalues[static_cast<size_t>(k)] * (Q.transpose() * U.row(k).transpose()).squaredNorm();
  }
  out.variance_recovered = captured / component.variance;
  return out;
}

nlohmann::json fourier_recovery_json(const FourierSubspace& subspace, const float* w_dec, int64_t d_sae,
                                     const std::vector<int64_t>& m_values) {
  auto to_json = [](const FourierRecovery& r) {
    return nlohmann::json{{"m", r.m},
                          {"variance_recovered", r.variance_recovered},
                          {"random_baseline", r.random_baseline},
                          {"mean_top_alignment", r.mean_top_alignment}};
  };
  nlohmann::json all = nlohmann::json::array();
  for (const int64_t m : m_values)
    all.push_back(to_json(fourier_recovery(subspace.all, subspace.d_in, w_dec, d_sae, m)));
  nlohmann::json per = nlohmann::json::array();
  for (const FourierComponent& c : subspace.per_frequency) {
    nlohmann::json j = to_json(fourier_recovery(c, subspace.d_in, w_dec, d_sae, 0));
    j["frequency"] = c.frequency;
    per.push_back(j);
  }
  return {{"key_subspace", all}, {"per_frequency", per}};
}

nlohmann::json fourier_subspace_json(const FourierSubspace& subspace, const std::vector<double>& power) {
  double total_power = 0;
  double key_power = 0;
  for (const double v : power) total_power += v;
  for (const int64_t f : subspace.frequencies) key_power += power[static_cast<size_t>(f - 1)];
  nlohmann::json per = nlohmann::json::array();
  for (const FourierComponent& c : subspace.per_frequency) {
    per.push_back({{"frequency", c.frequency}, {"rank", c.rank}, {"variance", c.variance}});
  }
  return {{"modulus", subspace.modulus},
          {"key_frequencies", subspace.frequencies},
          {"embedding_power", power},
          {"key_power_fraction", total_power > 0 ? key_power / total_power : 0.0},
          {"rank", subspace.all.rank},
          {"key_variance", subspace.all.variance},
          {"total_variance", subspace.total_variance},
          {"fourier_fraction", subspace.fourier_fraction()},
          {"per_frequency", per}};
}

}  // namespace husai
