#pragma once

// Ground truth for modular-addition SAE features (issue 11): which decoder atoms are a lookup table of the
// answer, which lie in the key-frequency (Fourier) subspace of Nanda et al. 2023, and how stable each kind
// is; plus within-dictionary duplicates.
//
// Shapes: N activation rows of width d (= d_in), p = modulus answer classes, F = d_sae features.
//
//   answer-centroid direction of class c   unit(mean of the rows whose answer is c - mean of all rows)   [p,
//   d] centroid |cos| of a feature            max_c |cos(d_i, centroid_c)| Fourier alignment of a feature
//   ||P_S d_i|| (metrics/fourier.hpp; S = the key-frequency subspace) label centroid if centroid |cos| >
//   centroid_threshold (0.8), else
//                                           fourier if alignment >= fourier_threshold (0.8), else other
//   duplicate fraction                      fraction of atoms whose nearest other atom of the same
//                                           dictionary has |cos| > threshold (0.9)
//   deduplication                           greedy in index order: keep atom i unless |cos| with an already
//                                           kept atom exceeds the threshold (0.9)
// Per-latent firing frequency on activation rows is ReconstructionMetrics::feature_density()
// (metrics/sae_eval.hpp: sae_reconstruction_metrics(sae, x, n_rows).feature_density()).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "husai/metrics/fourier.hpp"
#include "husai/metrics/stability.hpp"

namespace husai {

// Per-row operands and answer of an activation file written by `husai extract --position answer`: the
// tensors "a", "b" and "labels" (c = (a op b) mod p) and the metadata "modulus". Throws husai::Error naming
// the file when the metadata says another position (e.g. "all": rows are then pair-major with several
// positions per pair), when modulus or a tensor is missing, when the lengths differ from each other or from
// n_rows (n_rows < 0: not checked), or a value lies outside [0, p).
struct AnswerRows {
  int64_t modulus = 0;
  std::vector<int64_t> a, b, c;  // [N]
};
AnswerRows load_answer_rows(const std::string& activations_path, int64_t n_rows = -1);

// The answer-centroid directions of x [n_rows, d] (row-major) with answer c[r] in [0, n_classes): row c of
// the result is the mean of the rows of class c minus the mean of all rows, unit-normalised (a class whose
// mean equals the grand mean gives a zero row). Sums in double in row order. Throws husai::Error when c has
// the wrong length or a value out of range, or a class has no rows.
FeatureSet answer_centroid_directions(const float* x, int64_t n_rows, int64_t d,
                                      const std::vector<int64_t>& c, int64_t n_classes);

// ||P_S f_i|| for each feature, S the range of `component` (its orthonormal basis rows), in double; all
// zeros when the component has rank 0. Throws husai::Error when the dimensions differ.
std::vector<double> fourier_alignment(const FeatureSet& features, const FourierComponent& component);

enum class FeatureLabel { Centroid, Fourier, Other };
std::string_view feature_label_name(FeatureLabel label);  // "centroid", "fourier", "other"

struct FeatureLabelOptions {
  double centroid_threshold = 0.8;  // centroid when the best centroid |cos| is strictly above
  double fourier_threshold = 0.8;   // fourier when the alignment is at or above
};

struct FeatureLabels {
  std::vector<FeatureLabel> label;        // [F]
  std::vector<double> centroid_cos;       // [F]: max_c |cos(d_i, centroid_c)|
  std::vector<int64_t> centroid_index;    // [F]: the argmax c (lowest c on ties)
  std::vector<double> fourier_alignment;  // [F]: ||P_S d_i||
  // Feature counts per label, in FeatureLabel order.
  std::vector<int64_t> counts() const;
  // The label of each feature as a group id (its FeatureLabel value: 0 centroid, 1 fourier, 2 other), for
  // stability_by_group(stability, labels.groups(), 3).
  std::vector<int64_t> groups() const;
};

// Labels the features (decoder atoms) of one dictionary. The centroid test comes first because it is the
// more specific one: a network computing through key frequencies has class means that are themselves
// functions of cos/sin(2 pi f c / p), so a centroid direction lies mostly inside S and an atom aligned with
// one is usually Fourier-aligned too. "fourier" therefore means "in the key-frequency subspace without being
// a single answer's direction"; the reverse order would hide every lookup-table atom under "fourier".
FeatureLabels label_features(const FeatureSet& decoder, const FeatureSet& centroids,
                             const FourierComponent& fourier, const FeatureLabelOptions& options = {});

// Mean, median and count of per-feature values in each group 0 .. n_groups - 1 (mean and median NaN for an
// empty group; the median of an even count is the mean of the two middle values). Sums in double in index
// order. Throws husai::Error when the lengths differ or a group id is outside [0, n_groups).
struct GroupSummary {
  int64_t group = 0;
  int64_t count = 0;
  double mean = 0;
  double median = 0;
};
std::vector<GroupSummary> stability_by_group(const std::vector<double>& values,
                                             const std::vector<int64_t>& group, int64_t n_groups);

// The decile (more generally, one of n_bins rank bins) of each latent by firing frequency: latents sorted by
// increasing frequency, ties in index order (a stable sort), rank r goes to bin floor(r * n_bins / n).
// Dead latents (frequency 0) fill the lowest bins. Throws husai::Error for n_bins < 1.
std::vector<int64_t> frequency_bins(const std::vector<double>& firing_frequency, int64_t n_bins = 10);

// stability_by_group(stability, frequency_bins(firing_frequency, n_bins), n_bins): bin 0 = the rarest
// latents.
std::vector<GroupSummary> stability_by_frequency_bin(const std::vector<double>& stability,
                                                     const std::vector<double>& firing_frequency,
                                                     int64_t n_bins = 10);

inline constexpr double kDuplicateThreshold = 0.9;

// Fraction of features whose within-dictionary nearest neighbour (nearest_neighbour_abs_cos) has |cos| >
// threshold. 0 for an empty dictionary.
double duplicate_fraction(const FeatureSet& features, double threshold = kDuplicateThreshold);

// Greedy deduplication in index order: feature i is kept unless its |cos| with an already kept feature
// exceeds threshold. Returns the kept indices, ascending (feature 0 is always kept). Blockwise like
// nearest_neighbour_abs_cos: memory kNearestNeighbourBlock * F floats, result independent of thread count.
std::vector<int64_t> deduplicate_features(const FeatureSet& features, double threshold = kDuplicateThreshold);

// The features at `indices` (in that order), e.g. the kept ones, for pair_stability between deduplicated
// dictionaries. Throws husai::Error for an index out of range.
FeatureSet select_features(const FeatureSet& features, const std::vector<int64_t>& indices);

}  // namespace husai
