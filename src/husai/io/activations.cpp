#include "husai/io/activations.hpp"

#include <cmath>

#include "husai/core/error.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/io/sha256.hpp"

namespace husai {

ActivationFile load_activation_file(const std::string& path, const std::string& key) {
  if (path.empty()) throw Error("--activations FILE is required");
  const SafetensorsFile f = SafetensorsFile::load(path);
  const TensorData& t = f.get(key);  // a missing key names the available ones
  if (t.shape.size() != 2) {
    throw Error("tensor '" + key + "' must be 2-D [rows, d_in], it has " + std::to_string(t.shape.size()) +
                " dimension(s)")
        .file(path);
  }
  if (dtype_is_integer(t.dtype))
    throw Error("tensor '" + key + "' holds integers, not activations").file(path);
  ActivationFile a;
  a.path = path;
  a.key = key;
  a.metadata = f.metadata;
  a.n_rows = t.shape[0];
  a.d_in = t.shape[1];
  if (a.n_rows < 2 || a.d_in < 1)
    throw Error("tensor '" + key + "' needs at least 2 rows and 1 column").file(path);
  a.x = t.to_f32();
  for (int64_t r = 0; r < a.n_rows; ++r) {
    for (int64_t d = 0; d < a.d_in; ++d) {
      const float v = a.x[static_cast<size_t>(r * a.d_in + d)];
      if (!std::isfinite(v)) {
        throw Error("activation row " + std::to_string(r) + " (0-based), column " + std::to_string(d) +
                    " of '" + key + "' is " + (std::isnan(v) ? "NaN" : "infinite"))
            .file(path);
      }
    }
  }
  a.sha256 = sha256_file_hex(path);
  if (auto it = f.metadata.find("hook_name"); it != f.metadata.end()) a.hook_name = it->second;
  if (auto it = f.metadata.find("model_path"); it != f.metadata.end()) a.model_name = it->second;
  if (auto it = f.metadata.find("producer"); it != f.metadata.end() && it->second == "husai synth") {
    a.model_name = "synthetic";
  }
  return a;
}

}  // namespace husai
