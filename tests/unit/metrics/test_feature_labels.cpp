// Ground-truth feature labels, stability by group and by firing-frequency bin, duplicates and greedy
// deduplication, on planted dictionaries whose answers are known by construction.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/metrics/feature_labels.hpp"
#include "husai/metrics/nulls.hpp"

namespace husai {
namespace {

double at(const std::vector<float>& v, int64_t k) {
  return static_cast<double>(v[static_cast<size_t>(k)]);
}

std::vector<float> basis_vector(int64_t d, int64_t k, float scale = 1.0f) {
  std::vector<float> v(static_cast<size_t>(d), 0.0f);
  v[static_cast<size_t>(k)] = scale;
  return v;
}

TEST(FeatureLabels, AnswerCentroidsByHand) {
  // 3 classes in R^2: class means (1,0), (0,2), (-1,-2) over rows (2, 1, 1 rows); grand mean of the 4 rows
  // (0.25, 0.5) ... computed here by hand: rows (0,0), (2,0) [class 0], (0,2) [1], (-1,-2) [2].
  const std::vector<float> x = {0, 0, 2, 0, 0, 2, -1, -2};
  const std::vector<int64_t> c = {0, 0, 1, 2};
  const FeatureSet dirs = answer_centroid_directions(x.data(), 4, 2, c, 3);
  ASSERT_EQ(dirs.n_features, 3);
  // grand mean = (1/4, 0); class 0: (1,0)-(1/4,0) = (3/4, 0) -> (1, 0); class 1: (-1/4, 2) -> /sqrt(4.0625);
  // class 2: (-5/4, -2) -> /sqrt(5.5625).
  EXPECT_NEAR(at(dirs.rows, 0), 1.0, 1e-7);
  EXPECT_NEAR(at(dirs.rows, 1), 0.0, 1e-7);
  EXPECT_NEAR(at(dirs.rows, 2), -0.25 / std::sqrt(4.0625), 1e-7);
  EXPECT_NEAR(at(dirs.rows, 3), 2.0 / std::sqrt(4.0625), 1e-7);
  EXPECT_NEAR(at(dirs.rows, 4), -1.25 / std::sqrt(5.5625), 1e-7);
  EXPECT_NEAR(at(dirs.rows, 5), -2.0 / std::sqrt(5.5625), 1e-7);
  EXPECT_THROW(answer_centroid_directions(x.data(), 4, 2, c, 4), Error);  // class 3 has no rows
  EXPECT_THROW(answer_centroid_directions(x.data(), 4, 2, {0, 0, 1, 5}, 3), Error);
  EXPECT_THROW(answer_centroid_directions(x.data(), 4, 2, {0, 1}, 3), Error);
}

TEST(FeatureLabels, PlantedCentroidFourierAndOtherAtoms) {
  // R^12, p = 4 classes. Class means are 3 e_c for c = 0..3 (the grand mean is subtracted, so the centroid
  // directions are unit(3 e_c - 0.75 sum e)); the "Fourier" subspace is span(e_0 - e_1, e_8, e_9), rank 3.
  const int64_t D = 12, p = 4, n = 40;
  std::vector<float> x(static_cast<size_t>(n * D), 0.0f);
  std::vector<int64_t> c(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    c[static_cast<size_t>(r)] = r % p;
    x[static_cast<size_t>(r * D + r % p)] = 3.0f;
    x[static_cast<size_t>(r * D + 10)] = static_cast<float>(r % 5) - 2.0f;  // class-independent noise
  }
  const FeatureSet centroids = answer_centroid_directions(x.data(), n, D, c, p);
  FourierComponent fourier;
  fourier.rank = 3;
  fourier.basis.assign(static_cast<size_t>(3 * D), 0.0);
  fourier.basis[0] = 1 / std::sqrt(2.0);
  fourier.basis[1] = -1 / std::sqrt(2.0);
  fourier.basis[static_cast<size_t>(D + 8)] = 1.0;
  fourier.basis[static_cast<size_t>(2 * D + 9)] = 1.0;

  std::vector<float> w;
  for (int64_t k = 0; k < p; ++k) {  // atoms 0..3: the exact centroid directions, atom 1 negated and scaled
    for (int64_t j = 0; j < D; ++j)
      w.push_back((k == 1 ? -2.0f : 1.0f) * centroids.rows[static_cast<size_t>(k * D + j)]);
  }
  const std::vector<float> e8 = basis_vector(D, 8), e9 = basis_vector(D, 9);
  w.insert(w.end(), e8.begin(), e8.end());               // atom 4: fourier, alignment 1
  std::vector<float> mix(static_cast<size_t>(D), 0.0f);  // atom 5: e_8 + 0.2 e_11 -> alignment 0.98
  mix[8] = 1.0f;
  mix[11] = 0.2f;
  w.insert(w.end(), mix.begin(), mix.end());
  const std::vector<float> e11 = basis_vector(D, 11);  // atom 6: orthogonal to everything -> other
  w.insert(w.end(), e11.begin(), e11.end());
  std::vector<float> weak(static_cast<size_t>(D), 0.0f);  // atom 7: alignment 0.85 -> fourier
  weak[9] = 0.85f;
  weak[11] = static_cast<float>(std::sqrt(1 - 0.85 * 0.85));
  w.insert(w.end(), weak.begin(), weak.end());
  // atom 8: e_0 - e_1 + e_8: Fourier alignment 1, centroid |cos| 3 / (sqrt(3) sqrt(6.75)) = 0.667 with class
  // 0.
  std::vector<float> e0e1(static_cast<size_t>(D), 0.0f);
  e0e1[0] = 1.0f;
  e0e1[1] = -1.0f;
  e0e1[8] = 1.0f;
  w.insert(w.end(), e0e1.begin(), e0e1.end());
  const FeatureSet dec = features_from_rows(w.data(), 9, D);

  const FeatureLabels labels = label_features(dec, centroids, fourier);
  const std::vector<FeatureLabel> want = {
      FeatureLabel::Centroid, FeatureLabel::Centroid, FeatureLabel::Centroid,
      FeatureLabel::Centroid, FeatureLabel::Fourier,  FeatureLabel::Fourier,
      FeatureLabel::Other,    FeatureLabel::Fourier,  FeatureLabel::Fourier};
  EXPECT_EQ(labels.label, want);
  for (int64_t k = 0; k < p; ++k) {
    EXPECT_NEAR(labels.centroid_cos[static_cast<size_t>(k)], 1.0, 1e-6);
    EXPECT_EQ(labels.centroid_index[static_cast<size_t>(k)], k);
  }
  // Centroid 0 = unit(2.25, -.75, -.75, -.75): alignment with span(e0 - e1) = |2.25 + .75| / sqrt(2) / |c|.
  const double c0_align = 3.0 / std::sqrt(2.0) / std::sqrt(2.25 * 2.25 + 3 * 0.75 * 0.75);
  EXPECT_NEAR(labels.fourier_alignment[0], c0_align, 1e-6);
  EXPECT_GT(c0_align, 0.8);  // so atom 0 is both, and the order puts it under centroid
  EXPECT_NEAR(labels.fourier_alignment[5], 1.0 / std::sqrt(1.04), 1e-6);
  EXPECT_NEAR(labels.fourier_alignment[6], 0.0, 1e-12);
  EXPECT_NEAR(labels.fourier_alignment[7], 0.85, 1e-6);
  EXPECT_NEAR(labels.fourier_alignment[8], 1.0, 1e-6);
  EXPECT_NEAR(labels.centroid_cos[8], 3.0 / std::sqrt(3.0) / std::sqrt(6.75), 1e-6);
  EXPECT_EQ(labels.centroid_index[8], 0);
  EXPECT_EQ(labels.counts(), (std::vector<int64_t>{4, 4, 1}));
  EXPECT_EQ(labels.groups(), (std::vector<int64_t>{0, 0, 0, 0, 1, 1, 2, 1, 1}));
  EXPECT_EQ(feature_label_name(FeatureLabel::Centroid), "centroid");
  EXPECT_EQ(feature_label_name(FeatureLabel::Fourier), "fourier");
  EXPECT_EQ(feature_label_name(FeatureLabel::Other), "other");

  // Thresholds are parameters: at 0.99 for Fourier, atom 5 (0.98) and atom 7 (0.85) become other; with a
  // centroid threshold of 0.6, atom 8 (0.667 with centroid 0) becomes centroid.
  FeatureLabelOptions strict;
  strict.fourier_threshold = 0.99;
  strict.centroid_threshold = 0.6;
  const FeatureLabels s = label_features(dec, centroids, fourier, strict);
  EXPECT_EQ(s.label[5], FeatureLabel::Other);
  EXPECT_EQ(s.label[7], FeatureLabel::Other);
  EXPECT_EQ(s.label[8], FeatureLabel::Centroid);
  EXPECT_EQ(s.label[4], FeatureLabel::Fourier);
}

TEST(FeatureLabels, RandomAtomsInHighDimensionAreOther) {
  // 113 centroid-like random directions and a rank-12 subspace in R^128: random atoms fall below both
  // thresholds (expected best |cos| about 0.3, alignment about sqrt(12 / 128) = 0.31).
  const int64_t D = 128;
  const std::vector<float> cen = gaussian_null_decoder(113, D, 1);
  const FeatureSet centroids = features_from_rows(cen.data(), 113, D);
  FourierComponent fourier;
  fourier.rank = 12;
  const std::vector<double> q = haar_orthogonal(D, 2);
  fourier.basis.assign(q.begin(), q.begin() + 12 * D);  // 12 orthonormal rows
  const std::vector<float> atoms = gaussian_null_decoder(500, D, 3);
  const FeatureLabels labels = label_features(features_from_rows(atoms.data(), 500, D), centroids, fourier);
  EXPECT_EQ(labels.counts(), (std::vector<int64_t>{0, 0, 500}));
}

TEST(FeatureLabels, StabilityByGroupAndFrequencyBins) {
  const std::vector<double> v = {0.9, 0.1, 0.5, 0.3, 0.7, 0.2};
  const std::vector<int64_t> g = {0, 1, 0, 1, 0, 1};
  const std::vector<GroupSummary> s = stability_by_group(v, g, 3);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].count, 3);
  EXPECT_NEAR(s[0].mean, 0.7, 1e-15);
  EXPECT_DOUBLE_EQ(s[0].median, 0.7);
  EXPECT_EQ(s[1].count, 3);
  EXPECT_NEAR(s[1].mean, 0.2, 1e-15);
  EXPECT_DOUBLE_EQ(s[1].median, 0.2);
  EXPECT_EQ(s[2].count, 0);
  EXPECT_TRUE(std::isnan(s[2].mean) && std::isnan(s[2].median));
  const std::vector<GroupSummary> even = stability_by_group({0.1, 0.4, 0.2, 0.8}, {0, 0, 0, 0}, 1);
  EXPECT_DOUBLE_EQ(even[0].median, 0.3);
  EXPECT_THROW(stability_by_group(v, {0, 1}, 2), Error);
  EXPECT_THROW(stability_by_group(v, {0, 1, 0, 1, 0, 2}, 2), Error);

  // 20 latents, 10 bins: two per bin by rank. Ties (the five zeros, the equal 0.5s) go in index order.
  const std::vector<double> freq = {0.5,  0,   0.9, 0,   0.1, 0.5, 0,    0.3,  0.2,  0,
                                    0.05, 0.6, 0.7, 0.8, 0.5, 0,   0.95, 0.25, 0.35, 0.45};
  const std::vector<int64_t> bins = frequency_bins(freq, 10);
  // Rank order: 1,3,6,9,15 (zeros) | 10 (.05), 4 (.1), 8 (.2), 17 (.25), 7 (.3), 18 (.35), 19 (.45), 0, 5, 14
  // (.5 ties in index order), 11 (.6), 12 (.7), 13 (.8), 2 (.9), 16 (.95).
  std::vector<int64_t> rank_bins(20);
  const std::vector<int64_t> order = {1, 3, 6, 9, 15, 10, 4, 8, 17, 7, 18, 19, 0, 5, 14, 11, 12, 13, 2, 16};
  for (int64_t r = 0; r < 20; ++r) rank_bins[static_cast<size_t>(order[static_cast<size_t>(r)])] = r / 2;
  EXPECT_EQ(bins, rank_bins);
  const std::vector<GroupSummary> by_bin = stability_by_frequency_bin(freq, freq, 10);
  EXPECT_EQ(by_bin[0].count, 2);
  EXPECT_DOUBLE_EQ(by_bin[0].mean, 0.0);
  EXPECT_NEAR(by_bin[9].mean, 0.925, 1e-15);
  // Uneven split: 7 latents in 3 bins -> ranks 0-2 bin 0, 3-4 bin 1, 5-6 bin 2 (floor(r * 3 / 7)).
  EXPECT_EQ(frequency_bins({6, 5, 4, 3, 2, 1, 0}, 3), (std::vector<int64_t>{2, 2, 1, 1, 0, 0, 0}));
  EXPECT_THROW(frequency_bins(freq, 0), Error);
}

TEST(FeatureLabels, PlantedDuplicatesAndGreedyDeduplication) {
  // R^32: atoms 0..9 = e_0..e_9; atom 10 = cos 0.95 to e_3; atom 11 = -e_5 (|cos| 1); atom 12 = cos 0.85 to
  // e_7 (not a duplicate at 0.9). Duplicates: 3, 5, 10, 11 -> 4 / 13.
  const int64_t D = 32;
  std::vector<float> w;
  for (int64_t k = 0; k < 10; ++k) {
    const std::vector<float> e = basis_vector(D, k);
    w.insert(w.end(), e.begin(), e.end());
  }
  auto tilted = [&](int64_t k, double cos) {
    std::vector<float> v(static_cast<size_t>(D), 0.0f);
    v[static_cast<size_t>(k)] = static_cast<float>(cos);
    v[20] = static_cast<float>(std::sqrt(1 - cos * cos));
    return v;
  };
  for (const std::vector<float>& v : {tilted(3, 0.95), basis_vector(D, 5, -1.0f), tilted(7, 0.85)}) {
    w.insert(w.end(), v.begin(), v.end());
  }
  const FeatureSet f = features_from_rows(w.data(), 13, D);
  EXPECT_DOUBLE_EQ(duplicate_fraction(f), 4.0 / 13.0);
  EXPECT_DOUBLE_EQ(duplicate_fraction(f, 0.8), 6.0 / 13.0);  // 7 and 12 join at 0.8
  const std::vector<int64_t> kept = deduplicate_features(f);
  EXPECT_EQ(kept, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12}));
  const FeatureSet sub = select_features(f, kept);
  EXPECT_EQ(sub.n_features, 11);
  EXPECT_EQ(std::vector<float>(sub.rows.end() - D, sub.rows.end()),
            std::vector<float>(f.rows.end() - D, f.rows.end()));
  EXPECT_THROW(select_features(f, {13}), Error);

  // Greedy, not transitive: a ~ b (0.95), b ~ c (0.95), a . c = 0.805: keep a, drop b, keep c.
  const double t = std::acos(0.95);
  const std::vector<float> chain = {1,
                                    0,
                                    0,
                                    static_cast<float>(std::cos(t)),
                                    static_cast<float>(std::sin(t)),
                                    0,
                                    static_cast<float>(std::cos(2 * t)),
                                    static_cast<float>(std::sin(2 * t)),
                                    0};
  EXPECT_EQ(deduplicate_features(features_from_rows(chain.data(), 3, 3)), (std::vector<int64_t>{0, 2}));
  EXPECT_DOUBLE_EQ(duplicate_fraction(features_from_rows(chain.data(), 3, 3)), 1.0);
}

TEST(FeatureLabels, DeduplicationAcrossBlocksMatchesBruteForce) {
  // 700 atoms in R^16 (random atoms in 16 dimensions often exceed 0.9 with some other one), three blocks.
  const int64_t F = 700, D = 16;
  std::vector<float> w = gaussian_null_decoder(F, D, 8);
  for (int64_t k = 0; k < D; ++k) w[static_cast<size_t>(650 * D + k)] = w[static_cast<size_t>(10 * D + k)];
  const FeatureSet f = features_from_rows(w.data(), F, D);
  std::vector<int64_t> want;
  for (int64_t i = 0; i < F; ++i) {
    bool keep = true;
    for (const int64_t j : want) {
      double s = 0;
      for (int64_t k = 0; k < D; ++k) s += at(f.rows, i * D + k) * at(f.rows, j * D + k);
      if (std::fabs(s) > 0.9) keep = false;
    }
    if (keep) want.push_back(i);
  }
  const std::vector<int64_t> kept = deduplicate_features(f);
  EXPECT_EQ(kept, want);
  EXPECT_LT(kept.size(), static_cast<size_t>(F));
  EXPECT_EQ(std::find(kept.begin(), kept.end(), 650), kept.end());
}

TEST(FeatureLabels, LoadAnswerRows) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "husai_test_answer_rows";
  std::filesystem::create_directories(dir);
  const std::vector<float> x(static_cast<size_t>(9 * 2), 1.0f);
  std::vector<int64_t> a, b, c;
  for (int64_t r = 0; r < 9; ++r) {
    a.push_back(r / 3);
    b.push_back(r % 3);
    c.push_back((r / 3 + r % 3) % 3);
  }
  auto write = [&](const std::string& name, const std::map<std::string, std::string>& meta, bool with_b) {
    SafetensorsFile f;
    f.put("activations", TensorData::f32({9, 2}, x.data()));
    f.put("a", TensorData::i64({9}, a.data()));
    if (with_b) f.put("b", TensorData::i64({9}, b.data()));
    f.put("labels", TensorData::i64({9}, c.data()));
    f.metadata = meta;
    const std::string path = (dir / name).string();
    f.save(path);
    return path;
  };
  const AnswerRows rows =
      load_answer_rows(write("ok.safetensors", {{"position", "answer"}, {"modulus", "3"}}, true), 9);
  EXPECT_EQ(rows.modulus, 3);
  EXPECT_EQ(rows.a, a);
  EXPECT_EQ(rows.b, b);
  EXPECT_EQ(rows.c, c);
  EXPECT_THROW(load_answer_rows(write("all.safetensors", {{"position", "all"}, {"modulus", "3"}}, true)),
               Error);
  EXPECT_THROW(load_answer_rows(write("nomod.safetensors", {{"position", "answer"}}, true)), Error);
  EXPECT_THROW(load_answer_rows(write("nob.safetensors", {{"modulus", "3"}}, false)), Error);
  EXPECT_THROW(load_answer_rows(write("small.safetensors", {{"modulus", "2"}}, true)), Error);  // c = 2 >= 2
  EXPECT_THROW(load_answer_rows(write("ok2.safetensors", {{"modulus", "3"}}, true), 10), Error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace husai
