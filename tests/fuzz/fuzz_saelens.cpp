// Fuzz target: the SAE folder loader (load_sae minus the file reads): cfg.json text plus the weights file,
// for SAELens (saelens_from_parts) and sparsify (sparsify_from_parts) folders.
//
// Input: cfg.json text, optionally followed by a NUL byte and the bytes of the weights safetensors file.
// Without the NUL part the harness supplies weights that fit the cfg (every tensor either layout could ask
// for, sized from the cfg's d_in / d_sae when they are small), so mutations of cfg.json reach the checks
// after the shape checks. Contract: a husai::Error naming the folder's file, or a model that validates and
// can encode and decode a row.

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_check.hpp"
#include "husai/core/error.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/sae/saelens_io.hpp"

namespace {

constexpr int64_t kMaxSynthDim = 16;

int64_t small_dim(const nlohmann::json& cfg, const char* key, int64_t fallback) {
  if (!cfg.is_object() || !cfg.contains(key) || !cfg.at(key).is_number_integer()) return fallback;
  const auto v = cfg.at(key).get<int64_t>();
  return v >= 1 && v <= kMaxSynthDim ? v : fallback;
}

std::vector<float> ramp(int64_t n, float scale) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = scale * static_cast<float>((i * 7) % 11 - 5);
  return v;
}

husai::SafetensorsFile fitting_weights(std::string_view cfg_text) {
  const nlohmann::json cfg = nlohmann::json::parse(cfg_text, nullptr, /*allow_exceptions=*/false);
  const int64_t d_in = small_dim(cfg, "d_in", 4);
  const int64_t d_sae = small_dim(cfg, "d_sae", 8);
  husai::SafetensorsFile f;
  auto put = [&f](const std::string& name, std::vector<int64_t> shape, float scale) {
    const std::vector<float> v = ramp(husai::shape_numel(shape), scale);
    f.put(name, husai::TensorData::f32(std::move(shape), v.data()));
  };
  put("W_enc", {d_in, d_sae}, 0.1f);
  put("W_dec", {d_sae, d_in}, 0.1f);
  put("encoder.weight", {d_sae, d_in}, 0.1f);
  for (const char* name :
       {"b_enc", "encoder.bias", "threshold", "log_threshold", "b_gate", "b_mag", "r_mag"}) {
    put(name, {d_sae}, 0.01f);
  }
  put("b_dec", {d_in}, 0.01f);
  return f;
}

void exercise(const husai::SaeModel& m) {
  m.validate("fuzz");
  const std::vector<float> x = ramp(2 * m.d_in, 0.3f);
  const std::vector<float> f = m.encode(x.data(), 2);
  HUSAI_FUZZ_CHECK(static_cast<int64_t>(f.size()) == 2 * m.d_sae);
  if (m.architecture == "topk") {
    for (int r = 0; r < 2; ++r) {
      int64_t active = 0;
      for (int64_t i = 0; i < m.d_sae; ++i) active += f[static_cast<size_t>(r * m.d_sae + i)] != 0.0f;
      HUSAI_FUZZ_CHECK(active <= m.k);
    }
  }
  HUSAI_FUZZ_CHECK(static_cast<int64_t>(m.decode(f.data(), 2).size()) == 2 * m.d_in);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const size_t nul = bytes.find('\0');
  const std::string_view cfg_text = bytes.substr(0, nul);
  husai::SafetensorsFile weights;
  if (nul == std::string_view::npos) {
    // Parsed back from bytes so that, as with a loaded file, errors can name where the weights came from.
    weights = husai::SafetensorsFile::parse(fitting_weights(cfg_text).serialize(), "sae/weights.safetensors");
  } else {
    try {
      weights = husai::SafetensorsFile::parse(bytes.substr(nul + 1), "sae/weights.safetensors");
    } catch (const husai::Error&) {
      return 0;  // the safetensors reader has its own target
    }
  }
  for (int layout = 0; layout < 2; ++layout) {
    try {
      exercise(layout == 0 ? husai::saelens_from_parts("sae", cfg_text, weights)
                           : husai::sparsify_from_parts("sae", cfg_text, weights));
    } catch (const husai::Error& e) {
      HUSAI_FUZZ_CHECK(e.file() && e.file()->rfind("sae", 0) == 0);  // names the folder or a file in it
    }
  }
  return 0;
}
