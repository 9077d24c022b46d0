#include "husai/io/npy.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>

#include "husai/core/error.hpp"

namespace husai {
namespace {

// The value of `key` in the header's Python dict literal, e.g. 'descr': '<f4' -> "'<f4'".
std::string dict_value(std::string_view header, const std::string& key, const std::string& path) {
  const std::string quoted = "'" + key + "'";
  const size_t k = header.find(quoted);
  if (k == std::string_view::npos) throw Error("npy header has no '" + key + "'").file(path);
  size_t v = header.find(':', k + quoted.size());
  if (v == std::string_view::npos) throw Error("npy header: no value for '" + key + "'").file(path);
  ++v;
  while (v < header.size() && header[v] == ' ') ++v;
  size_t end = v;
  if (v < header.size() && header[v] == '(') {
    end = header.find(')', v);
    if (end == std::string_view::npos) throw Error("npy header: unterminated shape").file(path);
    ++end;
  } else if (v < header.size() && header[v] == '\'') {
    end = header.find('\'', v + 1);
    if (end == std::string_view::npos) throw Error("npy header: unterminated string").file(path);
    ++end;
  } else {
    while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
  }
  return std::string(header.substr(v, end - v));
}

}  // namespace

NpyHeader read_npy_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(std::string("cannot open file: ") + std::strerror(errno)).file(path);
  char magic[8] = {};
  in.read(magic, 8);
  if (!in || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw Error("not a .npy file (bad magic)").file(path);
  const int major = static_cast<unsigned char>(magic[6]);
  uint32_t header_len = 0;
  if (major == 1) {
    unsigned char b[2] = {};
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = static_cast<uint32_t>(b[0]) | (static_cast<uint32_t>(b[1]) << 8);
  } else if (major == 2 || major == 3) {
    unsigned char b[4] = {};
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = static_cast<uint32_t>(b[0]) | (static_cast<uint32_t>(b[1]) << 8) |
                 (static_cast<uint32_t>(b[2]) << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    throw Error("unsupported .npy format version " + std::to_string(major)).file(path);
  }
  if (!in || header_len > 1'000'000) throw Error("corrupt .npy header length").file(path);
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  if (!in) throw Error("truncated .npy header").file(path);

  const std::string descr = dict_value(header, "descr", path);
  NpyHeader t;
  if (descr == "'<f4'") {
    t.dtype = DType::F32;
  } else if (descr == "'<f2'") {
    t.dtype = DType::F16;
  } else if (descr == "'<f8'") {
    t.dtype = DType::F64;
  } else {
    throw Error("dtype " + descr + " is not supported (float16, float32 or float64, little-endian)")
        .file(path);
  }
  if (dict_value(header, "fortran_order", path) != "False")
    throw Error("Fortran-order arrays are not supported: save with np.ascontiguousarray").file(path);
  const std::string shape = dict_value(header, "shape", path);  // "(n, d)" or "(n,)"
  std::string_view body(shape);
  body.remove_prefix(1);
  body.remove_suffix(1);
  while (!body.empty()) {
    while (!body.empty() && (body.front() == ' ' || body.front() == ',')) body.remove_prefix(1);
    if (body.empty()) break;
    size_t n = 0;
    int64_t dim = 0;
    while (n < body.size() && body[n] >= '0' && body[n] <= '9') {
      dim = dim * 10 + (body[n] - '0');
      if (dim > (int64_t{1} << 48)) throw Error("npy shape is too large").file(path);
      ++n;
    }
    if (n == 0) throw Error("npy header: bad shape " + shape).file(path);
    t.shape.push_back(dim);
    body.remove_prefix(n);
  }
  t.data_offset = static_cast<uint64_t>(in.tellg());
  const auto bytes = static_cast<uint64_t>(shape_numel(t.shape)) * dtype_size(t.dtype);
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) throw Error("cannot read the file size: " + ec.message()).file(path);
  const uint64_t got = size - std::min(size, t.data_offset);
  if (got < bytes) {
    throw Error("truncated: the header promises " + std::to_string(bytes) + " bytes of data, the file has " +
                std::to_string(got))
        .file(path);
  }
  return t;
}

TensorData read_npy(const std::string& path) {
  const NpyHeader h = read_npy_header(path);
  TensorData t;
  t.dtype = h.dtype;
  t.shape = h.shape;
  const auto bytes = static_cast<size_t>(shape_numel(t.shape)) * dtype_size(t.dtype);
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(h.data_offset));
  t.bytes.resize(bytes);
  in.read(reinterpret_cast<char*>(t.bytes.data()), static_cast<std::streamsize>(bytes));
  if (static_cast<size_t>(in.gcount()) != bytes) throw Error("cannot read the data").file(path);
  return t;
}

}  // namespace husai
