#include "husai/io/activations.hpp"

#include <glob.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "husai/core/error.hpp"
#include "husai/io/npy.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/io/sha256.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

bool is_shard_name(const fs::path& p) {
  return p.extension() == ".safetensors" || p.extension() == ".npy";
}

// One shard's rows as stored, checked to be a 2-D float tensor.
TensorData read_shard(const std::string& path, const std::string& key, bool single,
                      std::map<std::string, std::string>* meta) {
  TensorData t;
  if (fs::path(path).extension() == ".npy") {
    t = read_npy(path);
  } else {
    SafetensorsFile f = SafetensorsFile::load(path);
    t = f.get(key);  // a missing key names the available ones
    if (meta != nullptr) *meta = f.metadata;
  }
  const std::string what =
      fs::path(path).extension() == ".npy" ? std::string("the array") : "tensor '" + key + "'";
  if (t.shape.size() != 2) {
    throw Error(what + " must be 2-D [rows, d_in], it has " + std::to_string(t.shape.size()) +
                " dimension(s)")
        .file(path);
  }
  if (dtype_is_integer(t.dtype)) throw Error(what + " holds integers, not activations").file(path);
  if (t.shape[0] < (single ? 2 : 1) || t.shape[1] < 1)
    throw Error(what + " needs at least " + (single ? "2 rows" : "1 row") + " and 1 column").file(path);
  return t;
}

}  // namespace

void check_paired_rows(const ActivationFile& acts, const ActivationFile& target) {
  if (target.n_rows != acts.n_rows) {
    throw Error("the target has " + std::to_string(target.n_rows) + " rows, the activations " + acts.path +
                " have " + std::to_string(acts.n_rows) + ": row r of one must be row r of the other")
        .file(target.path);
  }
}

std::vector<std::string> activation_shards(const std::string& path) {
  if (path.empty()) throw Error("--activations FILE is required");
  std::vector<std::string> out;
  if (fs::is_directory(path)) {
    for (const auto& e : fs::directory_iterator(path)) {
      if (e.is_regular_file() && is_shard_name(e.path())) out.push_back(e.path().string());
    }
    if (out.empty()) throw Error("the folder has no .safetensors or .npy shards").file(path);
  } else if (path.find_first_of("*?[") != std::string::npos) {
    glob_t g{};
    const int rc = ::glob(path.c_str(), 0, nullptr, &g);
    for (size_t i = 0; rc == 0 && i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
    if (out.empty()) throw Error("no file matches the pattern").file(path);
  } else {
    out.push_back(path);  // a missing file is reported by its reader
  }
  std::sort(out.begin(), out.end());
  return out;
}

ActivationFile load_activation_file(const std::string& path, const std::string& key) {
  ActivationFile a;
  a.path = path;
  a.key = key;
  a.shards = activation_shards(path);
  std::string sha_lines;
  for (size_t s = 0; s < a.shards.size(); ++s) {
    const std::string& shard = a.shards[s];
    std::map<std::string, std::string> meta;
    const TensorData t = read_shard(shard, key, a.shards.size() == 1, s == 0 ? &a.metadata : &meta);
    const std::string dtype(dtype_name(t.dtype));
    if (s == 0) {
      a.d_in = t.shape[1];
      a.dtype = dtype;
    } else if (t.shape[1] != a.d_in || dtype != a.dtype) {
      throw Error("shard has [" + std::to_string(t.shape[0]) + ", " + std::to_string(t.shape[1]) + "] " +
                  dtype + ", but " + a.shards[0] + " has d_in " + std::to_string(a.d_in) + " and " + a.dtype +
                  ": every shard must have the same d_in and dtype")
          .file(shard);
    }
    const std::vector<float> x = t.to_f32();
    for (int64_t r = 0; r < t.shape[0]; ++r) {
      for (int64_t d = 0; d < a.d_in; ++d) {
        const float v = x[static_cast<size_t>(r * a.d_in + d)];
        if (!std::isfinite(v)) {
          std::string where =
              "activation row " + std::to_string(r) + " (0-based), column " + std::to_string(d);
          if (a.shards.size() > 1) where += " (row " + std::to_string(a.n_rows + r) + " of all shards)";
          throw Error(where + " of '" + key + "' is " + (std::isnan(v) ? "NaN" : "infinite")).file(shard);
        }
      }
    }
    a.x.insert(a.x.end(), x.begin(), x.end());
    a.n_rows += t.shape[0];
    const std::string sha = sha256_file_hex(shard);
    sha_lines += sha + "\n";
    if (a.shards.size() == 1) a.sha256 = sha;
  }
  if (a.n_rows < 2) throw Error("the activations need at least 2 rows").file(path);
  if (a.shards.size() > 1) a.sha256 = sha256_hex(sha_lines);
  if (auto it = a.metadata.find("hook_name"); it != a.metadata.end()) a.hook_name = it->second;
  if (auto it = a.metadata.find("model_path"); it != a.metadata.end()) a.model_name = it->second;
  if (auto it = a.metadata.find("producer"); it != a.metadata.end() && it->second == "husai synth") {
    a.model_name = "synthetic";
  }
  return a;
}

}  // namespace husai
