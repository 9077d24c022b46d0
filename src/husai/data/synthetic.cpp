#include "husai/data/synthetic.hpp"

#include <algorithm>
#include <cmath>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"
#include "husai/core/threading.hpp"
#include "husai/io/safetensors.hpp"

namespace husai {

namespace {

// n_features random unit rows of width d_in from one Philox stream.
std::vector<float> unit_rows(const SynthSpec& spec, const char* stream) {
  const int64_t D = spec.d_in;
  std::vector<float> rows(static_cast<size_t>(spec.n_features * D));
  const Philox rng(spec.seed, stream_id(stream));
  for (int64_t j = 0; j < spec.n_features; ++j) {
    double n2 = 0;
    for (int64_t d = 0; d < D; ++d) {
      const double v = rng.normal(static_cast<uint64_t>(j * D + d));
      rows[static_cast<size_t>(j * D + d)] = static_cast<float>(v);
      n2 += v * v;
    }
    const double inv = 1.0 / std::sqrt(n2);
    for (int64_t d = 0; d < D; ++d) {
      float& v = rows[static_cast<size_t>(j * D + d)];
      v = static_cast<float>(static_cast<double>(v) * inv);
    }
  }
  return rows;
}

}  // namespace

SynthData make_synthetic(const SynthSpec& spec) {
  if (spec.d_in < 1 || spec.n_features < 1 || spec.rows < 1 || spec.active < 1) {
    throw Error("synth: --d-in, --n-features, --rows and --active must be >= 1");
  }
  if (spec.active > spec.n_features) {
    throw Error("synth: --active " + std::to_string(spec.active) + " exceeds --n-features " +
                std::to_string(spec.n_features));
  }
  const int64_t D = spec.d_in;
  SynthData out;
  out.dictionary = unit_rows(spec, "synth.dictionary");
  out.activations.assign(static_cast<size_t>(spec.rows * D), 0.0f);
  if (spec.transcoder) {
    out.target_dictionary = unit_rows(spec, "synth.target_dictionary");
    out.targets.assign(out.activations.size(), 0.0f);
  }
  const Philox pick(spec.seed, stream_id("synth.support"));
  const Philox mag(spec.seed, stream_id("synth.magnitude"));
  // Each row owns a disjoint counter range, so rows are independent of each other and of the thread count.
  constexpr uint64_t kDrawsPerRow = 1u << 20;
  parallel_chunks(spec.rows, 256, [&](int64_t r0, int64_t r1) {
    std::vector<int64_t> chosen;
    for (int64_t r = r0; r < r1; ++r) {
      chosen.clear();
      uint64_t draw = static_cast<uint64_t>(r) * kDrawsPerRow;
      while (static_cast<int64_t>(chosen.size()) < spec.active) {
        const auto j = static_cast<int64_t>(pick.below(draw++, static_cast<uint64_t>(spec.n_features)));
        if (std::find(chosen.begin(), chosen.end(), j) == chosen.end()) chosen.push_back(j);
      }
      float* row = out.activations.data() + r * D;
      for (size_t a = 0; a < chosen.size(); ++a) {
        const double c = 0.5 + mag.uniform_f64(static_cast<uint64_t>(r) * kDrawsPerRow + a);
        const float* dj = out.dictionary.data() + chosen[a] * D;
        for (int64_t d = 0; d < D; ++d) row[d] += static_cast<float>(c) * dj[d];
        if (spec.transcoder) {
          const float* ej = out.target_dictionary.data() + chosen[a] * D;
          float* yr = out.targets.data() + r * D;
          for (int64_t d = 0; d < D; ++d) yr[d] += static_cast<float>(c) * ej[d];
        }
      }
    }
  });
  return out;
}

void write_synthetic(const std::string& path, const SynthSpec& spec, const SynthData& data) {
  SafetensorsFile f;
  f.put("activations", TensorData::f32({spec.rows, spec.d_in}, data.activations.data()));
  f.put("dictionary", TensorData::f32({spec.n_features, spec.d_in}, data.dictionary.data()));
  if (spec.transcoder) {
    f.put("targets", TensorData::f32({spec.rows, spec.d_in}, data.targets.data()));
    f.put("target_dictionary", TensorData::f32({spec.n_features, spec.d_in}, data.target_dictionary.data()));
  }
  f.metadata = {{"producer", "husai synth"},
                {"hook_name", "synthetic"},
                {"d_in", std::to_string(spec.d_in)},
                {"n_features", std::to_string(spec.n_features)},
                {"active", std::to_string(spec.active)},
                {"rows", std::to_string(spec.rows)},
                {"seed", std::to_string(spec.seed)},
                {"magnitudes", "uniform(0.5, 1.5)"}};
  f.save(path);
}

}  // namespace husai
