#pragma once

// Reading activations (`husai extract`, `husai synth`, or anyone's): the rows, checked finite, and where they
// came from. `path` is one file, a folder, or a glob (`acts/*.npy`); a folder or glob means its shards in
// name order, their rows concatenated. A shard is a safetensors file (tensor `key`) or a NumPy .npy file (C
// order, 2-D), of float32, float16, bfloat16 (safetensors only) or float64; computation is in float32. Shards
// must agree on d_in and dtype. Rows are held in memory (streaming larger-than-RAM files is not done yet).

#include <map>
#include <string>
#include <vector>

namespace husai {

struct ActivationFile {
  std::string path;
  std::string key;
  std::vector<float> x;  // [n_rows, d_in] row-major
  int64_t n_rows = 0, d_in = 0;
  std::string sha256;  // of the file; of several shards, the sha256 of their sha256s one per line, in order
  std::vector<std::string> shards;     // the files read, in order (one for a single file)
  std::string dtype = "F32";           // as stored (safetensors spelling)
  std::string hook_name = "unknown";   // from the metadata, when present
  std::string model_name = "unknown";  // the transformer's path, or "synthetic"
  std::map<std::string, std::string> metadata;
};

// Errors (naming the file) for a missing key (listing the available ones), a tensor that is not 2-D
// floats, fewer than 2 rows in all, a truncated file, shards that disagree on d_in or dtype, a folder or glob
// with no shard, and NaN/Inf values (naming the shard, its row and column, 0-based, and the row overall).
ActivationFile load_activation_file(const std::string& path, const std::string& key);

// A transcoder's target file pairs row for row with its activation file: throws husai::Error naming the
// target when the row counts differ.
void check_paired_rows(const ActivationFile& acts, const ActivationFile& target);

// The shard files `path` names: itself when it is a file; a folder's *.safetensors and *.npy files; a glob's
// matches; each sorted by name. Throws husai::Error when there are none.
std::vector<std::string> activation_shards(const std::string& path);

}  // namespace husai
