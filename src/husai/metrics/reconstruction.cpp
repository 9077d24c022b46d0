#include "husai/metrics/reconstruction.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "husai/core/error.hpp"
#include "husai/core/threading.hpp"

namespace husai {

namespace detail {

void ReconstructionSums::reset(int64_t d_in, int64_t d_sae) {
  *this = ReconstructionSums{};
  const auto D = static_cast<size_t>(d_in);
  x1.assign(D, 0.0);
  x2.assign(D, 0.0);
  e1.assign(D, 0.0);
  e2.assign(D, 0.0);
  counts.assign(static_cast<size_t>(d_sae), 0);
}

void ReconstructionSums::add(const ReconstructionSums& other) {
  rows += other.rows;
  nonzero_rows += other.nonzero_rows;
  active += other.active;
  sq_err += other.sq_err;
  sq_x += other.sq_x;
  sq_x_hat += other.sq_x_hat;
  dot += other.dot;
  cos += other.cos;
  ratio += other.ratio;
  l1 += other.l1;
  for (size_t d = 0; d < x1.size(); ++d) {
    x1[d] += other.x1[d];
    x2[d] += other.x2[d];
    e1[d] += other.e1[d];
    e2[d] += other.e2[d];
  }
  for (size_t j = 0; j < counts.size(); ++j) counts[j] += other.counts[j];
}

}  // namespace detail

namespace {

using detail::ReconstructionSums;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// num / den, or NaN when the denominator is 0 (the quantity is undefined, not infinite).
double ratio_or_nan(double num, double den) {
  return den == 0.0 ? kNaN : num / den;
}

// Visits the latents of row r (relative to the batch) as (index, value), dense form: every entry.
struct DenseRowLatents {
  const float* values;
  int64_t d_sae;
  template <typename Visit>
  void visit(int64_t r, const Visit& visit_entry) const {
    const float* row = values + r * d_sae;
    for (int64_t j = 0; j < d_sae; ++j) visit_entry(j, row[j]);
  }
};

struct SparseRowLatents {
  SparseLatents latents;
  template <typename Visit>
  void visit(int64_t r, const Visit& visit_entry) const {
    for (int64_t e = latents.row_offsets[r]; e < latents.row_offsets[r + 1]; ++e) {
      visit_entry(latents.indices[e], latents.values[e]);
    }
  }
};

// Adds rows [r0, r1) of the batch to `sums`, one row after another.
template <typename RowLatents>
void sum_rows(ReconstructionSums& sums, const float* x, const float* x_hat, int64_t r0, int64_t r1, int64_t D,
              const RowLatents& latents, const double* shift_x, const double* shift_err) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * D;
    const float* hr = x_hat + r * D;
    double sq_x = 0, sq_x_hat = 0, dot = 0, sq_err = 0;
    for (int64_t d = 0; d < D; ++d) {
      const double xd = static_cast<double>(xr[d]);
      const double hd = static_cast<double>(hr[d]);
      const double err = xd - hd;
      sq_x += xd * xd;
      sq_x_hat += hd * hd;
      dot += xd * hd;
      sq_err += err * err;
      const auto du = static_cast<size_t>(d);
      const double xs = xd - shift_x[d];
      const double es = err - shift_err[d];
      sums.x1[du] += xs;
      sums.x2[du] += xs * xs;
      sums.e1[du] += es;
      sums.e2[du] += es * es;
    }
    sums.rows += 1;
    sums.sq_x += sq_x;
    sums.sq_x_hat += sq_x_hat;
    sums.dot += dot;
    sums.sq_err += sq_err;
    if (sq_x > 0) {
      const double norm_x = std::sqrt(sq_x);
      const double norm_x_hat = std::sqrt(sq_x_hat);
      sums.nonzero_rows += 1;
      sums.cos += norm_x_hat > 0 ? dot / (norm_x * norm_x_hat) : 0.0;
      sums.ratio += norm_x_hat / norm_x;
    }
    latents.visit(r, [&](int64_t j, float value) {
      if (value != 0.0f) {
        sums.active += 1;
        sums.l1 += std::abs(static_cast<double>(value));
        sums.counts[static_cast<size_t>(j)] += 1;
      }
    });
  }
}

// Sum over dimensions of the centred sum of squares sum_r (v_rd - mean_d)^2, from shifted sums.
double centred_sum_of_squares(const std::vector<double>& s1, const std::vector<double>& s2, int64_t n) {
  const double dn = static_cast<double>(n);
  double total = 0;
  for (size_t d = 0; d < s1.size(); ++d) total += std::max(0.0, s2[d] - s1[d] * s1[d] / dn);
  return total;
}

}  // namespace

std::vector<double> ReconstructionMetrics::feature_density() const {
  std::vector<double> density(feature_counts.size());
  for (size_t j = 0; j < density.size(); ++j) {
    density[j] = static_cast<double>(feature_counts[j]) / static_cast<double>(n_rows);
  }
  return density;
}

nlohmann::json ReconstructionMetrics::to_json(bool include_feature_density) const {
  auto number = [](double v) -> nlohmann::json { return std::isfinite(v) ? nlohmann::json(v) : nullptr; };
  nlohmann::json j = {{"n_rows", n_rows},
                      {"mse", number(mse)},
                      {"explained_variance", number(explained_variance)},
                      {"explained_variance_per_dim", number(explained_variance_per_dim)},
                      {"explained_variance_uncentred", number(explained_variance_uncentred)},
                      {"l0", number(l0)},
                      {"l1", number(l1)},
                      {"frac_dead", number(frac_dead)},
                      {"frac_dense", number(frac_dense)},
                      {"cossim", number(cossim)},
                      {"l2_ratio", number(l2_ratio)},
                      {"relative_reconstruction_bias", number(relative_reconstruction_bias)}};
  if (include_feature_density) j["feature_density"] = feature_density();
  return j;
}

ReconstructionAccumulator::ReconstructionAccumulator(int64_t d_in, int64_t d_sae)
    : d_in_(d_in), d_sae_(d_sae) {
  if (d_in < 1 || d_sae < 1) {
    throw Error("reconstruction metrics: d_in and d_sae must be >= 1 (got " + std::to_string(d_in) + ", " +
                std::to_string(d_sae) + ")");
  }
  total_.reset(d_in, d_sae);
  open_.reset(d_in, d_sae);
}

template <typename RowLatents>
void ReconstructionAccumulator::add_rows(const float* x, const float* x_hat, int64_t n_rows,
                                         const RowLatents& latents) {
  if (n_rows < 0) throw Error("reconstruction metrics: negative row count");
  if (n_rows == 0) return;
  const int64_t D = d_in_;
  if (n_rows_ == 0) {
    shift_x_.assign(x, x + D);
    shift_err_.resize(static_cast<size_t>(D));
    for (int64_t d = 0; d < D; ++d) {
      shift_err_[static_cast<size_t>(d)] = static_cast<double>(x[d]) - static_cast<double>(x_hat[d]);
    }
  }
  auto fill_open = [&](int64_t r0, int64_t r1) {
    sum_rows(open_, x, x_hat, r0, r1, D, latents, shift_x_.data(), shift_err_.data());
    if (open_.rows == kChunkRows) {
      total_.add(open_);
      open_.reset(d_in_, d_sae_);
    }
  };
  int64_t r = 0;
  // Finish the chunk a previous batch left open, so that chunks stay aligned to global row indices.
  if (open_.rows > 0) {
    r = std::min(kChunkRows - open_.rows, n_rows);
    fill_open(0, r);
  }
  // Whole chunks in parallel, a bounded number at a time (each holds d_sae counts), added in order.
  constexpr int64_t kChunksPerRound = 64;
  std::vector<ReconstructionSums> parts;
  while (n_rows - r >= kChunkRows) {
    const int64_t n_chunks = std::min((n_rows - r) / kChunkRows, kChunksPerRound);
    parts.resize(static_cast<size_t>(n_chunks));
    const int64_t base = r;
    parallel_for(n_chunks, [&](int64_t c) {
      ReconstructionSums& part = parts[static_cast<size_t>(c)];
      part.reset(d_in_, d_sae_);
      const int64_t r0 = base + c * kChunkRows;
      sum_rows(part, x, x_hat, r0, r0 + kChunkRows, D, latents, shift_x_.data(), shift_err_.data());
    });
    for (const ReconstructionSums& part : parts) total_.add(part);
    r += n_chunks * kChunkRows;
  }
  if (r < n_rows) fill_open(r, n_rows);
  n_rows_ += n_rows;
}

void ReconstructionAccumulator::add(const float* x, const float* x_hat, const float* latents,
                                    int64_t n_rows) {
  add_rows(x, x_hat, n_rows, DenseRowLatents{latents, d_sae_});
}

void ReconstructionAccumulator::add(const float* x, const float* x_hat, const SparseLatents& latents,
                                    int64_t n_rows) {
  // Validate everything before touching the sums, so a bad batch leaves the accumulator as it was.
  std::vector<int64_t> last_row(static_cast<size_t>(d_sae_), -1);
  auto bad_row = [&](int64_t r, const std::string& what) {
    return Error("reconstruction metrics: sparse latents of row " + std::to_string(n_rows_ + r) + ": " +
                 what);
  };
  for (int64_t r = 0; r < n_rows; ++r) {
    if (latents.row_offsets[r + 1] < latents.row_offsets[r]) throw bad_row(r, "row_offsets decrease");
    for (int64_t e = latents.row_offsets[r]; e < latents.row_offsets[r + 1]; ++e) {
      const int64_t j = latents.indices[e];
      if (j < 0 || j >= d_sae_) {
        throw bad_row(r,
                      "latent index " + std::to_string(j) + " outside [0, " + std::to_string(d_sae_) + ")");
      }
      if (last_row[static_cast<size_t>(j)] == r)
        throw bad_row(r, "latent " + std::to_string(j) + " repeated");
      last_row[static_cast<size_t>(j)] = r;
    }
  }
  add_rows(x, x_hat, n_rows, SparseRowLatents{latents});
}

ReconstructionMetrics ReconstructionAccumulator::finish() const {
  if (n_rows_ == 0) throw Error("reconstruction metrics: no rows");
  ReconstructionSums sums = total_;
  if (open_.rows > 0) sums.add(open_);
  const double N = static_cast<double>(n_rows_);
  const double ss_x = centred_sum_of_squares(sums.x1, sums.x2, n_rows_);
  const double ss_err_centred = centred_sum_of_squares(sums.e1, sums.e2, n_rows_);

  ReconstructionMetrics m;
  m.n_rows = n_rows_;
  m.d_in = d_in_;
  m.d_sae = d_sae_;
  m.mse = sums.sq_err / (N * static_cast<double>(d_in_));
  m.explained_variance = 1.0 - ratio_or_nan(sums.sq_err, ss_x);
  m.explained_variance_per_dim = 1.0 - ratio_or_nan(ss_err_centred, ss_x);
  m.explained_variance_uncentred = 1.0 - ratio_or_nan(sums.sq_err, sums.sq_x);
  m.l0 = static_cast<double>(sums.active) / N;
  m.l1 = sums.l1 / N;
  int64_t dead = 0, dense = 0;
  for (const int64_t count : sums.counts) {
    dead += count == 0 ? 1 : 0;
    dense += 10 * count > n_rows_ ? 1 : 0;  // count / n_rows > 0.1, exactly
  }
  m.frac_dead = static_cast<double>(dead) / static_cast<double>(d_sae_);
  m.frac_dense = static_cast<double>(dense) / static_cast<double>(d_sae_);
  const auto nonzero = static_cast<double>(sums.nonzero_rows);
  m.cossim = ratio_or_nan(sums.cos, nonzero);
  m.l2_ratio = ratio_or_nan(sums.ratio, nonzero);
  m.relative_reconstruction_bias = ratio_or_nan(sums.sq_x_hat, sums.dot);
  m.n_zero_norm_rows = n_rows_ - sums.nonzero_rows;
  m.feature_counts = std::move(sums.counts);
  return m;
}

ReconstructionMetrics reconstruction_metrics(const float* x, const float* x_hat, const float* latents,
                                             int64_t n_rows, int64_t d_in, int64_t d_sae) {
  ReconstructionAccumulator acc(d_in, d_sae);
  acc.add(x, x_hat, latents, n_rows);
  return acc.finish();
}

}  // namespace husai
