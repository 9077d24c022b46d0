// Computes husai's geometry-matched null dictionaries and the within-dictionary metrics for the NumPy parity
// test (nulls_parity.py), which rebuilds each of them from the same seed (it reimplements Philox).
// Usage: husai_nulls_dump IN.safetensors OUT.safetensors SEED
// IN: "x" [N, d] activations (F32), "c" [N] answer classes (I64, values 0 .. p-1, every class present) and
// dictionaries "w.NAME" [F, d] (F32). OUT, per dictionary NAME: "second_moment.NAME", "axis_reflection.NAME",
// "rotation.NAME" [F, d], "nn.NAME" [F] (nearest-neighbour |cos|), "kept.NAME" (deduplicate_features, I64)
// and "duplicate_fraction.NAME" [1] (F64); once: "haar" [d, d] (F64), "signs" [d] (I64), "centroids" [p, d].

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/metrics/feature_labels.hpp"
#include "husai/metrics/nulls.hpp"
#include "husai/metrics/stability.hpp"

int main(int argc, char** argv) {
  using namespace husai;
  if (argc != 4) {
    std::fprintf(stderr, "usage: husai_nulls_dump IN.safetensors OUT.safetensors SEED\n");
    return 1;
  }
  try {
    const SafetensorsFile in = SafetensorsFile::load(argv[1]);
    const uint64_t seed = std::stoull(argv[3]);
    const TensorData& xt = in.get("x");
    const int64_t N = xt.shape.at(0), d = xt.shape.at(1);
    const std::vector<float> x = xt.to_f32();
    const std::vector<int64_t> c = in.get("c").to_i64();
    const int64_t p = *std::max_element(c.begin(), c.end()) + 1;
    const CovarianceNull cov(x.data(), N, d);

    SafetensorsFile out;
    out.put("haar", TensorData::f64({d, d}, haar_orthogonal(d, seed).data()));
    const std::vector<int> signs = reflection_signs(d, seed);
    const std::vector<int64_t> signs64(signs.begin(), signs.end());
    out.put("signs", TensorData::i64({d}, signs64.data()));
    const FeatureSet centroids = answer_centroid_directions(x.data(), N, d, c, p);
    out.put("centroids", TensorData::f32({p, d}, centroids.rows.data()));

    for (const auto& [name, t] : in.tensors) {
      if (name.rfind("w.", 0) != 0) continue;
      const std::string tag = name.substr(2);
      const int64_t F = t.shape.at(0);
      if (t.shape.at(1) != d) throw Error("dictionary " + name + " has the wrong width");
      const std::vector<float> w = t.to_f32();
      out.put("second_moment." + tag,
              TensorData::f32({F, d}, second_moment_null_decoder(w.data(), F, d, seed).data()));
      out.put("axis_reflection." + tag, TensorData::f32({F, d}, cov.reflect(w.data(), F, seed).data()));
      out.put("rotation." + tag, TensorData::f32({F, d}, rotation_null_decoder(w.data(), F, d, seed).data()));
      const FeatureSet f = features_from_rows(w.data(), F, d);
      out.put("nn." + tag, TensorData::f32({F}, nearest_neighbour_abs_cos(f).data()));
      const std::vector<int64_t> kept = deduplicate_features(f);
      out.put("kept." + tag, TensorData::i64({static_cast<int64_t>(kept.size())}, kept.data()));
      const double frac = duplicate_fraction(f);
      out.put("duplicate_fraction." + tag, TensorData::f64({1}, &frac));
    }
    out.save(argv[2]);
  } catch (const Error& e) {
    std::fprintf(stderr, "husai_nulls_dump: %s\n", e.message().c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "husai_nulls_dump: %s\n", e.what());
    return 1;
  }
  return 0;
}
