#include "husai/metrics/statistics.hpp"

#include <algorithm>
#include <boost/math/distributions/normal.hpp>
#include <cmath>
#include <limits>
#include <numeric>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"
#include "husai/core/threading.hpp"

namespace husai::stats {
namespace {

__extension__ using int128 = __int128;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Resample b of a group draws its seeds from Philox block indices (b << 32) + attempt * n + position, so
// every resample owns its own counter range: the draws do not depend on the order or the thread that
// computes them.
constexpr uint64_t kResampleStride = uint64_t{1} << 32;
constexpr int64_t kMaxSeeds = int64_t{1} << 20;
constexpr int64_t kResamplesPerTask = 1024;

// Runs body(task) for every task, on the thread pool only when there is enough work (`flops`, roughly the
// multiply-adds) to pay for it: 10,000 resamples of 10 seeds take a few milliseconds on one core, less than
// waking a busy pool. Tasks are independent, so the answer is the same either way.
template <typename Body>
void run_tasks(int64_t n_tasks, double flops, const Body& body) {
  if (flops < 2e7) {
    for (int64_t t = 0; t < n_tasks; ++t) body(t);
  } else {
    parallel_for(n_tasks, body);
  }
}

uint64_t group_stream(int group) {
  static const uint64_t kGroupA = stream_id("husai.stats.seed_bootstrap");
  static const uint64_t kGroupB = stream_id("husai.stats.seed_bootstrap.group_b");
  return group == 0 ? kGroupA : kGroupB;
}

void check_matrix(const SimilarityMatrix& sim, const char* what) {
  if (sim.n < 0 || sim.values.size() != static_cast<size_t>(sim.n * sim.n))
    throw Error(std::string(what) + ": similarity matrix must hold n * n values");
  if (sim.n > kMaxSeeds) throw Error(std::string(what) + ": too many seeds");
}

// Sum over seed pairs i < j of w_i w_j s_ij divided by the sum of w_i w_j, where w are seed multiplicities:
// the mean over position pairs whose seeds differ. With all weights 1 it is the plain mean over distinct
// pairs, bit for bit (multiplying by 1 is exact and the summation order is the same), so a resample that
// holds every seed once ties exactly with the estimate.
double weighted_mean_pairwise(const SimilarityMatrix& sim, const double* weights) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < sim.n; ++i) {
    if (weights[i] == 0) continue;
    for (int64_t j = i + 1; j < sim.n; ++j) {
      if (weights[j] == 0) continue;  // not 0 * s: a non-finite score of a left-out seed must not leak
      const double w = weights[i] * weights[j];
      num += w * sim.at(i, j);
      den += w;
    }
  }
  return den > 0 ? num / den : kNaN;
}

// Draws resample `b` of a group of n seeds, redrawing while it holds fewer than two distinct seeds.
// Fills `counts` (multiplicities, size n) and, if given, `seeds` (draw order). Returns the number of
// rejected draws, or -1 if the counter range ran out (impossible in practice: probability < 2^-4000).
int64_t draw_resample(const Philox& rng, int64_t b, int64_t n, double* counts, std::vector<int64_t>* seeds) {
  const int64_t max_attempts = static_cast<int64_t>(kResampleStride) / n;
  for (int64_t attempt = 0; attempt < max_attempts; ++attempt) {
    std::fill(counts, counts + n, 0.0);
    if (seeds) seeds->clear();
    int64_t distinct = 0;
    const uint64_t base = static_cast<uint64_t>(b) * kResampleStride + static_cast<uint64_t>(attempt * n);
    for (int64_t p = 0; p < n; ++p) {
      const auto s =
          static_cast<int64_t>(rng.below(base + static_cast<uint64_t>(p), static_cast<uint64_t>(n)));
      if (counts[s] == 0) ++distinct;
      counts[s] += 1;
      if (seeds) seeds->push_back(s);
    }
    if (distinct >= 2) return attempt;
  }
  return -1;
}

// numpy's linear quantile of sorted values (virtual index (n - 1) q, numpy's two-sided lerp).
double quantile_sorted(const std::vector<double>& sorted, double q) {
  const auto n = static_cast<int64_t>(sorted.size());
  const double h = static_cast<double>(n - 1) * q;
  if (h >= static_cast<double>(n - 1)) return sorted.back();
  if (h <= 0) return sorted.front();
  const auto lo = static_cast<int64_t>(std::floor(h));
  const double gamma = h - static_cast<double>(lo);
  const double a = sorted[static_cast<size_t>(lo)];
  const double b = sorted[static_cast<size_t>(lo + 1)];
  const double diff = b - a;
  return gamma >= 0.5 ? b - diff * (1 - gamma) : a + diff * gamma;
}

// SciPy's jackknife acceleration for one or more samples: U_ji = (n_j - 1)(mean_i theta_ji - theta_ji),
// a = sum_j sum_i U_ji^3 / n_j^3 / (6 (sum_j sum_i U_ji^2 / n_j^2)^(3/2)). Groups without a jackknife
// (fewer than 3 seeds) contribute nothing; no spread at all gives 0 (SciPy: NaN).
double acceleration(const std::vector<std::vector<double>>& jack_groups) {
  double num = 0, den = 0;
  for (const auto& jack : jack_groups) {
    if (jack.empty()) continue;
    const auto n = static_cast<double>(jack.size());
    double mean = 0;
    for (const double t : jack) mean += t;
    mean /= n;
    double s3 = 0, s2 = 0;
    for (const double t : jack) {
      const double u = (n - 1) * (mean - t);
      s3 += u * u * u;
      s2 += u * u;
    }
    num += s3 / (n * n * n);
    den += s2 / (n * n);
  }
  return den > 0 ? num / (6 * std::pow(den, 1.5)) : 0.0;
}

// Leave-one-seed-out statistics of one group's mean pairwise similarity, shifted by `offset` (the other
// group's term of a difference). Empty for fewer than 3 seeds (one seed has no pair).
std::vector<double> jackknife(const SimilarityMatrix& sim, double sign, double offset) {
  std::vector<double> out;
  if (sim.n < 3) return out;
  std::vector<double> w(static_cast<size_t>(sim.n), 1.0);
  for (int64_t i = 0; i < sim.n; ++i) {
    w[static_cast<size_t>(i)] = 0;
    out.push_back(sign * weighted_mean_pairwise(sim, w.data()) + offset);
    w[static_cast<size_t>(i)] = 1;
  }
  return out;
}

// Intervals, standard error, z0 from the bootstrap distribution; the acceleration comes from the caller.
void finish(BootstrapDetail& d, double confidence) {
  BootstrapResult& r = d.result;
  const auto B = static_cast<int64_t>(d.statistics.size());
  // Two passes on values shifted by the first one: exact 0 for a constant distribution (n = 2), where the
  // rounded mean of B equal values need not equal them.
  const double shift = d.statistics[0];
  double mean = 0;
  for (const double t : d.statistics) mean += t - shift;
  mean /= static_cast<double>(B);
  double ss = 0;
  for (const double t : d.statistics) ss += (t - shift - mean) * (t - shift - mean);
  r.standard_error = std::sqrt(ss / static_cast<double>(B - 1));

  std::vector<double> sorted = d.statistics;
  std::sort(sorted.begin(), sorted.end());
  const double alpha = (1 - confidence) / 2;
  r.percentile = {quantile_sorted(sorted, alpha), quantile_sorted(sorted, 1 - alpha)};

  // SciPy's _percentile_of_score: (#below + #at-or-below) / (2 B), i.e. ties count one half.
  int64_t below = 0, at_or_below = 0;
  for (const double t : d.statistics) {
    below += t < r.estimate ? 1 : 0;
    at_or_below += t <= r.estimate ? 1 : 0;
  }
  d.z0 = normal_quantile(static_cast<double>(below + at_or_below) / static_cast<double>(2 * B));
  const double a = d.acceleration;
  auto level = [&](double z) {
    // Efron's BCa level; for an infinite z0 (the estimate outside the whole distribution) its limit.
    if (std::isinf(d.z0)) return d.z0 < 0 ? 0.0 : 1.0;
    const double num = d.z0 + z;
    return normal_cdf(d.z0 + num / (1 - a * num));
  };
  const double z_alpha = normal_quantile(alpha);
  r.bca = {quantile_sorted(sorted, level(z_alpha)), quantile_sorted(sorted, level(-z_alpha))};
}

void check_bootstrap_args(int64_t n_resamples, double confidence, const char* what) {
  if (n_resamples < 2 || n_resamples >= static_cast<int64_t>(kResampleStride))
    throw Error(std::string(what) + ": n_resamples must be in [2, 2^32)");
  if (!(confidence > 0 && confidence < 1)) throw Error(std::string(what) + ": confidence must be in (0, 1)");
}

// Statistics of resamples [0, n_resamples) for one or two groups (b == nullptr: one group), in parallel
// over fixed blocks of resamples; returns the total number of redrawn draws.
int64_t bootstrap_distribution(const SimilarityMatrix& a, const SimilarityMatrix* b, uint64_t seed,
                               std::vector<double>& stats) {
  const Philox rng_a(seed, group_stream(0));
  const Philox rng_b(seed, group_stream(1));
  const int64_t B = static_cast<int64_t>(stats.size());
  const int64_t n_tasks = (B + kResamplesPerTask - 1) / kResamplesPerTask;
  std::vector<int64_t> redrawn(static_cast<size_t>(n_tasks), 0);
  const double n_pairs = static_cast<double>(a.n * a.n + (b ? b->n * b->n : 0)) / 2;
  run_tasks(n_tasks, static_cast<double>(B) * n_pairs, [&](int64_t task) {
    std::vector<double> wa(static_cast<size_t>(a.n)), wb(static_cast<size_t>(b ? b->n : 0));
    int64_t count = 0;
    const int64_t end = std::min(B, (task + 1) * kResamplesPerTask);
    for (int64_t r = task * kResamplesPerTask; r < end; ++r) {
      const int64_t ra = draw_resample(rng_a, r, a.n, wa.data(), nullptr);
      double t = weighted_mean_pairwise(a, wa.data());
      int64_t rb = 0;
      if (b) {
        rb = draw_resample(rng_b, r, b->n, wb.data(), nullptr);
        t -= weighted_mean_pairwise(*b, wb.data());
      }
      if (ra < 0 || rb < 0 || count < 0) {
        count = -1;  // reported after the loop: the body must not throw
        continue;
      }
      count += ra + rb;
      stats[static_cast<size_t>(r)] = t;
    }
    redrawn[static_cast<size_t>(task)] = count;
  });
  int64_t total = 0;
  for (const int64_t c : redrawn) {
    if (c < 0) throw Error("seed bootstrap: could not draw a resample with two distinct seeds");
    total += c;
  }
  return total;
}

// Unrolls C(n, k) until it exceeds `cap` (returns cap + 1 then).
int64_t binomial_capped(int64_t n, int64_t k, int64_t cap) {
  k = std::min(k, n - k);
  int128 c = 1;
  for (int64_t i = 0; i < k; ++i) {
    c = c * (n - i) / (i + 1);  // exact: the product of i + 1 consecutive integers is divisible by (i + 1)!
    if (c > cap) return cap + 1;
  }
  return static_cast<int64_t>(c);
}

// Counts of the Mann-Whitney U statistic for samples of m and n values: the coefficients of the Gaussian
// binomial [m + n choose m]_q, built as prod_{i=1..m} (1 - q^(n+i)) / (1 - q^i), each step exact
// (after step i the polynomial is [n + i choose i]_q). Returns P(U <= k).
template <typename T>
double mwu_cdf(int64_t m, int64_t n, int64_t k) {
  if (m > n) std::swap(m, n);
  std::vector<T> c{T(1)};  // [0 choose 0]_q = 1
  c.resize(static_cast<size_t>(m * n + m + 1), T(0));
  int64_t degree = 0;
  for (int64_t i = 1; i <= m; ++i) {
    const int64_t shift = n + i;
    for (int64_t j = degree + shift; j >= shift; --j)
      c[static_cast<size_t>(j)] -= c[static_cast<size_t>(j - shift)];
    degree = i * n;
    for (int64_t j = i; j <= degree; ++j) c[static_cast<size_t>(j)] += c[static_cast<size_t>(j - i)];
    for (int64_t j = degree + 1; j <= degree + i; ++j) c[static_cast<size_t>(j)] = T(0);
  }
  T below = 0, total = 0;
  for (int64_t j = 0; j <= degree; ++j) {
    total += c[static_cast<size_t>(j)];
    if (j <= k) below += c[static_cast<size_t>(j)];
  }
  return static_cast<double>(below) / static_cast<double>(total);
}

using NormalPolicy =
    boost::math::policies::policy<boost::math::policies::overflow_error<boost::math::policies::ignore_error>,
                                  boost::math::policies::domain_error<boost::math::policies::ignore_error>>;
using Normal = boost::math::normal_distribution<double, NormalPolicy>;

double normal_sf(double z) {
  if (std::isnan(z)) return kNaN;
  return boost::math::cdf(boost::math::complement(Normal(), z));
}

}  // namespace

double mean_pairwise(const SimilarityMatrix& sim) {
  check_matrix(sim, "mean_pairwise");
  if (sim.n < 2) throw Error("mean_pairwise: needs at least two seeds");
  const std::vector<double> ones(static_cast<size_t>(sim.n), 1.0);
  return weighted_mean_pairwise(sim, ones.data());
}

double mean_pairwise_resample(const SimilarityMatrix& sim, const std::vector<int64_t>& seeds) {
  check_matrix(sim, "mean_pairwise_resample");
  std::vector<double> counts(static_cast<size_t>(sim.n), 0.0);
  int64_t distinct = 0;
  for (const int64_t s : seeds) {
    if (s < 0 || s >= sim.n) throw Error("mean_pairwise_resample: seed index out of range");
    if (counts[static_cast<size_t>(s)] == 0) ++distinct;
    counts[static_cast<size_t>(s)] += 1;
  }
  if (distinct < 2) throw Error("mean_pairwise_resample: needs at least two distinct seeds");
  return weighted_mean_pairwise(sim, counts.data());
}

std::vector<int64_t> bootstrap_resample_seeds(int64_t n_seeds, uint64_t seed, int64_t resample, int group,
                                              int64_t* n_redrawn) {
  if (n_seeds < 2 || n_seeds > kMaxSeeds) throw Error("bootstrap_resample_seeds: needs at least two seeds");
  if (resample < 0 || resample >= static_cast<int64_t>(kResampleStride))
    throw Error("bootstrap_resample_seeds: resample index out of range");
  if (group != 0 && group != 1) throw Error("bootstrap_resample_seeds: group must be 0 or 1");
  std::vector<double> counts(static_cast<size_t>(n_seeds));
  std::vector<int64_t> seeds;
  const int64_t redrawn =
      draw_resample(Philox(seed, group_stream(group)), resample, n_seeds, counts.data(), &seeds);
  if (redrawn < 0) throw Error("seed bootstrap: could not draw a resample with two distinct seeds");
  if (n_redrawn) *n_redrawn = redrawn;
  return seeds;
}

BootstrapDetail seed_bootstrap_detail(const SimilarityMatrix& sim, int64_t n_resamples, double confidence,
                                      uint64_t seed) {
  check_matrix(sim, "seed_bootstrap");
  check_bootstrap_args(n_resamples, confidence, "seed_bootstrap");
  if (sim.n < 2) throw Error("seed_bootstrap: needs at least two seeds");
  BootstrapDetail d;
  d.result.estimate = mean_pairwise(sim);
  d.result.n_resamples = n_resamples;
  d.result.confidence = confidence;
  d.statistics.resize(static_cast<size_t>(n_resamples));
  d.result.n_redrawn = bootstrap_distribution(sim, nullptr, seed, d.statistics);
  d.jackknife = jackknife(sim, 1.0, 0.0);
  d.acceleration = acceleration({d.jackknife});
  finish(d, confidence);
  return d;
}

BootstrapResult seed_bootstrap(const SimilarityMatrix& sim, int64_t n_resamples, double confidence,
                               uint64_t seed) {
  return seed_bootstrap_detail(sim, n_resamples, confidence, seed).result;
}

BootstrapDetail seed_bootstrap_difference_detail(const SimilarityMatrix& a, const SimilarityMatrix& b,
                                                 int64_t n_resamples, double confidence, uint64_t seed) {
  check_matrix(a, "seed_bootstrap_difference");
  check_matrix(b, "seed_bootstrap_difference");
  check_bootstrap_args(n_resamples, confidence, "seed_bootstrap_difference");
  if (a.n < 2 || b.n < 2) throw Error("seed_bootstrap_difference: each group needs at least two seeds");
  BootstrapDetail d;
  const double mean_a = mean_pairwise(a);
  const double mean_b = mean_pairwise(b);
  d.result.estimate = mean_a - mean_b;
  d.result.n_resamples = n_resamples;
  d.result.confidence = confidence;
  d.statistics.resize(static_cast<size_t>(n_resamples));
  d.result.n_redrawn = bootstrap_distribution(a, &b, seed, d.statistics);
  // SciPy's multi-sample jackknife: leave out one seed of one group, the other group whole.
  const std::vector<double> jack_a = jackknife(a, 1.0, -mean_b);
  const std::vector<double> jack_b = jackknife(b, -1.0, mean_a);
  d.jackknife = jack_a;
  d.jackknife.insert(d.jackknife.end(), jack_b.begin(), jack_b.end());
  d.acceleration = acceleration({jack_a, jack_b});
  finish(d, confidence);
  return d;
}

BootstrapResult seed_bootstrap_difference(const SimilarityMatrix& a, const SimilarityMatrix& b,
                                          int64_t n_resamples, double confidence, uint64_t seed) {
  return seed_bootstrap_difference_detail(a, b, n_resamples, confidence, seed).result;
}

PermutationResult permutation_test(const SimilarityMatrix& pooled, int64_t n_a, int64_t n_resamples,
                                   uint64_t seed, int64_t max_exact) {
  check_matrix(pooled, "permutation_test");
  const int64_t N = pooled.n;
  const int64_t n_b = N - n_a;
  if (n_a < 2 || n_b < 2) throw Error("permutation_test: each group needs at least two dictionaries");
  const double pairs_a = static_cast<double>(n_a * (n_a - 1)) / 2;
  const double pairs_b = static_cast<double>(n_b * (n_b - 1)) / 2;
  // Difference of the mean within-group similarity for a labeling given as its members: order[0, n_a) are
  // group A, order[n_a, N) group B (upper triangle read, so a slightly asymmetric input is read one way).
  auto statistic = [&](const int64_t* order) {
    auto within = [&](const int64_t* members, int64_t count) {
      double sum = 0;
      for (int64_t p = 0; p < count; ++p)
        for (int64_t q = p + 1; q < count; ++q)
          sum += pooled.at(std::min(members[p], members[q]), std::max(members[p], members[q]));
      return sum;
    };
    return within(order, n_a) / pairs_a - within(order + n_a, n_b) / pairs_b;
  };

  PermutationResult r;
  std::vector<int64_t> order(static_cast<size_t>(N));
  std::iota(order.begin(), order.end(), int64_t{0});
  r.observed = statistic(order.data());
  double scale = std::abs(r.observed);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < N; ++j)
      if (i != j) scale = std::max(scale, std::abs(pooled.at(i, j)));
  const double tol = 1e-12 * scale;
  const double one_sided_bar = r.observed - tol;
  const double two_sided_bar = std::abs(r.observed) - tol;

  const int64_t n_labelings = binomial_capped(N, n_a, std::max<int64_t>(max_exact, 0));
  if (n_labelings <= max_exact) {
    // All subsets of size n_a in lexicographic order (the observed labeling {0, ..., n_a - 1} first).
    std::vector<int64_t> idx(static_cast<size_t>(n_a));
    std::iota(idx.begin(), idx.end(), int64_t{0});
    int64_t ge = 0, ge_abs = 0, count = 0;
    while (true) {
      // order = the chosen members ascending, then the others ascending (the first labeling is the observed
      // one, summed in the same order, so it ties with itself bit for bit).
      std::copy(idx.begin(), idx.end(), order.begin());
      for (int64_t i = 0, k = 0, out = n_a; i < N; ++i) {
        if (k < n_a && idx[static_cast<size_t>(k)] == i) {
          ++k;
        } else {
          order[static_cast<size_t>(out++)] = i;
        }
      }
      const double t = statistic(order.data());
      ge += t >= one_sided_bar ? 1 : 0;
      ge_abs += std::abs(t) >= two_sided_bar ? 1 : 0;
      ++count;
      int64_t k = n_a - 1;
      while (k >= 0 && idx[static_cast<size_t>(k)] == N - n_a + k) --k;
      if (k < 0) break;
      ++idx[static_cast<size_t>(k)];
      for (int64_t j = k + 1; j < n_a; ++j) idx[static_cast<size_t>(j)] = idx[static_cast<size_t>(j - 1)] + 1;
    }
    r.exact = true;
    r.n_permutations = count;
    r.p_value = static_cast<double>(ge) / static_cast<double>(count);
    r.p_value_two_sided = static_cast<double>(ge_abs) / static_cast<double>(count);
    return r;
  }

  if (n_resamples < 1) throw Error("permutation_test: Monte Carlo needs n_resamples >= 1");
  // Labeling r: a partial Fisher-Yates shuffle whose draw i is Philox block r * N + i.
  const Philox rng(seed, stream_id("husai.stats.permutation_test"));
  const int64_t n_tasks = (n_resamples + kResamplesPerTask - 1) / kResamplesPerTask;
  std::vector<int64_t> ge(static_cast<size_t>(n_tasks), 0), ge_abs(static_cast<size_t>(n_tasks), 0);
  run_tasks(n_tasks, static_cast<double>(n_resamples) * static_cast<double>(N * N) / 2, [&](int64_t task) {
    std::vector<int64_t> perm(static_cast<size_t>(N));
    const int64_t end = std::min(n_resamples, (task + 1) * kResamplesPerTask);
    for (int64_t s = task * kResamplesPerTask; s < end; ++s) {
      std::iota(perm.begin(), perm.end(), int64_t{0});
      for (int64_t i = 0; i < n_a; ++i) {
        const uint64_t index = static_cast<uint64_t>(s) * static_cast<uint64_t>(N) + static_cast<uint64_t>(i);
        const auto j = i + static_cast<int64_t>(rng.below(index, static_cast<uint64_t>(N - i)));
        std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
      }
      const double t = statistic(perm.data());
      ge[static_cast<size_t>(task)] += t >= one_sided_bar ? 1 : 0;
      ge_abs[static_cast<size_t>(task)] += std::abs(t) >= two_sided_bar ? 1 : 0;
    }
  });
  const int64_t total_ge = std::accumulate(ge.begin(), ge.end(), int64_t{0});
  const int64_t total_ge_abs = std::accumulate(ge_abs.begin(), ge_abs.end(), int64_t{0});
  r.exact = false;
  r.n_permutations = n_resamples + 1;
  r.p_value = static_cast<double>(1 + total_ge) / static_cast<double>(1 + n_resamples);
  r.p_value_two_sided = static_cast<double>(1 + total_ge_abs) / static_cast<double>(1 + n_resamples);
  return r;
}

double cohens_d(const std::vector<double>& x, const std::vector<double>& y) {
  const auto nx = static_cast<double>(x.size());
  const auto ny = static_cast<double>(y.size());
  if (x.empty() || y.empty() || x.size() + y.size() < 3) return kNaN;
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (const double t : v) s += t;
    return s / static_cast<double>(v.size());
  };
  auto sum_sq = [](const std::vector<double>& v, double m) {
    double s = 0;
    for (const double t : v) s += (t - m) * (t - m);
    return s;
  };
  const double mx = mean(x), my = mean(y);
  // (n - 1) var (ddof 1) is the sum of squares, so the pooled variance is their sum over nx + ny - 2.
  const double pooled = std::sqrt((sum_sq(x, mx) + sum_sq(y, my)) / (nx + ny - 2));
  const double diff = mx - my;
  if (pooled == 0) return diff == 0 ? 0.0 : (diff > 0 ? kInf : -kInf);
  return diff / pooled;
}

MannWhitneyResult mann_whitney_greater(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.empty() || y.empty()) throw Error("mann_whitney_greater: both samples must be non-empty");
  const auto n1 = static_cast<int64_t>(x.size());
  const auto n2 = static_cast<int64_t>(y.size());
  const int64_t n = n1 + n2;
  std::vector<double> xy = x;
  xy.insert(xy.end(), y.begin(), y.end());
  for (const double v : xy)
    if (std::isnan(v)) throw Error("mann_whitney_greater: samples must not contain NaN");

  // Average ranks (scipy.stats.rankdata's default) and the tie term sum (t^3 - t) over tie groups.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::sort(order.begin(), order.end(),
            [&](int64_t i, int64_t j) { return xy[static_cast<size_t>(i)] < xy[static_cast<size_t>(j)]; });
  std::vector<double> ranks(static_cast<size_t>(n));
  double tie_term = 0;
  for (int64_t i = 0; i < n;) {
    int64_t j = i + 1;
    while (j < n && xy[static_cast<size_t>(order[static_cast<size_t>(j)])] ==
                        xy[static_cast<size_t>(order[static_cast<size_t>(i)])])
      ++j;
    const double rank = static_cast<double>(i + 1 + j) / 2;  // mean of ranks i + 1 .. j
    for (int64_t k = i; k < j; ++k) ranks[static_cast<size_t>(order[static_cast<size_t>(k)])] = rank;
    const auto t = static_cast<double>(j - i);
    tie_term += t * t * t - t;
    i = j;
  }
  double r1 = 0;
  for (int64_t i = 0; i < n1; ++i) r1 += ranks[static_cast<size_t>(i)];

  MannWhitneyResult res;
  res.u = r1 - static_cast<double>(n1 * (n1 + 1)) / 2;
  const bool ties = tie_term > 0;
  if (!(n1 > 8 && n2 > 8) && !ties) {
    // SciPy: p = sf(U1) = P(U >= U1) = P(U <= n1 n2 - U1) by symmetry.
    res.method = "exact";
    const auto k = n1 * n2 - static_cast<int64_t>(res.u);
    const int64_t m = std::min(n1, n2);
    // The counts are at most C(n, m); __int128 holds them exactly (with headroom for the factor-2
    // intermediates) up to 2^120, beyond that doubles (relative error ~1e-16 per step).
    const double log2_binom =
        (std::lgamma(static_cast<double>(n + 1)) - std::lgamma(static_cast<double>(m + 1)) -
         std::lgamma(static_cast<double>(n - m + 1))) /
        std::log(2.0);
    res.p_value = log2_binom < 120 ? mwu_cdf<int128>(n1, n2, k) : mwu_cdf<double>(n1, n2, k);
  } else {
    res.method = "asymptotic";
    const double mu = static_cast<double>(n1 * n2) / 2;
    const double nd = static_cast<double>(n);
    const double s = std::sqrt(static_cast<double>(n1 * n2) / 12 * ((nd + 1) - tie_term / (nd * (nd - 1))));
    double numerator = res.u - mu;
    numerator -= 0.5;  // continuity correction; SciPy always takes the survival function, so always minus
    res.p_value = normal_sf(numerator / s);
  }
  res.p_value = std::clamp(res.p_value, 0.0, 1.0);
  return res;
}

std::vector<double> holm_adjust(const std::vector<double>& p_values) {
  std::vector<int64_t> order;
  for (size_t i = 0; i < p_values.size(); ++i) {
    const double p = p_values[i];
    if (std::isnan(p)) continue;
    if (p < 0 || p > 1) throw Error("holm_adjust: p-values must be in [0, 1]");
    order.push_back(static_cast<int64_t>(i));
  }
  std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) {
    return p_values[static_cast<size_t>(i)] < p_values[static_cast<size_t>(j)];
  });
  std::vector<double> adjusted(p_values.size(), kNaN);
  const auto m = static_cast<int64_t>(order.size());
  double running = 0;
  for (int64_t rank = 0; rank < m; ++rank) {
    const auto i = static_cast<size_t>(order[static_cast<size_t>(rank)]);
    running = std::max(running, std::min(1.0, static_cast<double>(m - rank) * p_values[i]));
    adjusted[i] = running;
  }
  return adjusted;
}

double quantile(std::vector<double> values, double q) {
  if (values.empty()) throw Error("quantile: no values");
  if (!(q >= 0 && q <= 1)) throw Error("quantile: q must be in [0, 1]");
  for (const double v : values)
    if (std::isnan(v)) return kNaN;
  std::sort(values.begin(), values.end());
  return quantile_sorted(values, q);
}

double normal_cdf(double z) {
  if (std::isnan(z)) return kNaN;
  return boost::math::cdf(Normal(), z);
}

double normal_quantile(double p) {
  if (!(p >= 0 && p <= 1)) return kNaN;
  if (p == 0) return -kInf;
  if (p == 1) return kInf;
  return boost::math::quantile(Normal(), p);
}

}  // namespace husai::stats
