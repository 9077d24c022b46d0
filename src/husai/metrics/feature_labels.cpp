#include "husai/metrics/feature_labels.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "husai/core/error.hpp"
#include "husai/core/gemm.hpp"
#include "husai/io/safetensors.hpp"

namespace husai {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::vector<int64_t> tensor_1d(const SafetensorsFile& f, const std::string& name, const std::string& path) {
  if (!f.has(name)) {
    throw Error("tensor '" + name + "' is missing: per-row operands and answers come from `husai extract`")
        .file(path);
  }
  const TensorData& t = f.get(name);
  if (t.shape.size() != 1) throw Error("tensor '" + name + "' must be 1-D").file(path);
  if (!dtype_is_integer(t.dtype)) throw Error("tensor '" + name + "' must hold integers").file(path);
  return t.to_i64();
}

}  // namespace

AnswerRows load_answer_rows(const std::string& activations_path, int64_t n_rows) {
  const std::string& path = activations_path;
  const SafetensorsFile f = SafetensorsFile::load(path);
  if (auto it = f.metadata.find("position"); it != f.metadata.end() && it->second != "answer") {
    throw Error("the activations are at position '" + it->second +
                "', not the answer position: answer labels need `husai extract --position answer`")
        .file(path);
  }
  const auto mod = f.metadata.find("modulus");
  if (mod == f.metadata.end()) throw Error("metadata 'modulus' is missing").file(path);
  AnswerRows rows;
  try {
    size_t used = 0;
    rows.modulus = std::stoll(mod->second, &used);
    if (used != mod->second.size()) throw std::invalid_argument("trailing");
  } catch (const std::exception&) {
    throw Error("metadata 'modulus' is not an integer: '" + mod->second + "'").file(path);
  }
  if (rows.modulus < 2) throw Error("metadata 'modulus' must be >= 2").file(path);
  rows.a = tensor_1d(f, "a", path);
  rows.b = tensor_1d(f, "b", path);
  rows.c = tensor_1d(f, "labels", path);
  const auto n = static_cast<int64_t>(rows.c.size());
  if (static_cast<int64_t>(rows.a.size()) != n || static_cast<int64_t>(rows.b.size()) != n) {
    throw Error("tensors 'a', 'b' and 'labels' have different lengths").file(path);
  }
  if (n_rows >= 0 && n != n_rows) {
    throw Error("'labels' has " + std::to_string(n) + " entries for " + std::to_string(n_rows) +
                " activation rows")
        .file(path);
  }
  for (const auto* v : {&rows.a, &rows.b, &rows.c}) {
    for (size_t r = 0; r < v->size(); ++r) {
      if ((*v)[r] < 0 || (*v)[r] >= rows.modulus) {
        throw Error("row " + std::to_string(r) + " (0-based) has an operand or answer outside [0, " +
                    std::to_string(rows.modulus) + ")")
            .file(path);
      }
    }
  }
  return rows;
}

FeatureSet answer_centroid_directions(const float* x, int64_t n_rows, int64_t d,
                                      const std::vector<int64_t>& c, int64_t n_classes) {
  if (static_cast<int64_t>(c.size()) != n_rows) throw Error("answer centroids: one class per row is needed");
  if (n_classes < 1) throw Error("answer centroids: no classes");
  std::vector<double> sums(static_cast<size_t>(n_classes * d), 0.0);
  std::vector<double> grand(static_cast<size_t>(d), 0.0);
  std::vector<int64_t> counts(static_cast<size_t>(n_classes), 0);
  for (int64_t r = 0; r < n_rows; ++r) {
    const int64_t k = c[static_cast<size_t>(r)];
    if (k < 0 || k >= n_classes) {
      throw Error("answer centroids: row " + std::to_string(r) + " has class " + std::to_string(k) +
                  " outside [0, " + std::to_string(n_classes) + ")");
    }
    ++counts[static_cast<size_t>(k)];
    for (int64_t j = 0; j < d; ++j) {
      const auto v = static_cast<double>(x[r * d + j]);
      sums[static_cast<size_t>(k * d + j)] += v;
      grand[static_cast<size_t>(j)] += v;
    }
  }
  for (double& g : grand) g /= static_cast<double>(n_rows);
  std::vector<float> dirs(static_cast<size_t>(n_classes * d));
  for (int64_t k = 0; k < n_classes; ++k) {
    const int64_t count = counts[static_cast<size_t>(k)];
    if (count == 0) throw Error("answer centroids: class " + std::to_string(k) + " has no rows");
    std::vector<double> dir(static_cast<size_t>(d));
    double norm2 = 0;
    for (int64_t j = 0; j < d; ++j) {
      const double v =
          sums[static_cast<size_t>(k * d + j)] / static_cast<double>(count) - grand[static_cast<size_t>(j)];
      dir[static_cast<size_t>(j)] = v;
      norm2 += v * v;
    }
    const double inv = norm2 > 0 ? 1.0 / std::sqrt(norm2) : 0.0;
    for (int64_t j = 0; j < d; ++j)
      dirs[static_cast<size_t>(k * d + j)] = static_cast<float>(dir[static_cast<size_t>(j)] * inv);
  }
  // features_from_rows renormalises the float rows (a no-op up to rounding) and keeps zero rows zero.
  return features_from_rows(dirs.data(), n_classes, d);
}

std::vector<double> fourier_alignment(const FeatureSet& features, const FourierComponent& component) {
  const int64_t n = features.n_features, D = features.dim, r = component.rank;
  std::vector<double> out(static_cast<size_t>(n), 0.0);
  if (r == 0) return out;
  if (static_cast<int64_t>(component.basis.size()) != r * D) {
    throw Error("Fourier alignment: the subspace has dimension " +
                std::to_string(component.basis.size() / static_cast<size_t>(r)) + ", the features " +
                std::to_string(D));
  }
  std::vector<double> rows(features.rows.begin(), features.rows.end());
  std::vector<double> proj(static_cast<size_t>(n * r));  // [n, r]: <f_i, u_k>
  gemm<double>(false, true, n, r, D, 1.0, rows.data(), D, component.basis.data(), D, 0.0, proj.data(), r);
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t k = 0; k < r; ++k)
      s += proj[static_cast<size_t>(i * r + k)] * proj[static_cast<size_t>(i * r + k)];
    out[static_cast<size_t>(i)] = std::sqrt(s);
  }
  return out;
}

std::string_view feature_label_name(FeatureLabel label) {
  switch (label) {
    case FeatureLabel::Centroid:
      return "centroid";
    case FeatureLabel::Fourier:
      return "fourier";
    case FeatureLabel::Other:
      return "other";
  }
  return "unknown";
}

std::vector<int64_t> FeatureLabels::counts() const {
  std::vector<int64_t> n(3, 0);
  for (const FeatureLabel l : label) ++n[static_cast<size_t>(l)];
  return n;
}

std::vector<int64_t> FeatureLabels::groups() const {
  std::vector<int64_t> g;
  g.reserve(label.size());
  for (const FeatureLabel l : label) g.push_back(static_cast<int64_t>(l));
  return g;
}

FeatureLabels label_features(const FeatureSet& decoder, const FeatureSet& centroids,
                             const FourierComponent& fourier, const FeatureLabelOptions& options) {
  const int64_t n = decoder.n_features, p = centroids.n_features;
  if (centroids.dim != decoder.dim) {
    throw Error("feature labels: centroid directions have dimension " + std::to_string(centroids.dim) +
                ", the features " + std::to_string(decoder.dim));
  }
  FeatureLabels out;
  out.fourier_alignment = fourier_alignment(decoder, fourier);
  out.centroid_cos.assign(static_cast<size_t>(n), 0.0);
  out.centroid_index.assign(static_cast<size_t>(n), p > 0 ? 0 : -1);
  if (n > 0 && p > 0) {
    std::vector<float> cos(static_cast<size_t>(n * p));
    abs_cosine_matrix(decoder, centroids, cos.data());
    for (int64_t i = 0; i < n; ++i) {
      const float* ci = cos.data() + i * p;
      int64_t best = 0;
      for (int64_t k = 1; k < p; ++k) {
        if (ci[k] > ci[best]) best = k;
      }
      out.centroid_cos[static_cast<size_t>(i)] = static_cast<double>(ci[best]);
      out.centroid_index[static_cast<size_t>(i)] = best;
    }
  }
  out.label.resize(static_cast<size_t>(n));
  for (size_t i = 0; i < out.label.size(); ++i) {
    if (out.centroid_cos[i] > options.centroid_threshold) {
      out.label[i] = FeatureLabel::Centroid;
    } else if (out.fourier_alignment[i] >= options.fourier_threshold) {
      out.label[i] = FeatureLabel::Fourier;
    } else {
      out.label[i] = FeatureLabel::Other;
    }
  }
  return out;
}

std::vector<GroupSummary> stability_by_group(const std::vector<double>& values,
                                             const std::vector<int64_t>& group, int64_t n_groups) {
  if (values.size() != group.size()) throw Error("stability by group: one group per value is needed");
  if (n_groups < 0) throw Error("stability by group: negative number of groups");
  std::vector<std::vector<double>> members(static_cast<size_t>(n_groups));
  for (size_t i = 0; i < values.size(); ++i) {
    const int64_t g = group[i];
    if (g < 0 || g >= n_groups) {
      throw Error("stability by group: value " + std::to_string(i) + " has group " + std::to_string(g) +
                  " outside [0, " + std::to_string(n_groups) + ")");
    }
    members[static_cast<size_t>(g)].push_back(values[i]);
  }
  std::vector<GroupSummary> out;
  out.reserve(members.size());
  for (int64_t g = 0; g < n_groups; ++g) {
    std::vector<double>& v = members[static_cast<size_t>(g)];
    GroupSummary s;
    s.group = g;
    s.count = static_cast<int64_t>(v.size());
    if (v.empty()) {
      s.mean = s.median = kNaN;
    } else {
      double sum = 0;
      for (const double x : v) sum += x;  // index order
      s.mean = sum / static_cast<double>(v.size());
      std::sort(v.begin(), v.end());
      const size_t m = v.size() / 2;
      s.median = v.size() % 2 == 1 ? v[m] : 0.5 * (v[m - 1] + v[m]);
    }
    out.push_back(s);
  }
  return out;
}

std::vector<int64_t> frequency_bins(const std::vector<double>& firing_frequency, int64_t n_bins) {
  if (n_bins < 1) throw Error("frequency bins: need at least one bin");
  const auto n = static_cast<int64_t>(firing_frequency.size());
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) {
    return firing_frequency[static_cast<size_t>(i)] < firing_frequency[static_cast<size_t>(j)];
  });
  std::vector<int64_t> bin(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) bin[static_cast<size_t>(order[static_cast<size_t>(r)])] = r * n_bins / n;
  return bin;
}

std::vector<GroupSummary> stability_by_frequency_bin(const std::vector<double>& stability,
                                                     const std::vector<double>& firing_frequency,
                                                     int64_t n_bins) {
  if (stability.size() != firing_frequency.size()) {
    throw Error("stability by firing frequency: one frequency per latent is needed");
  }
  return stability_by_group(stability, frequency_bins(firing_frequency, n_bins), n_bins);
}

double duplicate_fraction(const FeatureSet& features, double threshold) {
  if (features.n_features == 0) return 0.0;
  const std::vector<float> nn = nearest_neighbour_abs_cos(features);
  int64_t dup = 0;
  for (const float v : nn) dup += static_cast<double>(v) > threshold ? 1 : 0;
  return static_cast<double>(dup) / static_cast<double>(features.n_features);
}

std::vector<int64_t> deduplicate_features(const FeatureSet& features, double threshold) {
  const int64_t n = features.n_features, D = features.dim;
  std::vector<int64_t> kept;
  if (n == 0) return kept;
  const int64_t block = std::min(n, kNearestNeighbourBlock);
  std::vector<float> cos(static_cast<size_t>(block * n));
  std::vector<uint8_t> is_kept(static_cast<size_t>(n), 0);
  for (int64_t i0 = 0; i0 < n; i0 += block) {
    const int64_t rows = std::min(block, n - i0);
    const int64_t cols = i0 + rows;  // only earlier features can have been kept
    gemm<float>(false, true, rows, cols, D, 1.0f, features.rows.data() + i0 * D, D, features.rows.data(), D,
                0.0f, cos.data(), cols);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      const float* c = cos.data() + r * cols;
      bool keep = true;
      for (int64_t j = 0; j < i && keep; ++j) {
        if (is_kept[static_cast<size_t>(j)] != 0 && static_cast<double>(std::fabs(c[j])) > threshold)
          keep = false;
      }
      if (keep) {
        is_kept[static_cast<size_t>(i)] = 1;
        kept.push_back(i);
      }
    }
  }
  return kept;
}

FeatureSet select_features(const FeatureSet& features, const std::vector<int64_t>& indices) {
  FeatureSet out;
  out.dim = features.dim;
  out.n_features = static_cast<int64_t>(indices.size());
  out.rows.reserve(indices.size() * static_cast<size_t>(features.dim));
  for (const int64_t i : indices) {
    if (i < 0 || i >= features.n_features) {
      throw Error("select features: index " + std::to_string(i) + " outside [0, " +
                  std::to_string(features.n_features) + ")");
    }
    const auto first = features.rows.begin() + i * features.dim;
    out.rows.insert(out.rows.end(), first, first + features.dim);
  }
  return out;
}

}  // namespace husai
