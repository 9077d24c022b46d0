#pragma once

// Reading an activation file (`husai extract`, `husai synth`, or anyone's safetensors with a 2-D float
// tensor): the rows, checked finite, and where they came from.

#include <map>
#include <string>
#include <vector>

namespace husai {

struct ActivationFile {
  std::string path;
  std::string key;
  std::vector<float> x;  // [n_rows, d_in] row-major
  int64_t n_rows = 0, d_in = 0;
  std::string sha256;
  std::string hook_name = "unknown";   // from the metadata, when present
  std::string model_name = "unknown";  // the transformer's path, or "synthetic"
  std::map<std::string, std::string> metadata;
};

// Errors (naming the file) for a missing key (listing the available ones), a tensor that is not 2-D
// floats, fewer than 2 rows, and NaN/Inf values (naming the row and column, 0-based).
ActivationFile load_activation_file(const std::string& path, const std::string& key);

}  // namespace husai
