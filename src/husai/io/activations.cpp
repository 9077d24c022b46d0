#include "husai/io/activations.hpp"

#include <fcntl.h>
#include <glob.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "husai/core/error.hpp"
#include "husai/io/npy.hpp"
#include "husai/io/sha256.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

bool is_shard_name(const fs::path& p) {
  return p.extension() == ".safetensors" || p.extension() == ".npy";
}

// One shard's header, checked to describe a 2-D float tensor.
struct ShardHeader {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t offset = 0;
};

ShardHeader read_shard_header(const std::string& path, const std::string& key, bool single,
                              std::map<std::string, std::string>* meta) {
  ShardHeader t;
  if (fs::path(path).extension() == ".npy") {
    NpyHeader h = read_npy_header(path);
    t = {h.dtype, std::move(h.shape), h.data_offset};
  } else {
    SafetensorsHeader h = read_safetensors_header(path);
    const auto it = h.tensors.find(key);
    if (it == h.tensors.end()) {
      std::string names;
      for (const auto& [name, e] : h.tensors) names += (names.empty() ? "" : ", ") + name;
      throw Error("tensor '" + key + "' not found; available tensors: " + (names.empty() ? "(none)" : names))
          .file(path);
    }
    t = {it->second.dtype, it->second.shape, it->second.offset};
    if (meta != nullptr) *meta = h.metadata;
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

// pread of exactly `size` bytes at `offset`.
void read_exact(int fd, const std::string& path, uint64_t offset, size_t size, uint8_t* out) {
  size_t done = 0;
  while (done < size) {
    const ssize_t got = ::pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      throw Error("cannot read " + std::to_string(size) + " bytes at offset " + std::to_string(offset) +
                  " (truncated while open?)")
          .file(path);
    done += static_cast<size_t>(got);
  }
}

struct Fd {
  int fd;
  explicit Fd(const std::string& path) : fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd < 0) throw Error(std::string("cannot open file: ") + std::strerror(errno)).file(path);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { ::close(fd); }
};

// ActivationInfo::sha256 from the shards' hashes.
std::string combined_sha256(const std::vector<std::string>& shard_sha256) {
  if (shard_sha256.size() == 1) return shard_sha256.front();
  std::string lines;
  for (const std::string& sha : shard_sha256) lines += sha + "\n";
  return sha256_hex(lines);
}

}  // namespace

void add_activation_inputs(Manifest& manifest, const ActivationInfo& acts) {
  const bool hashed = acts.shard_sha256.size() == acts.shards.size();
  for (size_t i = 0; i < acts.shards.size(); ++i) {
    if (hashed) {
      manifest.add_input(acts.shards[i], acts.shard_sha256[i]);
    } else {
      manifest.add_input(acts.shards[i]);
    }
  }
}

void check_paired_rows(const ActivationInfo& acts, const ActivationInfo& target) {
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

ActivationSource ActivationSource::open(const std::string& path, const std::string& key) {
  ActivationSource src;
  ActivationInfo& a = src.info_;
  a.path = path;
  a.key = key;
  a.shards = activation_shards(path);
  for (size_t s = 0; s < a.shards.size(); ++s) {
    const std::string& shard = a.shards[s];
    std::map<std::string, std::string> meta;
    const ShardHeader t = read_shard_header(shard, key, a.shards.size() == 1, s == 0 ? &a.metadata : &meta);
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
    src.shards_.push_back(Shard{shard, t.dtype, t.offset, t.shape[0], a.n_rows});
    a.n_rows += t.shape[0];
  }
  if (a.n_rows < 2) throw Error("the activations need at least 2 rows").file(path);
  if (auto it = a.metadata.find("hook_name"); it != a.metadata.end()) a.hook_name = it->second;
  if (auto it = a.metadata.find("model_path"); it != a.metadata.end()) a.model_name = it->second;
  if (auto it = a.metadata.find("producer"); it != a.metadata.end() && it->second == "husai synth") {
    a.model_name = "synthetic";
  }
  return src;
}

void ActivationSource::check_finite(const Shard& s, int64_t shard_row, const float* rows,
                                    int64_t count) const {
  const int64_t D = info_.d_in;
  for (int64_t i = 0; i < count * D; ++i) {
    if (std::isfinite(rows[i])) continue;
    const int64_t r = shard_row + i / D;
    std::string where = "activation row " + std::to_string(r) + " (0-based), column " + std::to_string(i % D);
    if (shards_.size() > 1) where += " (row " + std::to_string(s.first_row + r) + " of all shards)";
    throw Error(where + " of '" + info_.key + "' is " + (std::isnan(rows[i]) ? "NaN" : "infinite"))
        .file(s.path);
  }
}

void ActivationSource::read_rows(int64_t first, int64_t count, float* out) const {
  if (first < 0 || count < 0 || first + count > info_.n_rows) {
    throw Error("rows [" + std::to_string(first) + ", " + std::to_string(first + count) +
                ") are outside the " + std::to_string(info_.n_rows) + " rows")
        .file(info_.path);
  }
  const int64_t D = info_.d_in;
  std::vector<uint8_t> raw;
  for (const Shard& s : shards_) {
    const int64_t r0 = std::max(first, s.first_row);
    const int64_t r1 = std::min(first + count, s.first_row + s.n_rows);
    if (r0 >= r1) continue;
    const size_t elem = dtype_size(s.dtype);
    const auto n = static_cast<size_t>((r1 - r0) * D);
    float* dst = out + (r0 - first) * D;
    const uint64_t at = s.offset + static_cast<uint64_t>((r0 - s.first_row) * D) * elem;
    const Fd fd(s.path);
    if (s.dtype == DType::F32) {
      read_exact(fd.fd, s.path, at, n * elem, reinterpret_cast<uint8_t*>(dst));
    } else {
      raw.resize(n * elem);
      read_exact(fd.fd, s.path, at, raw.size(), raw.data());
      convert_to_f32(s.dtype, raw.data(), n, dst);
    }
    check_finite(s, r0 - s.first_row, dst, r1 - r0);
  }
}

void ActivationSource::verify() {
  constexpr size_t kChunkBytes = size_t{8} << 20;
  const int64_t D = info_.d_in;
  info_.shard_sha256.clear();
  std::vector<uint8_t> raw;
  std::vector<float> rows;
  for (const Shard& s : shards_) {
    const Fd fd(s.path);
    std::error_code ec;
    const uint64_t size = fs::file_size(s.path, ec);
    if (ec) throw Error("cannot read the file size: " + ec.message()).file(s.path);
    Sha256 h;
    const auto hash_range = [&](uint64_t begin, uint64_t end) {
      for (uint64_t at = begin; at < end; at += kChunkBytes) {
        raw.resize(static_cast<size_t>(std::min<uint64_t>(kChunkBytes, end - at)));
        read_exact(fd.fd, s.path, at, raw.size(), raw.data());
        h.update(raw.data(), raw.size());
      }
    };
    hash_range(0, s.offset);
    const size_t row_bytes = static_cast<size_t>(D) * dtype_size(s.dtype);
    const int64_t chunk_rows = std::max<int64_t>(1, static_cast<int64_t>(kChunkBytes / row_bytes));
    for (int64_t r = 0; r < s.n_rows; r += chunk_rows) {
      const int64_t n = std::min(chunk_rows, s.n_rows - r);
      raw.resize(static_cast<size_t>(n) * row_bytes);
      read_exact(fd.fd, s.path, s.offset + static_cast<uint64_t>(r) * row_bytes, raw.size(), raw.data());
      h.update(raw.data(), raw.size());
      rows.resize(static_cast<size_t>(n * D));
      convert_to_f32(s.dtype, raw.data(), rows.size(), rows.data());
      check_finite(s, r, rows.data(), n);
    }
    hash_range(s.offset + static_cast<uint64_t>(s.n_rows) * row_bytes, size);
    info_.shard_sha256.push_back(h.hex_digest());
  }
  info_.sha256 = combined_sha256(info_.shard_sha256);
}

ActivationFile load_activation_file(const std::string& path, const std::string& key) {
  const ActivationSource src = ActivationSource::open(path, key);
  ActivationFile a;
  static_cast<ActivationInfo&>(a) = src.info();
  a.x.resize(static_cast<size_t>(a.n_rows * a.d_in));
  src.read_rows(0, a.n_rows, a.x.data());
  for (const std::string& shard : a.shards) a.shard_sha256.push_back(sha256_file_hex(shard));
  a.sha256 = combined_sha256(a.shard_sha256);
  return a;
}

}  // namespace husai
