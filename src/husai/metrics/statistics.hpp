#pragma once

// Seed-level statistics for stability studies (REFERENCE.md section 5 lists what the reference got wrong).
//
// The unit of replication is the seed, not the pair: n SAEs give n(n-1)/2 pairwise similarities that share
// seeds, so they are not independent samples. Every interval here resamples seeds, every test permutes
// seed labels. The Mann-Whitney U on pairwise values is kept only for comparability with the reference.
//
// A "similarity matrix" is an n x n symmetric matrix (row-major, double) of a pairwise score between n
// dictionaries; the diagonal is ignored. All random draws use Philox(seed, stream) so results are a pure
// function of the inputs and the seed (independent of the thread count).

#include <cstdint>
#include <string>
#include <vector>

namespace husai::stats {

struct SimilarityMatrix {
  int64_t n = 0;
  std::vector<double> values;  // [n * n], symmetric; the diagonal is not read
  double at(int64_t i, int64_t j) const { return values[static_cast<size_t>(i * n + j)]; }
};

// Mean over distinct pairs (i < j) of all n seeds.
double mean_pairwise(const SimilarityMatrix& sim);

// Mean over the pairs (p < q) of positions of a seed multiset (indices into sim, repeats allowed) whose
// seeds differ: the statistic of one bootstrap resample. Pairs of a seed with itself are skipped.
double mean_pairwise_resample(const SimilarityMatrix& sim, const std::vector<int64_t>& seeds);

struct Interval {
  double lo = 0;
  double hi = 0;
};

struct BootstrapResult {
  double estimate = 0;        // statistic on the data as given (mean over distinct pairs)
  double standard_error = 0;  // standard deviation (ddof 1) of the bootstrap statistics
  Interval percentile;        // percentile interval at `confidence`
  Interval bca;  // bias-corrected and accelerated (Efron 1987; acceleration by leave-one-seed-out jackknife)
  int64_t n_resamples = 0;
  int64_t n_redrawn = 0;  // resamples redrawn because they held fewer than two distinct seeds
  double confidence = 0.95;
};

// Seed bootstrap of the mean pairwise similarity: draw n seeds with replacement (redraw a draw with fewer
// than two distinct seeds), statistic = mean_pairwise_resample. Needs n >= 2; with n == 2 the interval is
// degenerate (one value) and says so by lo == hi. Quantiles use linear interpolation (numpy's default).
// BCa follows scipy.stats.bootstrap(method="BCa") given the same bootstrap distribution, except where SciPy
// returns NaN: an acceleration without jackknife spread is 0, and an estimate outside the whole bootstrap
// distribution (z0 = -inf or +inf) takes the formula's limit, both BCa levels 0 or 1.
BootstrapResult seed_bootstrap(const SimilarityMatrix& sim, int64_t n_resamples, double confidence,
                               uint64_t seed);

// Bootstrap of a difference of two groups' mean pairwise similarity (e.g. trained - null): each group's
// seeds are resampled independently within the group; the statistic is mean(a) - mean(b). BCa uses the
// jackknife over the seeds of both groups.
BootstrapResult seed_bootstrap_difference(const SimilarityMatrix& a, const SimilarityMatrix& b,
                                          int64_t n_resamples, double confidence, uint64_t seed);

// Everything behind a BootstrapResult, for tests and diagnostics (docs/statistics.md has the formulas).
struct BootstrapDetail {
  BootstrapResult result;
  std::vector<double> statistics;  // [n_resamples] the bootstrap distribution, in resample order
  std::vector<double> jackknife;   // leave-one-seed-out statistics: group A's seeds, then group B's
  double z0 = 0;                   // bias correction, ndtri of the fraction below the estimate (ties 1/2)
  double acceleration = 0;         // from the jackknife; 0 when it has no spread or n < 3
};
BootstrapDetail seed_bootstrap_detail(const SimilarityMatrix& sim, int64_t n_resamples, double confidence,
                                      uint64_t seed);
BootstrapDetail seed_bootstrap_difference_detail(const SimilarityMatrix& a, const SimilarityMatrix& b,
                                                 int64_t n_resamples, double confidence, uint64_t seed);

// The seed indices (in draw order, after any redraws) of resample `resample` of a group of n_seeds, as the
// bootstrap above draws them: group 0 is seed_bootstrap's group and seed_bootstrap_difference's `a`, group 1
// is `b`. `n_redrawn`, when given, receives the number of rejected draws before it.
std::vector<int64_t> bootstrap_resample_seeds(int64_t n_seeds, uint64_t seed, int64_t resample, int group = 0,
                                              int64_t* n_redrawn = nullptr);

struct PermutationResult {
  double observed = 0;           // mean within-group pairwise similarity of group A minus that of group B
  double p_value = 0;            // one-sided: P(statistic >= observed) under exchangeable labels
  double p_value_two_sided = 0;  // P(|statistic| >= |observed|)
  bool exact = false;            // all C(n_a + n_b, n_a) labelings enumerated
  int64_t n_permutations = 0;    // labelings evaluated (the observed one included)
};

// Permutation test over seed labels. `pooled` is the similarity matrix of all n_a + n_b dictionaries, the
// first n_a of group A (trained), the rest of group B (null). Exact when C(n_a + n_b, n_a) <= max_exact,
// else Monte Carlo with `n_resamples` random labelings, p = (1 + #{stat >= observed}) / (1 + n_resamples).
// Ties count as "at least as extreme" up to 1e-12 relative to the data's scale: stat >= observed - tol with
// tol = 1e-12 * max(|observed|, largest off-diagonal |value|). Needs n_a >= 2 and n_b >= 2.
PermutationResult permutation_test(const SimilarityMatrix& pooled, int64_t n_a, int64_t n_resamples,
                                   uint64_t seed, int64_t max_exact = 100000);

// Cohen's d of two samples: (mean(x) - mean(y)) / pooled standard deviation (ddof 1 in each group).
// Returns +-inf when the pooled deviation is 0 and the means differ, 0 when both are equal, NaN when it is
// undefined (an empty sample, or one value in each).
double cohens_d(const std::vector<double>& x, const std::vector<double>& y);

struct MannWhitneyResult {
  double u = 0;  // U statistic of x (SciPy's U1: number of (x_i, y_j) with x_i > y_j, ties counting 1/2)
  double p_value = 0;  // one-sided, alternative "x greater than y"
  std::string method;  // "exact" or "asymptotic"
};

// One-sided Mann-Whitney U test, alternative: x tends to be greater than y. Matches
// scipy.stats.mannwhitneyu(x, y, alternative="greater", method="auto") of SciPy 1.10 (Debian bookworm): the
// exact distribution when there are no ties and at least one sample has at most 8 values (SciPy uses the
// normal approximation only when both exceed 8; its docstring's "less than 8" is not what its code does),
// else the normal approximation with tie correction and continuity correction. Both samples non-empty, no
// NaN.
MannWhitneyResult mann_whitney_greater(const std::vector<double>& x, const std::vector<double>& y);

// Holm's step-down adjustment of p-values (same order as given; adjusted values are monotone and capped
// at 1), as statsmodels' multipletests(method="holm"). NaN entries stay NaN and do not count as tests.
std::vector<double> holm_adjust(const std::vector<double>& p_values);

// Quantile with linear interpolation between order statistics (numpy.quantile's default, including its
// interpolation formula), q in [0, 1]. NaN if any value is NaN.
double quantile(std::vector<double> values, double q);

// Standard normal cumulative distribution and its inverse (Boost.Math); normal_quantile(0) = -inf,
// normal_quantile(1) = +inf, NaN outside [0, 1].
double normal_cdf(double z);
double normal_quantile(double p);

}  // namespace husai::stats
