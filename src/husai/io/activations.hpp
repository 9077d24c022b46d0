#pragma once

// Reading activations (`husai extract`, `husai synth`, or anyone's): the rows, checked finite, and where they
// came from. `path` is one file, a folder, or a glob (`acts/*.npy`); a folder or glob means its shards in
// name order, their rows concatenated. A shard is a safetensors file (tensor `key`) or a NumPy .npy file (C
// order, 2-D), of float32, float16, bfloat16 (safetensors only) or float64; computation is in float32. Shards
// must agree on d_in and dtype. load_activation_file holds every row in memory; ActivationSource reads row
// ranges on demand, for files larger than memory.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "husai/io/manifest.hpp"
#include "husai/io/safetensors.hpp"

namespace husai {

// What is known about activation rows without holding them.
struct ActivationInfo {
  std::string path;
  std::string key;
  int64_t n_rows = 0, d_in = 0;
  std::string sha256;  // of the file; of several shards, the sha256 of their sha256s one per line, in order
  std::vector<std::string> shards;        // the files read, in order (one for a single file)
  std::vector<std::string> shard_sha256;  // the sha256 of each, once hashed (for manifests)
  std::string dtype = "F32";              // as stored (safetensors spelling)
  std::string hook_name = "unknown";      // from the metadata, when present
  std::string model_name = "unknown";     // the transformer's path, or "synthetic"
  std::map<std::string, std::string> metadata;
};

struct ActivationFile : ActivationInfo {
  std::vector<float> x;  // [n_rows, d_in] row-major
};

// Activation rows read on demand: open() reads the headers only, read_rows() a range of rows (converted to
// float32 and checked finite), so memory never holds more than the rows asked for. Rows are numbered across
// shards in name order, as load_activation_file concatenates them.
class ActivationSource {
 public:
  // Every check of load_activation_file except the values (read_rows and verify check those); sha256 is
  // left empty until verify().
  static ActivationSource open(const std::string& path, const std::string& key);

  const ActivationInfo& info() const { return info_; }
  int64_t n_rows() const { return info_.n_rows; }
  int64_t d_in() const { return info_.d_in; }

  // Rows [first, first + count) into out [count, d_in]. Throws husai::Error naming the shard, its row and
  // column (and the row overall) for a NaN or infinite value, and for a range outside the rows.
  void read_rows(int64_t first, int64_t count, float* out) const;

  // One pass over every file in bounded memory: sets info().sha256 and shard_sha256 (the same values as
  // load_activation_file's) and checks every value is finite (the same error as read_rows).
  void verify();

 private:
  struct Shard {
    std::string path;
    DType dtype = DType::F32;
    uint64_t offset = 0;  // the first byte of the rows in the file
    int64_t n_rows = 0, first_row = 0;
  };
  void check_finite(const Shard& s, int64_t shard_row, const float* rows, int64_t count) const;

  ActivationInfo info_;
  std::vector<Shard> shards_;
};

// Errors (naming the file) for a missing key (listing the available ones), a tensor that is not 2-D
// floats, fewer than 2 rows in all, a truncated file, shards that disagree on d_in or dtype, a folder or glob
// with no shard, and NaN/Inf values (naming the shard, its row and column, 0-based, and the row overall).
ActivationFile load_activation_file(const std::string& path, const std::string& key);

// Records every shard as an input of `manifest`, with the hashes already computed when there are (so a large
// file is not read again), else hashing them now.
void add_activation_inputs(Manifest& manifest, const ActivationInfo& acts);

// A transcoder's target file pairs row for row with its activation file: throws husai::Error naming the
// target when the row counts differ.
void check_paired_rows(const ActivationInfo& acts, const ActivationInfo& target);

// The shard files `path` names: itself when it is a file; a folder's *.safetensors and *.npy files; a glob's
// matches; each sorted by name. Throws husai::Error when there are none.
std::vector<std::string> activation_shards(const std::string& path);

}  // namespace husai
